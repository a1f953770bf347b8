//! An echo agent: a TLS server that speaks the agent's console-port contract (client
//! certificate required and signed by the console CA with CN `ironvisor-console`, `GET
//! /v1/namespaces/{ns}/virtualmachines/{name}/{console|vnc}?uid=` upgraded to a WebSocket,
//! 404 for another uid) and echoes every byte back. The real agent's port is tested with
//! a real guest in tests/tests/console.rs; this one lets the server's side be tested alone.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt as _, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use super::pki::{Ca, Leaf};

/// A running echo agent.
pub struct EchoAgent {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(ca: &Ca, leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(cfg)
}

impl EchoAgent {
    /// Serves with `leaf` (signed by `ca`), for the VM with `uid`: both kinds echo.
    pub async fn start(ca: &Ca, leaf: &Leaf, uid: &str) -> Self {
        Self::serve(ca, leaf, uid, false).await
    }

    /// As [`EchoAgent::start`], but the `vnc` kind is a VNC server's handshake ([`rfb`])
    /// showing an empty screen, so that noVNC connects.
    pub async fn start_with_display(ca: &Ca, leaf: &Leaf, uid: &str) -> Self {
        Self::serve(ca, leaf, uid, true).await
    }

    async fn serve(ca: &Ca, leaf: &Leaf, uid: &str, display: bool) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config(ca, leaf));
        let uid = uid.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = tcp.accept().await else {
                    return;
                };
                let (acceptor, uid) = (acceptor.clone(), uid.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut vnc = false;
                    // tungstenite's callback type fixes the error variant's size.
                    #[allow(clippy::result_large_err)]
                    let check = |req: &Request, mut resp: Response| {
                        vnc = req.uri().path().ends_with("/vnc");
                        let q = req.uri().query().unwrap_or_default();
                        if q != format!("uid={uid}") {
                            let mut e = ErrorResponse::new(Some("no such VM here".into()));
                            *e.status_mut() = StatusCode::NOT_FOUND;
                            return Err(e);
                        }
                        resp.headers_mut().insert(
                            "Sec-WebSocket-Protocol",
                            "binary.ironvisor.io".parse().unwrap(),
                        );
                        Ok(resp)
                    };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tls, check).await else {
                        return;
                    };
                    let (mut tx, mut rx) = ws.split();
                    if vnc && display {
                        rfb(&mut tx, &mut rx).await;
                        return;
                    }
                    while let Some(Ok(m)) = rx.next().await {
                        if m.is_binary() && tx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

type Tx = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Message,
>;
type Rx = futures::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
>;

/// Reads until `buf` holds `n` bytes; false when the connection ends first.
async fn need(rx: &mut Rx, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        match rx.next().await {
            Some(Ok(m)) if m.is_binary() => buf.extend_from_slice(&m.into_data()),
            Some(Ok(_)) => {}
            _ => return false,
        }
    }
    true
}

/// The server side of an RFB 3.8 handshake (RFC 6143): version, security None, a 64x48
/// true-colour ServerInit named "stand-in"; then it reads and drops the client's messages.
async fn rfb(tx: &mut Tx, rx: &mut Rx) {
    use tokio_tungstenite::tungstenite::Message;
    let mut buf = Vec::new();
    let send = |b: Vec<u8>| Message::binary(b);
    if tx.send(send(b"RFB 003.008\n".to_vec())).await.is_err() || !need(rx, &mut buf, 12).await {
        return;
    }
    buf.drain(..12);
    // One security type: None.
    if tx.send(send(vec![1, 1])).await.is_err() || !need(rx, &mut buf, 1).await {
        return;
    }
    buf.drain(..1);
    if tx.send(send(vec![0, 0, 0, 0])).await.is_err() || !need(rx, &mut buf, 1).await {
        return;
    }
    buf.drain(..1);
    let name = b"stand-in";
    let mut init = vec![0, 64, 0, 48];
    // 32 bpp, depth 24, little-endian, true colour, max 255 each, shifts 16/8/0, padding.
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(&(name.len() as u32).to_be_bytes());
    init.extend_from_slice(name);
    if tx.send(send(init)).await.is_err() {
        return;
    }
    while let Some(Ok(_)) = rx.next().await {}
}
