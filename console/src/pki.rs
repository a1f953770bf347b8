//! The server's TLS material, rebuilt whenever its sources change: the serving and client
//! certificate (Secret `ironvisor-console-tls`: tls.crt, tls.key, ca.crt, issued by the
//! operator; this server never sees the CA key) and the front-proxy CA (ConfigMap
//! `kube-system/extension-apiserver-authentication`). Connections take the configuration
//! current when they start.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::authn::FrontProxy;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A PEM block did not parse.
    #[error("{what} is not valid PEM")]
    Pem {
        /// Which material.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the material.
    #[error("{what} was refused by rustls")]
    Rustls {
        /// Which material.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The front-proxy CA has no usable certificate.
    #[error("the front-proxy CA bundle has no usable certificate")]
    FrontProxyCa(#[source] rustls::server::VerifierBuilderError),
}

/// What the sources hold now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// The certificate chain (PEM), serving and client.
    pub cert: Option<String>,
    /// Its key (PEM).
    pub key: Option<String>,
    /// The console CA (PEM): agents' certificates must chain to it.
    pub console_ca: Option<String>,
    /// The front-proxy CA bundle (PEM); without it only bearer tokens authenticate.
    pub front_proxy_ca: Option<String>,
    /// The front proxy's header names and allowed common names.
    pub front_proxy: Option<FrontProxy>,
}

/// The configurations built from the material.
#[derive(Default)]
pub struct Pki {
    server: RwLock<Option<Arc<ServerConfig>>>,
    client: RwLock<Option<Arc<ClientConfig>>>,
    front_proxy: RwLock<FrontProxy>,
    material: RwLock<Material>,
    ready: tokio::sync::Notify,
}

fn certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PkiError::Pem { what, source })
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| PkiError::Pem {
        what: "tls.key",
        source,
    })
}

fn roots(what: &'static str, pem: &str) -> Result<RootCertStore, PkiError> {
    let mut store = RootCertStore::empty();
    for c in certs(what, pem)? {
        store
            .add(c)
            .map_err(|source| PkiError::Rustls { what, source })?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The serving configuration: HTTP/1.1 (WebSocket upgrades), the front proxy's client
/// certificate verified when one is offered, none required (bearer tokens need none).
pub fn server_config(m: &Material) -> Result<Option<ServerConfig>, PkiError> {
    let (Some(cert), Some(k)) = (&m.cert, &m.key) else {
        return Ok(None);
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Rustls {
            what: "the protocol versions",
            source,
        })?;
    let builder = match &m.front_proxy_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("requestheader-client-ca-file", ca)?),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(PkiError::FrontProxyCa)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs("tls.crt", cert)?, key(k)?)
        .map_err(|source| PkiError::Rustls {
            what: "tls.crt/tls.key",
            source,
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(cfg))
}

/// The configuration for dialing agents: our certificate as the client certificate, the
/// agent's verified against the console CA (its name is checked per connection).
pub fn client_config(m: &Material) -> Result<Option<ClientConfig>, PkiError> {
    let (Some(cert), Some(k), Some(ca)) = (&m.cert, &m.key, &m.console_ca) else {
        return Ok(None);
    };
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Rustls {
            what: "TLS 1.3",
            source,
        })?
        .with_root_certificates(roots("ca.crt", ca)?)
        .with_client_auth_cert(certs("tls.crt", cert)?, key(k)?)
        .map_err(|source| PkiError::Rustls {
            what: "tls.crt/tls.key",
            source,
        })?;
    Ok(Some(cfg))
}

impl Pki {
    /// Changes the material with `f` and rebuilds; bad material keeps the previous
    /// configurations (logged), so a botched rotation does not take the server down.
    pub fn update(&self, f: impl FnOnce(&mut Material)) {
        let m = {
            let mut cur = self.material.write().unwrap_or_else(|p| p.into_inner());
            f(&mut cur);
            cur.clone()
        };
        *self.front_proxy.write().unwrap_or_else(|p| p.into_inner()) =
            m.front_proxy.clone().unwrap_or_default();
        match server_config(&m) {
            Ok(c) => *self.server.write().unwrap_or_else(|p| p.into_inner()) = c.map(Arc::new),
            Err(e) => {
                tracing::error!(error = %crate::chain(&e), "keeping the previous serving TLS")
            }
        }
        match client_config(&m) {
            Ok(c) => *self.client.write().unwrap_or_else(|p| p.into_inner()) = c.map(Arc::new),
            Err(e) => tracing::error!(error = %crate::chain(&e), "keeping the previous agent TLS"),
        }
        if self.server().is_some() {
            self.ready.notify_waiters();
        }
    }

    /// The serving configuration, once the serving certificate is known.
    pub fn server(&self) -> Option<Arc<ServerConfig>> {
        self.server
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The agent-dialing configuration, once certificate and CA are known.
    pub fn client(&self) -> Option<Arc<ClientConfig>> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How the front proxy passes identities.
    pub fn front_proxy(&self) -> FrontProxy {
        self.front_proxy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a serving certificate is there.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.server().is_some() {
                return;
            }
            notified.await;
        }
    }
}
