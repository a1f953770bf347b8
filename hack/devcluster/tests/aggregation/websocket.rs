//! A WebSocket client through the devcluster's TLS port (tokio-tungstenite over tokio-rustls,
//! trusting the devcluster's CA, with a bearer token), as a console client would connect.

use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Opens `path` on `https_url` with `token`, subprotocol `binary.ironvisor.io`; the error
/// carries the HTTP status when the upgrade is refused.
pub async fn connect(
    https_url: &str,
    ca_pem: &str,
    token: &str,
    path: &str,
) -> Result<WebSocketStream<Tls>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = https_url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut req = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "binary.ironvisor.io".parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!(
                "{} {}",
                r.status(),
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default())
            ),
            e => e.to_string(),
        })?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("binary.ironvisor.io")
    );
    Ok(ws)
}

/// The next text frame.
pub async fn next_text(ws: &mut WebSocketStream<Tls>) -> String {
    match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Sends a binary frame and returns the binary frame that comes back.
pub async fn echo_binary(ws: &mut WebSocketStream<Tls>, payload: Vec<u8>) -> Vec<u8> {
    ws.send(Message::binary(payload)).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(b))) => b.to_vec(),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}
