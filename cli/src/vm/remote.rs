//! A VM's console through the Kubernetes API, from any machine with a kubeconfig: a
//! WebSocket to `subresources.ironvisor.io/v1 … virtualmachines/{name}/{console|vnc}`
//! (kube-rs `Client::connect`, the kubeconfig's own credentials), which the API server
//! proxies to the console server. kube-rs speaks Kubernetes' channel framing
//! (`v5.channel.k8s.io`): every frame starts with a channel byte, 0 for what we send
//! (stdin) and 1 for what the console sends (stdout); the console server accepts it.

use futures::{SinkExt as _, StreamExt as _};
use kube::client::{Client, Connection};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

/// Which console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The serial console.
    Serial,
    /// The VNC display (an RFB byte stream).
    Vnc,
}

impl Kind {
    fn subresource(self) -> &'static str {
        match self {
            Kind::Serial => "console",
            Kind::Vnc => "vnc",
        }
    }
}

/// Why the console could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The API (or the console server behind it) refused: its Status message says why.
    #[error("the cluster refused the console of {vm} ({code}): {message}")]
    Refused {
        /// `namespace/name`.
        vm: String,
        /// The HTTP code.
        code: u16,
        /// The Status message.
        message: String,
    },
    /// The connection failed.
    #[error("opening the console of {vm} through the Kubernetes API failed")]
    Connect {
        /// `namespace/name`.
        vm: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The request could not be built (cannot happen for valid names).
    #[error("bad console request for {0}")]
    Request(String),
}

/// The API path of a console.
pub fn path(namespace: &str, name: &str, kind: Kind) -> String {
    format!(
        "/apis/{}/{}/namespaces/{namespace}/virtualmachines/{name}/{}",
        ironvisor_crds::console::SUBRESOURCE_GROUP,
        ironvisor_crds::console::SUBRESOURCE_VERSION,
        kind.subresource()
    )
}

/// Opens the console of `namespace/name`.
pub async fn open(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: Kind,
) -> Result<Connection, RemoteError> {
    let vm = format!("{namespace}/{name}");
    let req = http::Request::get(path(namespace, name, kind))
        .body(Vec::new())
        .map_err(|_| RemoteError::Request(vm.clone()))?;
    client.connect(req).await.map_err(|e| match e {
        kube::Error::Api(s) => RemoteError::Refused {
            vm,
            code: s.code,
            message: s.message,
        },
        source => RemoteError::Connect { vm, source },
    })
}

/// Copies `input` to the console and the console to `output` until either ends. With
/// `escape`, that byte in the input ends the session (like virsh's Ctrl+]).
pub async fn bridge<R, W>(
    conn: Connection,
    mut input: R,
    mut output: W,
    escape: Option<u8>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = conn.into_stream().split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let (data, stop) = match escape.and_then(|e| chunk.iter().position(|b| *b == e)) {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            if !data.is_empty() {
                let mut frame = Vec::with_capacity(data.len() + 1);
                frame.push(0);
                frame.extend_from_slice(data);
                tx.send(Message::binary(frame))
                    .await
                    .map_err(std::io::Error::other)?;
            }
            if stop {
                break;
            }
        }
        let _ = tx.close().await;
        Ok::<_, std::io::Error>(())
    };
    let down = async {
        while let Some(m) = rx.next().await {
            match m.map_err(std::io::Error::other)? {
                Message::Binary(b) => {
                    if let Some((1 | 2, data)) = b.split_first() {
                        output.write_all(data).await?;
                        output.flush().await?;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}
