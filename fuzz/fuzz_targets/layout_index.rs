//! index.json / index / manifest parsing: any bytes give a value or an error, never a panic,
//! and every digest that parses is valid (so it can become a path).
#![no_main]
use imagepush::oci::{ImageIndex, ImageManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        for d in &index.manifests {
            let text = d.digest.to_string();
            assert_eq!(text.parse::<imagepush::digest::Digest>().unwrap(), d.digest);
            assert!(!text.contains('/') && !text.contains(".."));
            let _ = d.ref_name();
            let _ = d.is_attestation();
            if let Some(p) = &d.platform {
                let _ = p.to_string();
            }
        }
    }
    if let Ok(m) = serde_json::from_slice::<ImageManifest>(data) {
        for b in m.blobs() {
            assert_eq!(b.digest.hex().len(), b.digest.algorithm().hex_len());
        }
    }
});
