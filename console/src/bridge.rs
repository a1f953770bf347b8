//! The client side of a console: the WebSocket upgrade of the request (answered only after
//! the agent's side is open, so every refusal is a plain HTTP status) and the pipe that
//! copies frames both ways until either side closes.
//!
//! Subprotocols: `binary.ironvisor.io` (raw bytes in binary frames; ivctl, the browser) and,
//! so kube-rs' and client-go's stream clients work unmodified, `v5.channel.k8s.io` /
//! `v4.channel.k8s.io` (each frame starts with a channel byte: 0 stdin, 1 stdout).

use futures::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::agent::{AgentStream, BINARY_PROTOCOL};
use crate::authn::offered_protocols;
use crate::status::ApiError;

/// The framing the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Raw bytes.
    Binary,
    /// Kubernetes' channel framing (v4 or v5).
    Channel,
}

/// The subprotocol to answer with (`None`: the client offered none) and its framing.
pub fn choose(headers: &HeaderMap) -> Result<(Option<&'static str>, Framing), ApiError> {
    let offered = offered_protocols(headers);
    let ours = [
        (BINARY_PROTOCOL, Framing::Binary),
        ("v5.channel.k8s.io", Framing::Channel),
        ("v4.channel.k8s.io", Framing::Channel),
    ];
    let acceptable: Vec<&String> = offered
        .iter()
        .filter(|p| !p.starts_with(crate::authn::BEARER_PROTOCOL_PREFIX))
        .collect();
    if acceptable.is_empty() {
        return Ok((None, Framing::Binary));
    }
    ours.into_iter()
        .find(|(p, _)| acceptable.iter().any(|o| o.as_str() == *p))
        .map(|(p, f)| (Some(p), f))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "none of the offered WebSocket subprotocols is served; use {BINARY_PROTOCOL}"
            ))
        })
}

/// Checks the request is a WebSocket upgrade and returns its `Sec-WebSocket-Accept`.
pub fn accept_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: http::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    if !has(http::header::UPGRADE, "websocket") || !has(http::header::CONNECTION, "upgrade") {
        return Err(ApiError::BadRequest(
            "a console is a WebSocket: send an Upgrade: websocket request".into(),
        ));
    }
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::BadRequest("Sec-WebSocket-Key is missing".into()))?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The 101 answer.
pub fn switching(accept: &str, protocol: Option<&'static str>) -> Response<axum::body::Body> {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(p),
        );
    }
    r
}

/// Client bytes for the agent (`None`: nothing to forward, e.g. a resize on channel 4).
fn from_client(framing: Framing, data: &[u8]) -> Option<Vec<u8>> {
    match framing {
        Framing::Binary => Some(data.to_vec()),
        Framing::Channel => match data.split_first() {
            Some((0, rest)) if !rest.is_empty() => Some(rest.to_vec()),
            _ => None,
        },
    }
}

/// Agent bytes for the client.
fn to_client(framing: Framing, data: &[u8]) -> Vec<u8> {
    match framing {
        Framing::Binary => data.to_vec(),
        Framing::Channel => {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(1);
            v.extend_from_slice(data);
            v
        }
    }
}

/// Upgrades the client connection and copies until either side ends.
pub async fn pipe(upgrade: hyper::upgrade::OnUpgrade, framing: Framing, agent: AgentStream) {
    let upgraded = match upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "the client's upgrade failed");
            return;
        }
    };
    let client = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut c_tx, mut c_rx) = client.split();
    let (mut a_tx, mut a_rx) = agent.split();
    let up = async {
        while let Some(Ok(m)) = c_rx.next().await {
            let bytes = match m {
                Message::Binary(b) => from_client(framing, &b),
                Message::Text(t) => from_client(framing, t.as_bytes()),
                Message::Close(_) => break,
                _ => None,
            };
            if let Some(b) = bytes
                && a_tx.send(Message::binary(b)).await.is_err()
            {
                break;
            }
        }
        let _ = a_tx.close().await;
    };
    let down = async {
        while let Some(Ok(m)) = a_rx.next().await {
            let out = match m {
                Message::Binary(b) => to_client(framing, &b),
                Message::Text(t) => to_client(framing, t.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            if c_tx.send(Message::binary(out)).await.is_err() {
                break;
            }
        }
        let _ = c_tx.close().await;
    };
    // Either side ending ends the console.
    tokio::select! {
        () = up => {},
        () = down => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_protocols(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    #[test]
    fn the_binary_protocol_is_chosen_and_the_token_protocol_never_echoed() {
        let h = with_protocols("base64url.bearer.authorization.k8s.io.dG9r, binary.ironvisor.io");
        assert_eq!(
            choose(&h).unwrap(),
            (Some(BINARY_PROTOCOL), Framing::Binary)
        );
        let h = with_protocols("base64url.bearer.authorization.k8s.io.dG9r");
        assert_eq!(choose(&h).unwrap(), (None, Framing::Binary));
    }

    #[test]
    fn kube_clients_get_channel_framing() {
        let h = with_protocols("v5.channel.k8s.io, v4.channel.k8s.io");
        assert_eq!(
            choose(&h).unwrap(),
            (Some("v5.channel.k8s.io"), Framing::Channel)
        );
        assert_eq!(from_client(Framing::Channel, b"\0ls"), Some(b"ls".to_vec()));
        assert_eq!(from_client(Framing::Channel, b"\x04{}"), None);
        assert_eq!(to_client(Framing::Channel, b"ok"), b"\x01ok");
    }

    #[test]
    fn unknown_protocols_are_a_bad_request() {
        assert!(choose(&with_protocols("chat")).is_err());
    }

    #[test]
    fn a_plain_get_is_not_an_upgrade() {
        assert!(matches!(
            accept_key(&HeaderMap::new()),
            Err(ApiError::BadRequest(_))
        ));
    }
}
