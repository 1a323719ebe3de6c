//! What to push and how it lands: tags, all tags, digests, existing content, Docker media
//! types, progress lines, the report — checked from the registry's side and with skopeo.

mod common;

use common::{
    CountingProxy, ImageSpec, LayoutBuilder, TestRegistry, imagepush, report, simple_image,
};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn tagged_push_lands_byte_identical_and_is_reported() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (b, image) = simple_image(&layout, "v1", &[MIB, 300 * 1024, 10], 1);
    let report_path = dir.path().join("report.json");
    let target = format!("{}/team/app:v1", registry.host());
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--report",
        report_path.to_str().unwrap(),
        layout.to_str().unwrap(),
        &target,
    ]);
    run.ok();

    // The registry holds the layout's manifest bytes under the tag, and every blob.
    let (bytes, content_type, digest) = registry.manifest("team/app", "v1").await.expect("tag v1");
    assert_eq!(bytes, b.read_blob(&image.digest));
    assert_eq!(digest, image.digest);
    assert_eq!(content_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(registry.tags("team/app").await, ["v1"]);
    let blobs = b.blob_digests(&image);
    assert_eq!(blobs.len(), 4);
    for d in &blobs {
        assert_eq!(
            registry.blob("team/app", d).await.as_deref(),
            Some(b.read_blob(d).as_slice()),
            "{d}"
        );
    }
    // A third-party client reads the same manifest back.
    assert_eq!(registry.skopeo_inspect_raw("team/app:v1"), bytes);
    let inspected = registry.skopeo_inspect("team/app:v1");
    assert_eq!(inspected["Digest"], image.digest.as_str());

    // Docker-like progress and the final line.
    assert!(
        run.stdout
            .contains(&format!("The push refers to repository [{}/team/app]", registry.host())),
        "{}",
        run.stdout
    );
    for d in &blobs {
        let id = &d["sha256:".len().."sha256:".len() + 12];
        assert!(run.stdout.contains(&format!("{id}: Preparing")), "{}", run.stdout);
        assert!(run.stdout.contains(&format!("{id}: Pushed")), "{}", run.stdout);
    }
    assert!(
        run.stdout.contains(&format!("v1: digest: {} size: {}", image.digest, image.size)),
        "{}",
        run.stdout
    );

    // The report.
    let r = report(&report_path);
    assert_eq!(r["apiVersion"], "imagepush.dev/v1alpha1");
    assert_eq!(r["kind"], "PushReport");
    assert_eq!(r["target"], target.as_str());
    assert_eq!(r["digest"], image.digest.as_str());
    assert_eq!(r["size"], image.size);
    assert_eq!(r["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(r["tags"][0]["tag"], "v1");
    assert_eq!(r["tags"][0]["digest"], image.digest.as_str());
    assert!(r.get("manifestPushedInsteadOfIndex").is_none());
    let total: u64 = blobs.iter().map(|d| b.read_blob(d).len() as u64).sum();
    assert_eq!(r["totals"]["uploaded"], 4);
    assert_eq!(r["totals"]["mounted"], 0);
    assert_eq!(r["totals"]["existed"], 0);
    assert_eq!(r["totals"]["bytesUploaded"], total);
    assert_eq!(r["blobs"].as_array().unwrap().len(), 4);
    assert!(r["blobs"].as_array().unwrap().iter().all(|b| b["outcome"] == "uploaded"));
    assert!(r["durationMs"].is_u64());
    assert!(r.get("error").is_none());
}

#[tokio::test]
async fn pushing_again_skips_existing_blobs_and_manifests() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (_b, index, _images) = common::multi_platform(
        &layout,
        "v1",
        &[("linux", "amd64", None), ("linux", "arm64", None)],
        true,
        true,
        7,
    );
    // Make one layer big enough that re-sending it would show.
    let mut b = LayoutBuilder::new(&layout);
    let big = b.image(&ImageSpec::new(&[(99, 2 * MIB)], 99));
    b.tag(&index, "v1");
    b.tag(&big, "big");
    b.write();
    let target = format!("{}/team/app", proxy.host());
    let first_report = dir.path().join("first.json");
    imagepush(&[
        "push",
        "--plain-http",
        "--report",
        first_report.to_str().unwrap(),
        layout.to_str().unwrap(),
        &target,
    ])
    .ok();
    let first = report(&first_report);
    assert!(first["manifests"].as_array().unwrap().iter().any(|m| m["outcome"] == "pushed"));

    proxy.reset();
    let second_report = dir.path().join("second.json");
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--report",
        second_report.to_str().unwrap(),
        layout.to_str().unwrap(),
        &target,
    ]);
    run.ok();
    let second = report(&second_report);
    assert_eq!(second["totals"]["uploaded"], 0);
    assert_eq!(second["totals"]["existed"], first["totals"]["uploaded"]);
    assert_eq!(second["totals"]["bytesUploaded"], 0);
    // Child manifests (platform images and attestations) already there are not sent again.
    let manifests = second["manifests"].as_array().unwrap();
    assert!(!manifests.is_empty());
    assert!(manifests.iter().all(|m| m["outcome"] == "existed"), "{manifests:?}");
    assert!(run.stdout.contains("Layer already exists"), "{}", run.stdout);
    assert!(!run.stdout.contains(": Pushed"), "{}", run.stdout);
    // Only requests and the two tag manifests went to the registry, no blob bytes.
    assert!(proxy.bytes_to_server() < 64 * 1024, "sent {} bytes", proxy.bytes_to_server());
    assert_eq!(registry.tags("team/app").await, ["big", "v1"]);
}

