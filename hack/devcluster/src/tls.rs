//! The TLS port: a certificate authority and a serving certificate for `localhost`,
//! `127.0.0.1` and `::1`, made at every start, and a listener that completes the handshake
//! before handing a connection to the HTTP server. kubectl sends bearer tokens only over TLS
//! (client-go reads a kubeconfig's credentials only for a TLS transport), so identities other
//! than the default one need this port.
//!
//! Owns the key material (memory only); never looks at requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake that takes longer than this is dropped (it would hold up other clients).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed to make a key or certificate.
    #[error("making the TLS certificates")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS")]
    Config(#[from] rustls::Error),
}

/// The serving configuration and the CA that clients trust.
pub struct Tls {
    /// The CA certificate (PEM), for kubeconfigs' `certificate-authority-data`.
    pub ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// A new CA and serving certificate.
    pub fn generate() -> Result<Self, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "ironvisor-devcluster-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "ironvisor-devcluster");
        let cert = leaf.signed_by(&key, &issuer)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], der_key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca_cert.pem(),
            config: Arc::new(config),
        })
    }

    /// A listener serving TLS on `tcp`. Handshakes run concurrently, so a slow or silent
    /// client holds up nobody else.
    pub fn listener(&self, tcp: TcpListener) -> TlsListener {
        let local = tcp.local_addr();
        let acceptor = TlsAcceptor::from(self.config.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, acceptor, tx));
        TlsListener { rx, local }
    }
}

/// Accepts connections and hands each to its own handshake task, until the listener is gone.
async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = tx.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "accepting a TLS connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// Connections whose TLS handshake is complete.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
