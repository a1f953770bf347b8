//! TLS to an aggregated server: the server certificate is verified against the APIService's
//! `spec.caBundle` for the name `<service>.<namespace>.svc` (or not at all with
//! `insecureSkipTLSVerify`), and the front-proxy client certificate is presented.
//!
//! Owns building the rustls client configuration; never connects.

use super::front_proxy::FrontProxy;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// Why no TLS configuration could be made for an APIService.
#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    /// `spec.caBundle` holds no usable certificate (and verification is not skipped).
    #[error("spec.caBundle holds no usable CA certificate; set it, or insecureSkipTLSVerify")]
    NoCa,
    /// rustls refused the configuration.
    #[error("configuring TLS to the service")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The client configuration for an APIService with `ca_bundle` (PEM) or `insecure`.
pub fn client_config(
    proxy: &FrontProxy,
    ca_bundle: &[u8],
    insecure: bool,
) -> Result<rustls::ClientConfig, BackendTlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let certs = rustls::pki_types::pem::PemObject::pem_slice_iter(ca_bundle)
            .filter_map(Result::ok)
            .collect::<Vec<CertificateDer<'static>>>();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(BackendTlsError::NoCa);
        }
        builder.with_root_certificates(roots)
    };
    let (chain, key) = proxy.client_identity();
    let mut config = builder.with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `insecureSkipTLSVerify: true`: any server certificate is accepted (signatures are still
/// checked, so the handshake is with whoever holds the presented key).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