#[tokio::test]
async fn chooses_the_layout_entry_for_a_tagged_target() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let mut b = LayoutBuilder::new(&layout);
    let one = b.image(&ImageSpec::new(&[(1, 1000)], 1));
    let two = b.image(&ImageSpec::new(&[(2, 1000)], 2));
    b.tag(&one, "one");
    b.tag(&two, "two");
    b.write();
    let l = layout.to_str().unwrap();
    let host = registry.host();

    // The target's tag names the entry.
    imagepush(&["push", "--plain-http", l, &format!("{host}/app:two")]).ok();
    assert_eq!(registry.manifest("app", "two").await.unwrap().2, two.digest);
    // --ref wins over the target's tag, by name and by digest.
    imagepush(&["push", "--plain-http", "--ref", "one", l, &format!("{host}/app:renamed")]).ok();
    assert_eq!(registry.manifest("app", "renamed").await.unwrap().2, one.digest);
    imagepush(&["push", "--plain-http", "--ref", &two.digest, l, &format!("{host}/app:bydigest")])
        .ok();
    assert_eq!(registry.manifest("app", "bydigest").await.unwrap().2, two.digest);
    // Several entries, none named like the target: a clear error listing the tags.
    let run = imagepush(&["push", "--plain-http", l, &format!("{host}/app:three")]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("\"three\"")
            && run.stderr.contains("one")
            && run.stderr.contains("two")
            && run.stderr.contains("--ref"),
        "{}",
        run.stderr
    );
    let run = imagepush(&["push", "--plain-http", "--ref", "nope", l, &format!("{host}/app:x")]);
    run.expect_code(3);
    assert!(run.stderr.contains("\"nope\""), "{}", run.stderr);
    assert!(registry.manifest("app", "three").await.is_none());

    // A layout with one entry: it is pushed under the target's tag whatever its name.
    let single = dir.path().join("single");
    let (_sb, simage) = simple_image(&single, "whatever", &[100], 3);
    imagepush(&["push", "--plain-http", single.to_str().unwrap(), &format!("{host}/app:only")])
        .ok();
    assert_eq!(registry.manifest("app", "only").await.unwrap().2, simage.digest);
}

