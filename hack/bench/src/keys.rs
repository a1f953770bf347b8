//! Keystrokes and their echoes on a guest's serial console, by two paths:
//! - [`ApiSession`]: through the API server, as `ivctl console` connects (kube-rs
//!   `Client::connect` with the user's token → the API server's aggregation → the console
//!   server → the agent's mTLS console port → libvirt's console stream), Kubernetes' channel
//!   framing (`v5.channel.k8s.io`: byte 0 = stdin, 1 = stdout);
//! - [`DirectSession`]: on the host, libvirt's console stream of the domain
//!   (`virDomainOpenConsole`, what `virsh console` opens), blocking calls.
//!
//! A keystroke is one byte; it has been echoed when that byte comes back after it was sent.

use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};
use ivctl::vm::remote::{self, Kind, RemoteError};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use virt::connect::Connect;

/// How long an echo may take before the round counts as failed.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(30);

type Tx = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;
type Rx = Pin<Box<dyn Stream<Item = Result<Message, WsError>> + Send>>;

/// A serial console opened through the Kubernetes API.
pub struct ApiSession {
    tx: Tx,
    rx: Rx,
}

impl ApiSession {
    /// Open the serial console of `ns/name` as `client`'s user (refusals as errors, with the
    /// code: 403 forbidden, 404 not found, 409 busy).
    pub async fn open(client: &kube::Client, ns: &str, name: &str) -> Result<Self, RemoteError> {
        let conn = remote::open(client, ns, name, Kind::Serial).await?;
        let (tx, rx) = conn.into_stream().split();
        Ok(Self {
            tx: Box::pin(tx),
            rx: Box::pin(rx),
        })
    }

    /// Send `bytes` to the guest.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        tracing::debug!(path = "api", sent = ?String::from_utf8_lossy(bytes));
        let mut frame = Vec::with_capacity(bytes.len() + 1);
        frame.push(0);
        frame.extend_from_slice(bytes);
        self.tx
            .send(Message::binary(frame))
            .await
            .context("sending to the console through the API")
    }

    /// Read the guest's output until `done` says what was read so far is enough (or
    /// `timeout`); returns it.
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[u8]) -> bool,
    ) -> anyhow::Result<Vec<u8>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&seen) {
            let next = tokio::time::timeout_at(deadline, self.rx.next()).await;
            match next {
                Err(_) => anyhow::bail!(
                    "no answer through the API within {timeout:?}; got {:?}",
                    String::from_utf8_lossy(&seen)
                ),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    anyhow::bail!("the console server closed the console")
                }
                Ok(Some(Err(e))) => return Err(e).context("reading the console through the API"),
                Ok(Some(Ok(Message::Binary(b)))) => {
                    if let Some((1 | 2, data)) = b.split_first() {
                        tracing::debug!(path = "api", got = ?String::from_utf8_lossy(data));
                        seen.extend_from_slice(data);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        Ok(seen)
    }

    /// One keystroke: the time from sending `key` until it comes back.
    pub async fn keystroke(&mut self, key: u8) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.send(&[key]).await?;
        self.read_until(ECHO_TIMEOUT, |s| s.contains(&key)).await?;
        Ok(t.elapsed())
    }

    /// Type [`PROBE`] until the guest's shell answers it (resent every 500 ms while the
    /// guest boots and nothing reads its serial port yet).
    pub async fn probe(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            self.send(PROBE).await?;
            match self.read_until(Duration::from_millis(500), answered).await {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() < deadline => {}
                Err(e) => return Err(e).context("the guest's shell never answered"),
            }
        }
    }

    /// Close the WebSocket (the console server then lets the console go).
    pub async fn close(mut self) {
        let _ = self.tx.close().await;
    }
}

/// A serial console opened directly on the host through libvirt.
pub struct DirectSession {
    stream: Option<virt::stream::Stream>,
    conn: Option<Connect>,
}

impl DirectSession {
    /// Open the console of running `domain` on `uri` (not forced: fails while another
    /// client holds it).
    pub fn open(uri: &str, domain: &str) -> anyhow::Result<Self> {
        // libvirt's default handler prints every error (a busy console while the other path
        // lets go is expected and retried); the error is returned all the same.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).with_context(|| format!("connecting to {uri}"))?;
        let mut s = Self {
            stream: None,
            conn: Some(conn),
        };
        let conn = s.conn.as_ref().context("just set")?;
        let dom = conn
            .lookup_domain_by_name(domain)
            .with_context(|| format!("no domain {domain} on {uri}"))?;
        let stream = virt::stream::Stream::new(conn, 0).context("a libvirt stream")?;
        dom.open_console(None, &stream, 0)
            .with_context(|| format!("opening the console of {domain}"))?;
        s.stream = Some(stream);
        Ok(s)
    }

