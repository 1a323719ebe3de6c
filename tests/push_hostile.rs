//! More hostile and broken layouts, beyond `push_layout_safety.rs`: each is refused with the
//! bad-input or not-found exit code, a message naming the problem, and no tag written.

mod common;

use common::cli::imagepush_traced;
use common::{LayoutBuilder, TestRegistry, imagepush, simple_image};

fn write_index(layout: &std::path::Path, manifests: serde_json::Value) {
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}).to_string(),
    )
    .unwrap();
}

/// Pushes `layout` under strace; it must exit with `code`, name everything in `wants`, tag
/// nothing and read no file outside the layout.
async fn refused(registry: &TestRegistry, layout: &std::path::Path, code: i32, wants: &[&str]) {
    let (run, opened) = imagepush_traced(&[
        "push",
        "--plain-http",
        layout.to_str().unwrap(),
        &format!("{}/hostile/app:v1", registry.host()),
    ]);
    opened.assert_confined(layout, &[]);
    run.expect_code(code);
    for w in wants {
        assert!(run.stderr.contains(w), "wanted {w:?} in: {}", run.stderr);
    }
    assert!(registry.tags("hostile/app").await.is_empty());
}

#[tokio::test]
async fn hostile_index_and_manifest_content() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();

    // index.json larger than the 16 MiB the reader accepts.
    let huge = dir.path().join("huge");
    simple_image(&huge, "v1", &[100], 1);
    let mut f = std::fs::OpenOptions::new().append(true).open(huge.join("index.json")).unwrap();
    std::io::Write::write_all(&mut f, &vec![b' '; 17 * 1024 * 1024]).unwrap();
    refused(&registry, &huge, 2, &["index.json", "larger"]).await;

    // A digest with an uppercase hex encoding, and one with a sha384 algorithm.
    for (name, digest, want) in [
        ("upper", format!("sha256:{}", "A".repeat(64)), "lowercase"),
        ("algo", format!("sha384:{}", "a".repeat(96)), "unknown algorithm"),
        ("short", "sha256:abcd".to_string(), "64 hex"),
    ] {
        let l = dir.path().join(name);
        simple_image(&l, "v1", &[100], 2);
        write_index(
            &l,
            serde_json::json!([{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 10,
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]),
        );
        refused(&registry, &l, 2, &["index.json", want]).await;
    }

    // A negative size, and a size that is not a number.
    for (name, size) in [("negative", serde_json::json!(-1)), ("string", serde_json::json!("12"))] {
        let l = dir.path().join(name);
        let (_b, image) = simple_image(&l, "v1", &[100], 3);
        write_index(
            &l,
            serde_json::json!([{"mediaType": image.media_type, "digest": image.digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]),
        );
        refused(&registry, &l, 2, &["index.json"]).await;
    }

    // A manifest whose config is missing from the layout (and from everywhere): not found,
    // naming the config's digest.
    let noconfig = dir.path().join("noconfig");
    let (b, image) = simple_image(&noconfig, "v1", &[100], 4);
    let (config, _) = b.children(&image);
    b.remove_blob(&config.digest);
    refused(&registry, &noconfig, 3, &[&config.digest]).await;

    // An index entry typed as an index whose content is a manifest.
    let liar = dir.path().join("liar");
    let (_b, image) = simple_image(&liar, "v1", &[100], 5);
    write_index(
        &liar,
        serde_json::json!([{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": image.digest, "size": image.size,
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]),
    );
    refused(&registry, &liar, 2, &[&image.digest]).await;

    // A manifest that is not JSON at all (its digest and size are right).
    let garbage = dir.path().join("garbage");
    let mut gb = LayoutBuilder::new(&garbage);
    let (digest, size) = gb.blob(b"\x00\xff not json \xfe");
    gb.write();
    write_index(
        &garbage,
        serde_json::json!([{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]),
    );
    refused(&registry, &garbage, 2, &[digest.trim_start_matches("sha256:"), "invalid JSON"]).await;

    // A tag name that is not a valid tag (it would become a URL path).
    let badtag = dir.path().join("badtag");
    let (_b, image) = simple_image(&badtag, "v1", &[100], 6);
    write_index(
        &badtag,
        serde_json::json!([{"mediaType": image.media_type, "digest": image.digest, "size": image.size,
        "annotations": {"org.opencontainers.image.ref.name": "../../v2/other/manifests/x"}}]),
    );
    let (run, opened) = imagepush_traced(&[
        "push",
        "--plain-http",
        badtag.to_str().unwrap(),
        &format!("{}/hostile/app", registry.host()),
    ]);
    opened.assert_confined(&badtag, &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("not a valid tag"), "{}", run.stderr);
    assert!(registry.tags("hostile/app").await.is_empty());
}

#[tokio::test]
async fn layout_root_keeps_symlinks_inside_the_volume() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let outside = dir.path().join("outside");
    simple_image(&outside, "v1", &[100], 7);
    std::os::unix::fs::symlink(&outside, volume.join("app")).unwrap();
    let target = format!("{}/hostile/app:v1", registry.host());
    let (run, opened) = imagepush_traced(&[
        "push",
        "--plain-http",
        "--layout-root",
        volume.to_str().unwrap(),
        volume.join("app").to_str().unwrap(),
        &target,
    ]);
    opened.assert_confined(&volume, &[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("outside") && run.stderr.contains("--layout-root"),
        "{}",
        run.stderr
    );
    assert!(registry.tags("hostile/app").await.is_empty());
    // The same layout inside the volume pushes.
    let inside = volume.join("real");
    simple_image(&inside, "v1", &[100], 7);
    imagepush(&[
        "push",
        "--plain-http",
        "--layout-root",
        volume.to_str().unwrap(),
        inside.to_str().unwrap(),
        &target,
    ])
    .ok();
}
