//! docker config.json parsing: never panics, and no error message carries the file's content.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("/fuzz/config.json");
    for registry in ["127.0.0.1:5000", "docker.io", "registry.example.com"] {
        if let Err(e) = imagepush::auth::from_docker_config_bytes(path, data, registry) {
            let _ = e.to_string();
        }
    }
});