    fn stream(&self) -> anyhow::Result<&virt::stream::Stream> {
        self.stream.as_ref().context("the console is closed")
    }

    /// Send `bytes` to the guest.
    pub fn send(&self, mut bytes: &[u8]) -> anyhow::Result<()> {
        tracing::debug!(path = "direct", sent = ?String::from_utf8_lossy(bytes));
        while !bytes.is_empty() {
            let n = self
                .stream()?
                .send(bytes)
                .context("writing to the console")?;
            let n = usize::try_from(n).unwrap_or(0).min(bytes.len());
            anyhow::ensure!(n > 0, "the console stream took no bytes");
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Read until `done` says what was read so far is enough. Blocks: a guest that never
    /// answers holds it (the stream has no timeout; the caller bounds the run).
    pub fn read_until(&self, done: impl Fn(&[u8]) -> bool) -> anyhow::Result<Vec<u8>> {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while !done(&seen) {
            let n = self
                .stream()?
                .recv(&mut buf)
                .context("reading the console")?;
            let n = usize::try_from(n).unwrap_or(0);
            anyhow::ensure!(n > 0, "the console stream ended (the guest stopped?)");
            tracing::debug!(path = "direct", got = ?String::from_utf8_lossy(&buf[..n]));
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(seen)
    }

    /// One keystroke: the time from sending `key` until it comes back.
    pub fn keystroke(&self, key: u8) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.send(&[key])?;
        self.read_until(|s| s.contains(&key))?;
        Ok(t.elapsed())
    }
}

impl Drop for DirectSession {
    fn drop(&mut self) {
        // The stream before its connection (as virsh does on exit: abort).
        if let Some(s) = self.stream.take() {
            let _ = s.abort();
        }
        self.conn.take();
    }
}

/// Whether `seen` shows a new shell prompt: after its last newline, `# ` (root's prompt
/// `/ # `, which busybox may follow with its cursor-position query `ESC[6n`).
pub fn at_prompt(seen: &[u8]) -> bool {
    match seen.iter().rposition(|&b| b == b'\n') {
        Some(i) => seen[i..].windows(2).any(|w| w == b"# "),
        None => false,
    }
}

/// The first keys of a session, not timed: `#` makes the line a comment (Enter runs
/// nothing), and the session waits for the echo of `Z` (in no prompt, answer or timed key):
/// everything the guest wrote before has then been read.
pub const SYNC: &[u8] = b"#Z";

/// Whether the echo of [`SYNC`] has arrived.
pub fn synced(seen: &[u8]) -> bool {
    seen.contains(&b'Z')
}

/// The shell's answer to [`PROBE`]: only the guest's shell computes it (its echo of the
/// command line shows `$((6*7))`).
pub const ANSWER: &[u8] = b"IVBENCH-42";

/// A command line whose output is [`ANSWER`].
pub const PROBE: &[u8] = b"echo IVBENCH-$((6*7))\r";

/// Whether `seen` holds [`ANSWER`].
pub fn answered(seen: &[u8]) -> bool {
    seen.windows(ANSWER.len()).any(|w| w == ANSWER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_follows_a_newline() {
        assert!(at_prompt(b"\r\n/ # "));
        assert!(
            at_prompt(b"#Zabc\r\n/ # \x1b[6n"),
            "busybox asks for the cursor"
        );
        assert!(
            !at_prompt(b"/ # "),
            "no newline: the line before is still echoing"
        );
        assert!(!at_prompt(b"\r\n/ #abc"));
        assert!(!at_prompt(b"\r\nsh: x: not found\r\n"));
    }

    #[test]
    fn nothing_but_the_sync_key_passes_for_its_echo() {
        assert!(!synced(b"\r\n/ # \x1b[6n#"));
        assert!(!synced(b"IVBENCH-42\r\n"));
        assert!(synced(b"#Z"));
    }

    #[test]
    fn the_probe_echo_is_not_the_answer() {
        assert!(!answered(PROBE));
        assert!(answered(b"echo IVBENCH-$((6*7))\r\nIVBENCH-42\r\n/ # "));
    }
}