/// What `ctr export` of two images writes: two full names with the same tag. Neither is
/// dropped or picked silently: the push is refused naming both entries, and `--ref` with a
/// full name chooses.
#[tokio::test]
async fn a_tag_that_stands_for_two_images_is_refused_until_a_full_name_chooses() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let mut b = LayoutBuilder::new(&layout);
    let app = b.image(&ImageSpec::new(&[(1, 1000)], 71));
    let other = b.image(&ImageSpec::new(&[(2, 1000)], 72));
    b.tag(&app, "docker.io/library/app:v1");
    b.tag(&other, "docker.io/library/other:v1");
    b.write();
    let l = layout.to_str().unwrap();
    let host = registry.host();
    for (target, reference) in [
        (format!("{host}/team/app"), None),
        (format!("{host}/team/app:v1"), None),
        (format!("{host}/team/app:latest"), Some("v1")),
    ] {
        let mut args = vec!["push", "--plain-http"];
        if let Some(r) = reference {
            args.extend(["--ref", r]);
        }
        args.extend([l, target.as_str()]);
        let run = imagepush(&args);
        run.expect_code(2);
        for (name, d) in
            [("docker.io/library/app:v1", &app), ("docker.io/library/other:v1", &other)]
        {
            assert!(
                run.stderr.contains(&format!("{name} ({})", d.digest)),
                "{target}: {}",
                run.stderr
            );
        }
        assert!(run.stderr.contains("--ref"), "{}", run.stderr);
    }
    assert!(registry.tags("team/app").await.is_empty(), "nothing is pushed while it is ambiguous");
    imagepush(&[
        "push",
        "--plain-http",
        "--ref",
        "docker.io/library/other:v1",
        l,
        &format!("{host}/team/app:v1"),
    ])
    .ok();
    assert_eq!(registry.manifest("team/app", "v1").await.unwrap().2, other.digest);

    // An entry named just `v1` does not hide a full name whose tag is `v1` too.
    let mixed = dir.path().join("mixed");
    let mut b = LayoutBuilder::new(&mixed);
    let plain = b.image(&ImageSpec::new(&[(3, 1000)], 73));
    let full = b.image(&ImageSpec::new(&[(4, 1000)], 74));
    b.tag(&plain, "v1");
    b.tag(&full, "docker.io/x/app:v1");
    b.write();
    let m = mixed.to_str().unwrap();
    let run = imagepush(&["push", "--plain-http", m, &format!("{host}/team/mixed:v1")]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&plain.digest) && run.stderr.contains(&full.digest),
        "{}",
        run.stderr
    );
    imagepush(&[
        "push",
        "--plain-http",
        "--ref",
        "docker.io/x/app:v1",
        m,
        &format!("{host}/team/mixed:v1"),
    ])
    .ok();
    assert_eq!(registry.manifest("team/mixed", "v1").await.unwrap().2, full.digest);
}

#[tokio::test]
async fn untagged_target_pushes_every_tag() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let mut b = LayoutBuilder::new(&layout);
    let one = b.image(&ImageSpec::new(&[(1, 5000), (3, 7000)], 1));
    let two = b.image(&ImageSpec::new(&[(2, 5000), (3, 7000)], 2));
    b.tag(&one, "1.0");
    b.tag(&two, "2.0");
    b.tag(&two, "latest");
    // containerd-style full names count as their tag part
    b.tag(&one, "docker.io/library/app:stable");
    b.add_untagged(&two);
    b.write();
    let report_path = dir.path().join("r.json");
    let run = imagepush(&[
        "push",
        "--plain-http",
        "--report",
        report_path.to_str().unwrap(),
        layout.to_str().unwrap(),
        &format!("{}/team/app", registry.host()),
    ]);
    run.ok();
    assert_eq!(registry.tags("team/app").await, ["1.0", "2.0", "latest", "stable"]);
    for (tag, want) in [("1.0", &one), ("2.0", &two), ("latest", &two), ("stable", &one)] {
        assert_eq!(registry.manifest("team/app", tag).await.unwrap().2, want.digest, "{tag}");
        assert!(
            run.stdout.contains(&format!("{tag}: digest: {} size: {}", want.digest, want.size)),
            "{}",
            run.stdout
        );
    }
    let r = report(&report_path);
    assert_eq!(r["tags"].as_array().unwrap().len(), 4);
    // The shared layer is pushed once.
    assert_eq!(r["blobs"].as_array().unwrap().len(), 5);

    // A layout without tags cannot be pushed to an untagged target.
    let untagged = dir.path().join("untagged");
    let mut u = LayoutBuilder::new(&untagged);
    let img = u.image(&ImageSpec::new(&[(4, 100)], 4));
    u.add_untagged(&img);
    u.write();
    let run = imagepush(&[
        "push",
        "--plain-http",
        untagged.to_str().unwrap(),
        &format!("{}/team/none", registry.host()),
    ]);
    run.expect_code(3);
    assert!(run.stderr.contains("no tagged entries"), "{}", run.stderr);
}

#[tokio::test]
async fn target_by_digest_pushes_without_a_tag() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (_b, index, images) = common::multi_platform(
        &layout,
        "v1",
        &[("linux", "amd64", None), ("linux", "arm64", None)],
        false,
        true,
        11,
    );
    let host = registry.host();
    // A manifest nested in the index, named by digest.
    let run = imagepush(&[
        "push",
        "--plain-http",
        "-q",
        layout.to_str().unwrap(),
        &format!("{host}/app@{}", images[1].digest),
    ]);
    run.ok();
    assert_eq!(run.stdout, format!("{host}/app@{}\n", images[1].digest));
    assert_eq!(registry.manifest("app", &images[1].digest).await.unwrap().2, images[1].digest);
    assert!(registry.tags("app").await.is_empty());
    // The index by digest.
    imagepush(&[
        "push",
        "--plain-http",
        layout.to_str().unwrap(),
        &format!("{host}/app@{}", index.digest),
    ])
    .ok();
    assert_eq!(registry.manifest("app", &index.digest).await.unwrap().2, index.digest);
    assert!(registry.tags("app").await.is_empty());
    // A digest the layout does not have.
    let absent = common::sha256_digest(b"absent");
    let run = imagepush(&[
        "push",
        "--plain-http",
        layout.to_str().unwrap(),
        &format!("{host}/app@{absent}"),
    ]);
    run.expect_code(3);
    assert!(run.stderr.contains(&absent), "{}", run.stderr);
}

