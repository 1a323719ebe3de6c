//! TLS for registry connections, with the trust store read at the first handshake.
//!
//! reqwest builds its certificate verifier with the client, and on Linux that reads and
//! parses every certificate of the system's store (bundle file and directory), even for a
//! push that never speaks TLS (`--plain-http`), and fails to build the client when there is
//! no store. Measured on a re-push of `examples/layouts/hello` over plain HTTP: 83% of the
//! process's instructions (callgrind) and 316 KB of its 485 KB peak heap (massif). Here the
//! same platform verifier (system roots plus `--ca-file`'s certificates) is built when a
//! server first presents a certificate, once per client: a plain-HTTP push reads no trust
//! store, and a TLS push verifies exactly as before.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::Error;

/// What a TLS push without any trusted certificate fails with; `error::network` classes it
/// as a TLS error (exit 2, not retried) by this text.
pub(super) const NO_TRUST_STORE: &str = "no trusted CA certificates";

/// The certificates of a PEM file given as `--ca-file`, each parsed as a trust anchor (as
/// the verifier will), so that a wrong file fails before anything is sent.
pub(super) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let fail = |reason: String| Error::CaFile { path: path.to_path_buf(), reason };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in the file".into()));
    }
    let mut check = rustls::RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|e| fail(format!("certificate {} cannot be a trust anchor: {e}", n + 1)))?;
    }
    Ok(certs)
}

/// A client configuration like reqwest's own (TLS 1.2 and 1.3, ALPN h2 and http/1.1, SNI)
/// whose verifier reads the trust store on first use.
pub(super) fn client_config(
    provider: Arc<CryptoProvider>,
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, Error> {
    let verifier = Arc::new(LazyVerifier::new(provider.clone(), extra_roots));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| Error::Client(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// rustls-platform-verifier's verifier, built when a certificate is first to be verified.
/// Signature checks need no roots and are answered from the provider, as the platform
/// verifier itself does.
#[derive(Debug)]
pub(super) struct LazyVerifier {
    provider: Arc<CryptoProvider>,
    extra_roots: Vec<CertificateDer<'static>>,
    verifier: OnceLock<Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl LazyVerifier {
    fn new(provider: Arc<CryptoProvider>, extra_roots: Vec<CertificateDer<'static>>) -> Self {
        LazyVerifier { provider, extra_roots, verifier: OnceLock::new() }
    }

    /// Whether the trust store has been read.
    #[cfg(test)]
    fn loaded(&self) -> bool {
        self.verifier.get().is_some()
    }

    fn verifier(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        let built = self.verifier.get_or_init(|| {
            rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.extra_roots.iter().cloned(),
                self.provider.clone(),
            )
            .map_err(|e| {
                rustls::Error::General(format!(
                    "{NO_TRUST_STORE}: {e} (install the system's CA certificates, or give --ca-file)"
                ))
            })
        });
        built.as_ref().map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn ca_file_error(content: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, content).unwrap();
        match read_ca_file(&path) {
            Err(Error::CaFile { path: p, reason }) if p == path => reason,
            other => panic!("expected a CaFile error naming {}: {other:?}", path.display()),
        }
    }

    #[test]
    fn a_ca_file_must_hold_usable_certificates() {
        assert_eq!(ca_file_error(b"not a certificate\n"), "no PEM certificate in the file");
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(ca_file_error(key_only), "no PEM certificate in the file");
        let not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let reason = ca_file_error(not_der);
        assert!(reason.starts_with("certificate 1 cannot be a trust anchor"), "{reason}");
        let cut = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(ca_file_error(cut).starts_with("not a PEM certificate bundle"));
    }

    #[test]
    fn the_trust_store_is_read_at_the_first_certificate_only() {
        let verifier = LazyVerifier::new(provider(), Vec::new());
        // What a ClientHello needs comes from the provider alone.
        assert!(!verifier.supported_verify_schemes().is_empty());
        assert!(!verifier.loaded());
        let name = ServerName::try_from("registry.example").unwrap();
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let verdict = verifier.verify_server_cert(&junk, &[], &name, &[], UnixTime::now());
        assert!(verdict.is_err(), "a junk certificate must not verify");
        assert!(verifier.loaded());
    }

    #[test]
    fn the_client_configuration_offers_h2_and_http1() {
        let config = client_config(provider(), Vec::new()).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(config.enable_sni);
    }
}
