//! The console port: accept, TLS 1.3 with a verified client certificate whose CN is the
//! console server's, one HTTP/1.1 GET with a WebSocket upgrade, then bytes both ways between
//! binary WebSocket frames and the VM's console until either side ends.
//!
//! Everything before the upgrade is bounded (connections, time, header bytes) and every
//! refusal after the TLS handshake is an HTTP status with a one-line text body. Nothing else
//! is served on this port.

use super::backend::{Backend, Session};
use super::counter::Counter;
use super::metrics::{ConsoleMetrics, Outcome};
use super::request::{self, Kind, RequestError, SUBPROTOCOL, Target, UpgradeHeaders};
use super::tls::{TlsState, common_name};
use futures::{SinkExt as _, StreamExt as _};
use ironvisor_crds::console::CONSOLE_CLIENT_CN;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Most bytes of a request head.
const MAX_HEAD: usize = 8 * 1024;
/// Time for the TLS handshake and the request head together.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest WebSocket frame or message a client may send.
const MAX_MESSAGE: usize = 1 << 20;
/// Bytes read from the console per frame.
const CHUNK: usize = 16 * 1024;

/// Connections open at once (bridged or still in their handshake) unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Everything the port needs.
pub struct Port {
    /// The TLS configuration new connections get.
    pub tls: Arc<TlsState>,
    /// What connections are bridged to.
    pub backend: Arc<dyn Backend>,
    /// Reports connections in the VMs' status; `None` in tests that need no API.
    pub counter: Option<Counter>,
    /// Bounds the connections open at once; over it, new ones are closed at once.
    pub limit: Arc<Semaphore>,
    /// Connection metrics.
    pub metrics: Arc<ConsoleMetrics>,
}

/// Accept connections on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, port: Arc<Port>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "console port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = port.limit.clone().try_acquire_owned() else {
            port.metrics.refused(Outcome::OverLimit);
            tracing::warn!(%peer, "console port: too many connections; closing a new one");
            drop(tcp);
            continue;
        };
        let port = port.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = handle(tcp, &port).await;
            tracing::debug!(%peer, outcome = outcome.label(), "console connection ended");
        });
    }
}

/// One connection, from TLS to the end of the bridge.
async fn handle(tcp: TcpStream, port: &Port) -> Outcome {
    let Some(config) = port.tls.get() else {
        port.metrics.refused(Outcome::NoCertificate);
        return Outcome::NoCertificate;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accepted = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let head = read_head(&mut tls).await;
        Some((tls, head))
    })
    .await;
    let (mut tls, head) = match accepted {
        Ok(Some(v)) => v,
        Ok(None) => {
            port.metrics.refused(Outcome::TlsRefused);
            return Outcome::TlsRefused;
        }
        Err(_) => {
            port.metrics.refused(Outcome::Timeout);
            return Outcome::Timeout;
        }
    };
    let client_cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| common_name(c));
    if client_cn.as_deref() != Some(CONSOLE_CLIENT_CN) {
        let body = "the client certificate is not the console server's";
        return refuse(&mut tls, port, 403, body, Outcome::Forbidden).await;
    }
    let (target, key, rest) = match head.and_then(|(buf, len)| check(&buf, len)) {
        Ok(v) => v,
        Err(e) => {
            let outcome = match e.status() {
                404 => Outcome::NotFound,
                _ => Outcome::BadRequest,
            };
            return refuse(&mut tls, port, e.status(), &e.to_string(), outcome).await;
        }
    };
    let session = match port.backend.open(&target).await {
        Ok(s) => s,
        Err(e) => {
            let outcome = match e.status() {
                404 => Outcome::NotFound,
                409 => Outcome::Conflict,
                _ => Outcome::Unavailable,
            };
            // With libvirt's reason (the source), which the client's body leaves out.
            tracing::info!(vm = %format!("{}/{}", target.namespace, target.name),
                kind = target.kind.as_str(), error = %crate::reconcile::failure::chain(&e),
                "console refused");
            return refuse(&mut tls, port, e.status(), &e.to_string(), outcome).await;
        }
    };
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    if tls.write_all(response.as_bytes()).await.is_err() {
        return Outcome::Unavailable;
    }
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(MAX_MESSAGE);
    ws_config.max_frame_size = Some(MAX_MESSAGE);
    let ws = WebSocketStream::from_partially_read(tls, rest, Role::Server, Some(ws_config)).await;
    port.metrics.opened(target.kind);
    let _count = port.counter.as_ref().map(|c| c.open(&target));
    tracing::info!(vm = %format!("{}/{}", target.namespace, target.name),
        kind = target.kind.as_str(), "console bridged");
    bridge(ws, session).await;
    port.metrics.closed(target.kind);
    Outcome::Bridged
}

/// The request head (up to the blank line) and its length, and whatever followed it.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<(Vec<u8>, usize), RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((buf, at + 4));
        }
        if buf.len() >= MAX_HEAD {
            return Err(RequestError::Bad("the request head is too large"));
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|_| RequestError::Bad("the connection ended in the request head"))?;
        if n == 0 {
            return Err(RequestError::Bad(
                "the connection ended in the request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parse the head: the target, the WebSocket key, and the bytes after the head.
fn check(buf: &[u8], len: usize) -> Result<(Target, String, Vec<u8>), RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(RequestError::Bad("the request is not HTTP/1.1")),
    }
    if req.version != Some(1) {
        return Err(RequestError::Bad("the request is not HTTP/1.1"));
    }
    let target = request::parse_target(req.method.unwrap_or(""), req.path.unwrap_or(""))?;
    let mut up = UpgradeHeaders::default();
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            continue;
        };
        match h.name.to_ascii_lowercase().as_str() {
            "upgrade" => up.upgrade = Some(value),
            "connection" => up.connection = Some(value),
            "sec-websocket-version" => up.version = Some(value),
            "sec-websocket-key" => up.key = Some(value),
            "sec-websocket-protocol" => up.protocols.push(value),
            _ => {}
        }
    }
    let key = request::check_upgrade(&up)?.to_owned();
    Ok((target, key, buf[len..].to_vec()))
}

/// Answer with `status` and a one-line text body, then close.
async fn refuse<S: AsyncWrite + Unpin>(
    s: &mut S,
    port: &Port,
    status: u16,
    body: &str,
    outcome: Outcome,
) -> Outcome {
    port.metrics.refused(outcome);
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    let _ = s.write_all(response.as_bytes()).await;
    let _ = s.shutdown().await;
    outcome
}

/// Bytes both ways until either side ends: binary frames to the console, the console's
/// output as binary frames. A text frame is outside the protocol and ends the connection.
async fn bridge<S>(ws: WebSocketStream<S>, session: Box<dyn Session>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let (mut from_vm, mut to_vm) = tokio::io::split(session);
    let inbound = async {
        while let Some(msg) = source.next().await {
            match msg {
                Ok(Message::Binary(bytes)) => {
                    if to_vm.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Text(_) | Message::Close(_)) | Err(_) => break,
            }
        }
        let _ = to_vm.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_vm.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

impl Kind {
    /// Every kind, for metrics initialisation.
    pub const ALL: [Kind; 2] = [Kind::Serial, Kind::Vnc];
}
