//! The TLS listener: each connection is handshaken with the configuration current when it
//! arrives, and carries who its verified client certificate names (a front proxy) to the
//! handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::pki::Pki;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The peer of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// The common name of its client certificate, which the front-proxy CA signed (rustls
    /// verified it during the handshake); `None` without a certificate.
    pub client_cn: Option<String>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Connections whose TLS handshake is complete.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp`, handshaking each connection on its own task.
    pub fn new(tcp: TcpListener, pki: Arc<Pki>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, pki, tx));
        Ok(Self { rx, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    pki: Arc<Pki>,
    tx: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = tx.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(cfg) = pki.server() else {
            tracing::warn!(%addr, "no serving certificate yet (Secret ironvisor-console-tls); closing");
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let accept = TlsAcceptor::from(cfg).accept(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(tls)) => {
                    let client_cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| common_name(c));
                    let _ = tx.send((tls, Peer { addr, client_cn })).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            client_cn: None,
        })
    }
}
