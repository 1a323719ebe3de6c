use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::source::memory::MemorySource;

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

/// A two-platform index tagged v1; a signature of the index, an SBOM of each platform's
/// manifest, and a signature of the amd64 SBOM, all untagged entries of index.json.
struct Signed {
    graph: Graph,
    index: Descriptor,
    amd64: Descriptor,
    arm64: Descriptor,
    sig: Descriptor,
    sbom_amd64: Descriptor,
    sbom_arm64: Descriptor,
    sig_of_sbom: Descriptor,
}

fn signed() -> Signed {
    let mut src = MemorySource::default();
    let amd64 = src.image("linux/amd64", 1, 100);
    let arm64 = src.image("linux/arm64", 1, 100);
    let index = src.index_of(&[amd64.clone(), arm64.clone()]);
    src.tag(&index, "v1");
    let sig = src.artifact(SIG, Some(&index), "sig");
    let sbom_amd64 = src.artifact(SBOM, Some(&amd64), "amd64");
    let sbom_arm64 = src.artifact(SBOM, Some(&arm64), "arm64");
    let sig_of_sbom = src.artifact(SIG, Some(&sbom_amd64), "sig of sbom");
    for d in [&sig, &sbom_amd64, &sbom_arm64, &sig_of_sbom] {
        src.tag(d, "");
    }
    let graph = Graph::open(Arc::new(src)).unwrap();
    Signed { graph, index, amd64, arm64, sig, sbom_amd64, sbom_arm64, sig_of_sbom }
}

fn set(ds: &[&Descriptor]) -> HashSet<Digest> {
    ds.iter().map(|d| d.digest.clone()).collect()
}

fn digests(found: &Found) -> HashSet<Digest> {
    found.referrers.iter().map(|r| r.desc.digest.clone()).collect()
}

#[test]
fn referrers_of_everything_pushed_are_found_recursively() {
    let s = signed();
    let all = set(&[&s.index, &s.amd64, &s.arm64]);
    let found = find(&s.graph, &candidates(&s.graph), &all, &all).unwrap();
    assert_eq!(digests(&found), set(&[&s.sig, &s.sbom_amd64, &s.sbom_arm64, &s.sig_of_sbom]));
    assert!(found.left_out.is_empty());
    // A referrer comes a generation before the referrers of it.
    let generation = |d: &Descriptor| {
        found.referrers.iter().find(|r| r.desc.digest == d.digest).map(|r| r.generation)
    };
    assert_eq!(generation(&s.sbom_amd64), Some(1));
    assert_eq!(generation(&s.sig), Some(1));
    assert_eq!(generation(&s.sig_of_sbom), Some(2));
    let sbom = found.referrers.iter().find(|r| r.desc.digest == s.sbom_amd64.digest).unwrap();
    assert_eq!(sbom.subject, s.amd64.digest);
    assert!(sbom.has_subject && sbom.cosign_tag.is_none());
    // Listed as the spec says: artifactType and the manifest's own annotations.
    assert_eq!(sbom.listing.artifact_type.as_deref(), Some(SBOM));
    assert_eq!(sbom.listing.annotations.get("note").map(String::as_str), Some("amd64"));
    assert_eq!(
        (sbom.listing.size, &sbom.listing.media_type),
        (s.sbom_amd64.size, &s.sbom_amd64.media_type)
    );
}

#[test]
fn referrers_of_manifests_not_pushed_are_left_out_and_counted() {
    let s = signed();
    // --platform linux/amd64: only that manifest goes; the index and arm64 are related.
    let related = set(&[&s.index, &s.amd64, &s.arm64]);
    let found = find(&s.graph, &candidates(&s.graph), &set(&[&s.amd64]), &related).unwrap();
    assert_eq!(digests(&found), set(&[&s.sbom_amd64, &s.sig_of_sbom]));
    assert!(found.left_out.iter().all(|l| l.why == Why::NotPushed));
    let left: HashSet<(Digest, Digest)> =
        found.left_out.into_iter().map(|l| (l.referrer, l.subject)).collect();
    assert_eq!(
        left,
        [
            (s.sig.digest.clone(), s.index.digest.clone()),
            (s.sbom_arm64.digest.clone(), s.arm64.digest.clone())
        ]
        .into_iter()
        .collect()
    );
    // Content not related to the push at all is neither pushed nor counted.
    let found =
        find(&s.graph, &candidates(&s.graph), &set(&[&s.amd64]), &set(&[&s.amd64])).unwrap();
    assert!(found.left_out.is_empty());
}

