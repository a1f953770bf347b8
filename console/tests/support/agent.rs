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
    /// Serves with `leaf` (signed by `ca`), for the VM with `uid`.
    pub async fn start(ca: &Ca, leaf: &Leaf, uid: &str) -> Self {
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
                    // tungstenite's callback type fixes the error variant's size.
                    #[allow(clippy::result_large_err)]
                    let check = |req: &Request, mut resp: Response| {
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
