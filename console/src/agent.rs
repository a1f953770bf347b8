//! Dials a host agent's console port: TCP, TLS 1.3 with our client certificate (the agent's
//! certificate must chain to the console CA and name the host), then the WebSocket upgrade
//! the agent bridges to the VM's serial console or VNC socket.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, http::HeaderValue};

use crate::status::ApiError;
use crate::target::{Kind, Placement};

/// The subprotocol of the agent's port (and of the console API): raw bytes in binary frames.
pub const BINARY_PROTOCOL: &str = "binary.ironvisor.io";
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// An open console on the agent.
pub type AgentStream = WebSocketStream<TlsStream<TcpStream>>;

/// What to open.
#[derive(Debug, Clone)]
pub struct Dial<'a> {
    /// `host:port` of the endpoint.
    pub address: &'a str,
    /// The VM's host and uid.
    pub placement: &'a Placement,
    /// The VM's namespace.
    pub namespace: &'a str,
    /// The VM's name.
    pub name: &'a str,
    /// Which console.
    pub kind: Kind,
}

fn unreachable(d: &Dial<'_>, why: impl std::fmt::Display) -> ApiError {
    ApiError::BadGateway(format!(
        "the console agent of host {} at {} is unreachable: {why}",
        d.placement.node, d.address
    ))
}

/// Maps the agent's refusal (before the upgrade) to what the user sees.
fn refused(d: &Dial<'_>, code: u16, body: &str) -> ApiError {
    let body = body.trim();
    match code {
        404 => ApiError::Conflict(format!(
            "VM {}/{} is not running on host {} (it may be moving); retry: {body}",
            d.namespace, d.name, d.placement.node
        )),
        409 => ApiError::Conflict(format!(
            "VM {}/{} has no {} console now: {body}",
            d.namespace,
            d.name,
            d.kind.label()
        )),
        _ => ApiError::BadGateway(format!(
            "the console agent of host {} refused the connection ({code}): {body}",
            d.placement.node
        )),
    }
}

/// Opens the console on the VM's host agent.
pub async fn dial(cfg: Arc<rustls::ClientConfig>, d: &Dial<'_>) -> Result<AgentStream, ApiError> {
    let server_name = ServerName::try_from(d.placement.node.clone())
        .map_err(|_| unreachable(d, "the host name is not a valid TLS server name"))?;
    let work = async {
        let tcp = TcpStream::connect(d.address)
            .await
            .map_err(|e| unreachable(d, e))?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(cfg)
            .connect(server_name, tcp)
            .await
            .map_err(|e| unreachable(d, format!("TLS: {e}")))?;
        let url = format!(
            "wss://{}/v1/namespaces/{}/virtualmachines/{}/{}?uid={}",
            d.placement.node,
            d.namespace,
            d.name,
            d.kind.subresource(),
            d.placement.uid
        );
        let mut req = url
            .into_client_request()
            .map_err(|e| unreachable(d, format!("bad request URL: {e}")))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(BINARY_PROTOCOL),
        );
        match tokio_tungstenite::client_async(req, tls).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(refused(d, resp.status().as_u16(), &body))
            }
            Err(e) => Err(unreachable(d, format!("WebSocket: {e}"))),
        }
    };
    tokio::time::timeout(DIAL_TIMEOUT, work)
        .await
        .map_err(|_| unreachable(d, "timed out"))?
}
