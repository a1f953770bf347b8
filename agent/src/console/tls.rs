//! The console port's TLS: TLS 1.3 only, a client certificate required and verified against
//! the console CA, and the client's common name read from it.
//!
//! The configuration changes while the port runs (the operator signs the agent's request
//! after the agent started, renews it, or the CA changes), so it is held in a [`TlsState`]
//! that each new connection reads; connections already open keep what they began with.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::{Arc, RwLock};

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM document holds no certificate or key, or is malformed.
    #[error("{0} is not valid PEM")]
    Pem(&'static str),
    /// rustls refused the CA, the certificate or the key.
    #[error("the console TLS configuration is unusable")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built from the CA.
    #[error("the console CA cannot verify clients")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The PEM documents a port serves with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The console CA's certificate (clients must chain to it).
    pub ca_pem: String,
    /// This port's certificate (signed by the CA).
    pub cert_pem: String,
    /// Its private key (PKCS#8 or SEC1).
    pub key_pem: String,
}

/// Certificates in a PEM document (at least one).
pub fn certificates(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem(what))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(what));
    }
    Ok(certs)
}

/// The server configuration for `m`: TLS 1.3, client certificates required.
pub fn server_config(m: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&m.ca_pem, "the console CA")? {
        roots.add(ca)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes())
        .map_err(|_| TlsError::Pem("the console key"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(&m.cert_pem, "the console certificate")?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject's common name of a DER certificate, when it has exactly one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = cert.subject().iter_common_name();
    let first = names.next()?.as_str().ok()?.to_owned();
    names.next().is_none().then_some(first)
}

/// The configuration new connections are served with; `None` until the port has a
/// certificate (connections are then closed at once).
#[derive(Default)]
pub struct TlsState {
    current: RwLock<Option<Arc<ServerConfig>>>,
}

impl TlsState {
    /// The configuration now.
    pub fn get(&self) -> Option<Arc<ServerConfig>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serve new connections with `config`.
    pub fn set(&self, config: Option<Arc<ServerConfig>>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_and_leaf(cn: &str) -> (String, String, String) {
        crate::daemon::install_crypto_provider();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["host-a".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &*ca).unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_config_is_built_from_the_ca_a_certificate_and_its_key() {
        let (ca_pem, cert_pem, key_pem) = ca_and_leaf("hypervisor:host-a");
        let config = server_config(&Material {
            ca_pem,
            cert_pem: cert_pem.clone(),
            key_pem,
        })
        .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let der = certificates(&cert_pem, "c").unwrap();
        assert_eq!(common_name(&der[0]).as_deref(), Some("hypervisor:host-a"));
    }

    #[test]
    fn garbage_pem_is_refused_with_what_it_was() {
        let (ca_pem, cert_pem, key_pem) = ca_and_leaf("x");
        let garbage = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let err = server_config(&Material {
            ca_pem: garbage.into(),
            cert_pem: cert_pem.clone(),
            key_pem: key_pem.clone(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("console CA"), "{err}");
        let err = server_config(&Material {
            ca_pem,
            cert_pem,
            key_pem: "no key here".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("key"), "{err}");
        assert_eq!(common_name(b"not DER"), None);
    }
}
