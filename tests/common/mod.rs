//! Shared support for the integration tests: a real registry, a counting TCP proxy and a
//! deterministic OCI layout builder. Use it with `mod common;` from a file in `tests/`.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod cluster;
pub mod helm;
pub mod k8s_schemas;
pub mod layout;
pub mod pid1;
pub mod proxy;
pub mod registry;
pub mod token_registry;

pub use cli::{Run, blob_outcomes, imagepush, imagepush_env, imagepush_with_stdin, report};
pub use layout::{Desc, ImageSpec, LayoutBuilder, multi_platform, simple_image};
pub use proxy::CountingProxy;
pub use registry::TestRegistry;

/// `sha256:<hex>` of `bytes` (plain sha2, independent of the crate under test).
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Runs `openssl ARGS` in `dir`; panics with its output unless it succeeds.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Installs rustls' ring provider once (reqwest is built without one); harmless if the
/// process already has one.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client for plain-HTTP test traffic.
pub fn http_client() -> reqwest::Client {
    ensure_crypto_provider();
    reqwest::Client::builder().no_proxy().build().expect("build reqwest client")
}