#[test]
fn cosign_tags_and_cosign_save_kinds_tie_signatures_to_their_image() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 100);
    src.tag(&image, "v1");
    let sig = src.artifact(SIG, None, "simple signing");
    let tag = format!("{}.sig", schema_tag(&image.digest));
    src.tag(&sig, &tag);
    // Another image's signature (not pushed) is not taken.
    let other = src.image("linux/amd64", 1, 50);
    let other_sig = src.artifact(SIG, None, "other");
    src.tag(&other_sig, &format!("{}.sig", schema_tag(&other.digest)));
    let graph = Graph::open(Arc::new(src)).unwrap();
    let found = find(&graph, &candidates(&graph), &set(&[&image]), &set(&[&image])).unwrap();
    assert_eq!(found.referrers.len(), 1, "{found:?}");
    let r = &found.referrers[0];
    assert_eq!(
        (r.desc.digest.clone(), r.cosign_tag.clone(), r.has_subject),
        (sig.digest.clone(), Some(tag), false)
    );
    assert_eq!(r.subject, image.digest);
    assert!(r.desc.annotations.is_empty(), "index.json's name is not pushed with it");

    // `cosign save`: kinds instead of tags, the one image entry is the subject.
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 100);
    src.name(&image, &[("kind", "dev.cosignproject.cosign/image")]);
    let sig = src.artifact(SIG, None, "sigs");
    src.name(&sig, &[("kind", "dev.cosignproject.cosign/sigs")]);
    let att = src.artifact("application/vnd.dsse.envelope.v1+json", None, "atts");
    src.name(&att, &[("kind", "dev.cosignproject.cosign/atts")]);
    let graph = Graph::open(Arc::new(src)).unwrap();
    let found = find(&graph, &candidates(&graph), &set(&[&image]), &set(&[&image])).unwrap();
    let tags: Vec<Option<String>> = found.referrers.iter().map(|r| r.cosign_tag.clone()).collect();
    let hex = schema_tag(&image.digest);
    assert_eq!(tags, [Some(format!("{hex}.sig")), Some(format!("{hex}.att"))]);
    assert!(is_referrer_entry(&graph, &graph.entries()[1]));
    assert!(!is_referrer_entry(&graph, &graph.entries()[0]));
}

#[test]
fn referrers_tags_are_recognized_exactly() {
    let hex = "a".repeat(64);
    for (tag, cosign, any) in [
        (format!("sha256-{hex}.sig"), true, true),
        (format!("sha256-{hex}.att"), true, true),
        (format!("sha256-{hex}.sbom"), true, true),
        (format!("sha256-{hex}"), false, true),
        (format!("sha256-{hex}.txt"), false, false),
        (format!("sha256-{}.sig", &hex[1..]), false, false),
        ("v1.sig".to_string(), false, false),
        ("sha256-latest".to_string(), false, false),
    ] {
        assert_eq!(cosign_subject(&tag).is_some(), cosign, "{tag}");
        assert_eq!(is_referrers_tag(&tag), any, "{tag}");
    }
    let d: Digest = format!("sha256:{hex}").parse().unwrap();
    assert_eq!(schema_tag(&d), format!("sha256-{hex}"));
    assert_eq!(cosign_subject(&format!("sha256-{hex}.att")), Some(d));
}

fn listed(n: u8, kind: &str) -> Descriptor {
    Descriptor {
        media_type: oci::OCI_MANIFEST.into(),
        digest: Digest::sha256(&[n]),
        size: 100 + u64::from(n),
        annotations: [("note".to_string(), format!("n{n}"))].into_iter().collect(),
        platform: None,
        urls: vec![],
        artifact_type: Some(kind.into()),
    }
}