#[tokio::test]
async fn docker_schema2_images_keep_their_media_types() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let mut b = LayoutBuilder::new(&layout);
    let amd =
        b.image(&ImageSpec::new(&[(1, 3000)], 1).platform("linux", "amd64", None).docker(true));
    let arm =
        b.image(&ImageSpec::new(&[(2, 3000)], 2).platform("linux", "arm64", None).docker(true));
    let list = b.index(&[amd.clone(), arm.clone()], true);
    // skopeo 1.9 cannot read Docker types from index.json, imagepush can.
    b.tag(&list, "v1");
    b.tag(&amd, "amd");
    b.write();
    let host = registry.host();
    imagepush(&["push", "--plain-http", layout.to_str().unwrap(), &format!("{host}/docker/app")])
        .ok();
    let (bytes, ct, digest) = registry.manifest("docker/app", "v1").await.unwrap();
    assert_eq!(ct, "application/vnd.docker.distribution.manifest.list.v2+json");
    assert_eq!(digest, list.digest);
    assert_eq!(bytes, b.read_blob(&list.digest));
    let (bytes, ct, digest) = registry.manifest("docker/app", "amd").await.unwrap();
    assert_eq!(ct, "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(digest, amd.digest);
    assert_eq!(bytes, b.read_blob(&amd.digest));
    assert_eq!(registry.manifest("docker/app", &arm.digest).await.unwrap().2, arm.digest);
}

/// Blobs up to 1 MiB go in the commit `PUT` itself (POST + PUT), bigger ones are streamed in
/// a `PATCH` first; the registry gets each byte once either way.
#[tokio::test]
async fn small_blobs_are_committed_in_one_put_and_big_ones_streamed() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[2 * 1024 * 1024, 300_000, 1024 * 1024], 41);
    imagepush(&[
        "push",
        "--plain-http",
        dir.path().to_str().unwrap(),
        &format!("{}/team/small:v1", proxy.host()),
    ])
    .ok();
    let requests = proxy.requests();
    let of = |method: &'static str| {
        requests.iter().filter(move |r| r.method == method && r.target.contains("/blobs/uploads/"))
    };
    // Three layers and a config: four sessions, one PATCH (the 2 MiB layer), four commits, of
    // which three carry the blob.
    assert_eq!(of("POST").count(), 4);
    let patches: Vec<_> = of("PATCH").collect();
    assert_eq!(patches.len(), 1, "{requests:?}");
    let puts: Vec<u64> = of("PUT").map(|r| r.content_length.unwrap_or(0)).collect();
    assert_eq!(puts.len(), 4);
    assert_eq!(puts.iter().filter(|len| **len > 0).count(), 3, "{puts:?}");
    for d in b.blob_digests(&image) {
        assert_eq!(registry.blob("team/small", &d).await.unwrap(), b.read_blob(&d), "{d}");
    }
    let image_bytes: u64 = b.blob_digests(&image).iter().map(|d| b.read_blob(d).len() as u64).sum();
    assert!(proxy.bytes_to_server() < image_bytes + 64 * 1024, "each byte once");
}

/// An empty layer (size 0) is committed like any small blob and reads back empty.
#[tokio::test]
async fn an_empty_layer_is_pushed() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (b, image) = simple_image(dir.path(), "v1", &[0, 1000], 42);
    imagepush(&[
        "push",
        "--plain-http",
        dir.path().to_str().unwrap(),
        &format!("{}/team/empty:v1", registry.host()),
    ])
    .ok();
    let empty = b.children(&image).1[0].clone();
    assert_eq!(empty.size, 0);
    assert_eq!(registry.blob("team/empty", &empty.digest).await.unwrap(), Vec::<u8>::new());
    assert_eq!(registry.manifest("team/empty", "v1").await.unwrap().2, image.digest);
}
