//! A test console PKI (a CA, the port's certificate, client certificates) and a client that
//! speaks the console port's protocol: mTLS, then a WebSocket upgrade with the subprotocol
//! `binary.ironvisor.io`.
#![allow(dead_code)]

use futures::{SinkExt as _, StreamExt as _};
use ironvisor_agent::console::tls::Material;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A CA and what it signs.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key (PEM).
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        ironvisor_agent::daemon::install_crypto_provider();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, cn: &str, names: &[&str], eku: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &*self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The port's serving certificate for host `host` (SANs: the host and 127.0.0.1).
    pub fn server(&self, host: &str) -> Leaf {
        self.leaf(
            &format!("hypervisor:{host}"),
            &[host, "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        self.leaf(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// What the port serves with.
    pub fn material(&self, server: &Leaf) -> Material {
        Material {
            ca_pem: self.pem(),
            cert_pem: server.cert_pem.clone(),
            key_pem: server.key_pem.clone(),
        }
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A TLS client trusting `ca_pem`, presenting `client` when given.
pub fn connector(ca_pem: &str, client: Option<&Leaf>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(l) => builder
            .with_client_auth_cert(
                certs(&l.cert_pem),
                PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// What came back instead of a WebSocket.
#[derive(Debug)]
pub enum Refused {
    /// An HTTP answer: status and body.
    Http(u16, String),
    /// TLS or the connection failed (no HTTP answer at all).
    Transport(String),
}

/// Connect to `path` on the port at `addr`.
pub async fn connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
) -> Result<Ws, Refused> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| Refused::Transport(e.to_string()))?;
    let mut req = format!("wss://127.0.0.1:{}{path}", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "binary.ironvisor.io".parse().unwrap(),
    );
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(req, tls),
    )
    .await
    .map_err(|_| Refused::Transport("timed out".into()))?;
    match done {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()
                    .get("Sec-WebSocket-Protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("binary.ironvisor.io")
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(Refused::Http(resp.status().as_u16(), body))
        }
        Err(e) => Err(Refused::Transport(e.to_string())),
    }
}

/// Read binary frames until their bytes contain `needle` (or `limit` passes); all bytes read.
pub async fn read_until(ws: &mut Ws, needle: &[u8], limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg {
                got.extend_from_slice(&b);
                if got.windows(needle.len()).any(|w| w == needle) {
                    return;
                }
            }
        }
    })
    .await;
    got
}

/// Send `bytes` as one binary frame.
pub async fn send(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::Binary(bytes.to_vec().into()))
        .await
        .unwrap();
}