#[test]
fn the_schema_index_keeps_what_it_lists_and_adds_each_referrer_once() {
    // None there yet: a new index of the referrers.
    let first = merged_index(None, &[listed(1, SIG)]).unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], oci::OCI_INDEX);
    assert_eq!(v["manifests"][0]["artifactType"], SIG);
    assert_eq!(v["manifests"][0]["annotations"]["note"], "n1");
    // A second push of another referrer (and the first again): both, once each.
    let second = merged_index(Some((&first, oci::OCI_INDEX)), &[listed(1, SIG), listed(2, SBOM)])
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&second).unwrap();
    let ds: Vec<&str> =
        v["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(ds, [Digest::sha256(&[1]).to_string(), Digest::sha256(&[2]).to_string()]);
    // Nothing new: no write.
    assert_eq!(merged_index(Some((&second, oci::OCI_INDEX)), &[listed(2, SBOM)]).unwrap(), None);
    // What another tool wrote stays as it is, fields unknown here included.
    let foreign = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX,
        "annotations": {"by": "oras"},
        "manifests": [{"mediaType": oci::OCI_MANIFEST, "digest": Digest::sha256(&[9]), "size": 9,
                       "artifactType": "x", "data": "e30="}]});
    let merged = merged_index(
        Some((&serde_json::to_vec(&foreign).unwrap(), oci::OCI_INDEX)),
        &[listed(3, SIG)],
    )
    .unwrap()
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&merged).unwrap();
    assert_eq!(v["annotations"]["by"], "oras");
    assert_eq!(v["manifests"][0]["data"], "e30=");
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    // An index the registry names by its media type only (no `mediaType` in the body).
    let bare = br#"{"schemaVersion": 2, "manifests": []}"#;
    assert!(merged_index(Some((bare, oci::OCI_INDEX)), &[listed(1, SIG)]).unwrap().is_some());
    // Not an index: refused, not overwritten (an image manifest, a Docker manifest list, an
    // index without its list, version 1, not JSON).
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
        "config": listed(1, SIG), "layers": []});
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let list = br#"{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": []}"#;
    let cases: [(&[u8], &str); 6] = [
        (&manifest, oci::OCI_MANIFEST),
        (&manifest, oci::OCI_INDEX),
        (list, oci::DOCKER_MANIFEST_LIST),
        (
            br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}"#,
            oci::OCI_INDEX,
        ),
        (br#"{"schemaVersion": 1, "manifests": []}"#, oci::OCI_INDEX),
        (b"not json", oci::OCI_INDEX),
    ];
    for (bad, media_type) in cases {
        let e = merged_index(Some((bad, media_type)), &[listed(1, SIG)]).unwrap_err();
        assert!(!e.is_empty(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn a_referrer_whose_content_is_not_in_the_layout_is_left_out_with_its_referrers() {
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 100);
    src.tag(&image, "v1");
    let sbom = src.artifact(SBOM, Some(&image), "sbom");
    let sig_of_sbom = src.artifact(SIG, Some(&sbom), "sig of sbom");
    let whole = src.artifact(SIG, Some(&image), "whole");
    for d in [&sbom, &sig_of_sbom, &whole] {
        src.tag(d, "");
    }
    // The SBOM's layer is not in the layout (its payload, as `artifact` writes it).
    src.remove(&Digest::sha256(b"payload sbom"));
    let graph = Graph::open(Arc::new(src)).unwrap();
    let found = find(&graph, &candidates(&graph), &set(&[&image]), &set(&[&image])).unwrap();
    assert_eq!(digests(&found), set(&[&whole]));
    let left: Vec<(Digest, Why)> =
        found.left_out.iter().map(|l| (l.referrer.clone(), l.why)).collect();
    assert!(left.contains(&(sbom.digest.clone(), Why::Incomplete)), "{left:?}");
    assert!(left.contains(&(sig_of_sbom.digest.clone(), Why::NotPushed)), "{left:?}");
}

#[test]
fn cosign_tags_that_point_at_each_other_end() {
    // Two signatures tagged as each other's: found from the image, the loop ends.
    let mut src = MemorySource::default();
    let image = src.image("linux/amd64", 1, 100);
    src.tag(&image, "v1");
    let a = src.artifact(SIG, None, "a");
    let b = src.artifact(SIG, None, "b");
    src.tag(&a, &format!("{}.sig", schema_tag(&image.digest)));
    src.tag(&b, &format!("{}.sig", schema_tag(&a.digest)));
    src.tag(&a, &format!("{}.att", schema_tag(&b.digest)));
    let graph = Graph::open(Arc::new(src)).unwrap();
    let found = find(&graph, &candidates(&graph), &set(&[&image]), &set(&[&image])).unwrap();
    assert_eq!(digests(&found), set(&[&a, &b]));
}
