//! Talking to an agent's console port as the console server does, with tools every machine
//! has: the console server's certificate from the Secret the operator issues it into
//! (`ironvisor-console-tls`), and `openssl s_client` for mutual TLS 1.3 carrying one
//! WebSocket upgrade. Only the start of the bridged stream is read (a VNC display's RFB
//! greeting arrives unmasked in the first server frame).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::system::{System, wait_for};

/// The operator's namespace, where it keeps the console PKI.
const NAMESPACE: &str = "ironvisor-system";

/// Wait until the operator signed `node`'s console certificate and issued the console
/// server's, and write the console server's key, certificate and the CA under `dir`.
pub fn console_server_identity(sys: &System, node: &str, dir: &Path, timeout: Duration) -> PathBuf {
    sys.wait_console_certificate(node);
    let out = dir.join("console-server");
    std::fs::create_dir_all(&out).expect("identity dir");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let pem = wait_for(&format!("ironvisor-console-tls {key}"), timeout, || {
            let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
            let o = sys.kubectl(&[
                "get",
                "secret",
                "ironvisor-console-tls",
                "-n",
                NAMESPACE,
                "-o",
                &template,
            ]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if o.status.success() && text.contains("-----BEGIN") {
                Ok(text)
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        });
        std::fs::write(out.join(key), pem).expect("write the identity");
    }
    out
}

/// Open `path` (e.g. `/v1/namespaces/ns/virtualmachines/vm/vnc?uid=…`) on the console port
/// at `address` with the identity in `identity` (from [`console_server_identity`]) and
/// return what arrived until `needle` did (or the deadline passed).
pub fn open_and_read(
    identity: &Path,
    address: &str,
    path: &str,
    needle: &str,
    timeout: Duration,
) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-tls1_3", "-verify_return_error"])
        .args(["-connect", address])
        .arg("-cert")
        .arg(identity.join("tls.crt"))
        .arg("-key")
        .arg(identity.join("tls.key"))
        .arg("-CAfile")
        .arg(identity.join("ca.crt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs (Debian's openssl package)");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary.ironvisor.io\r\n\r\n"
    );
    // Stdin stays open until the end: the connection lives while we read.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.as_bytes())
        .expect("send the request");
    stdin.flush().expect("send the request");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => got.extend(bytes),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    drop(stdin);
    let text = String::from_utf8_lossy(&got).into_owned();
    if text.contains(needle) {
        text
    } else {
        format!("{text}\n[openssl: {err}]")
    }
}
