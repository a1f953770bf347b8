//! The console port against hostile and honest clients, bridged to an in-memory echo
//! console (no libvirt): mTLS with the console CA and CN `ironvisor-console` only, the
//! WebSocket upgrade exactly as specified, refusals as HTTP statuses, and a bound on
//! connections.

mod console_support;

use async_trait::async_trait;
use console_support::*;
use ironvisor_agent::console::backend::{Backend, OpenError, Session};
use ironvisor_agent::console::metrics::ConsoleMetrics;
use ironvisor_agent::console::request::{Kind, Target};
use ironvisor_agent::console::server::{self, Port};
use ironvisor_agent::console::tls::{TlsState, server_config};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const UID: &str = "6f1d3c2a-0000-4000-8000-000000000001";

/// Echoes what it is sent, prefixed, for VM `team-a/web` with uid [`UID`]; no display.
struct Echo;

#[async_trait]
impl Backend for Echo {
    async fn open(&self, t: &Target) -> Result<Box<dyn Session>, OpenError> {
        let vm = format!("{}/{}", t.namespace, t.name);
        if (t.namespace.as_str(), t.name.as_str(), t.uid.as_str()) != ("team-a", "web", UID) {
            return Err(OpenError::NotHere(vm));
        }
        if t.kind == Kind::Vnc {
            return Err(OpenError::NoDisplay(vm));
        }
        let (ours, theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(ours);
            let mut buf = [0u8; 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0
                    || w.write_all(b"echo:").await.is_err()
                    || w.write_all(&buf[..n]).await.is_err()
                {
                    break;
                }
            }
        });
        Ok(Box::new(theirs))
    }
}

struct Fixture {
    ca: TestCa,
    addr: SocketAddr,
    port: Arc<Port>,
}

async fn start(max_connections: usize) -> Fixture {
    let ca = TestCa::new("console test CA");
    let tls = Arc::new(TlsState::default());
    tls.set(Some(
        server_config(&ca.material(&ca.server("host-a"))).unwrap(),
    ));
    let port = Arc::new(Port {
        tls,
        backend: Arc::new(Echo),
        counter: None,
        limit: Arc::new(tokio::sync::Semaphore::new(max_connections)),
        metrics: Arc::new(ConsoleMetrics::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, port.clone()));
    Fixture { ca, addr, port }
}

fn serial_path(uid: &str) -> String {
    format!("/v1/namespaces/team-a/virtualmachines/web/console?uid={uid}")
}

#[tokio::test]
async fn the_console_server_certificate_gets_a_websocket_that_carries_bytes_both_ways() {
    let f = start(8).await;
    let client = connector(&f.ca.pem(), Some(&f.ca.client("ironvisor-console")));
    let mut ws = connect(f.addr, &client, &serial_path(UID)).await.unwrap();
    send(&mut ws, b"hello\n").await;
    let got = read_until(&mut ws, b"echo:hello\n", Duration::from_secs(10)).await;
    assert_eq!(got, b"echo:hello\n");
    let bridged = f.port.metrics.bridged.with_label_values(&["serial"]).get();
    assert_eq!(bridged, 1);
}

#[tokio::test]
async fn a_client_without_a_certificate_or_from_another_ca_fails_the_handshake() {
    let f = start(8).await;
    let none = connector(&f.ca.pem(), None);
    match connect(f.addr, &none, &serial_path(UID)).await {
        Err(Refused::Transport(_)) => {}
        other => panic!("no client certificate must fail TLS, got {other:?}"),
    }
    let stranger = TestCa::new("another CA");
    let foreign = connector(&f.ca.pem(), Some(&stranger.client("ironvisor-console")));
    match connect(f.addr, &foreign, &serial_path(UID)).await {
        Err(Refused::Transport(_)) => {}
        other => panic!("a foreign CA's certificate must fail TLS, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ca_signed_certificate_with_another_name_is_forbidden() {
    let f = start(8).await;
    for cn in ["hypervisor:host-b", "ironvisor-console-x", "admin"] {
        let client = connector(&f.ca.pem(), Some(&f.ca.client(cn)));
        match connect(f.addr, &client, &serial_path(UID)).await {
            Err(Refused::Http(403, body)) => assert!(body.contains("console server"), "{body}"),
            other => panic!("{cn}: expected 403, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wrong_uids_unknown_vms_and_traversal_are_not_found_and_no_display_is_a_conflict() {
    let f = start(8).await;
    let client = connector(&f.ca.pem(), Some(&f.ca.client("ironvisor-console")));
    for path in [
        serial_path("6f1d3c2a-0000-4000-8000-000000000002"),
        format!("/v1/namespaces/team-b/virtualmachines/web/console?uid={UID}"),
        format!("/v1/namespaces/team-a/virtualmachines/../../etc/console?uid={UID}"),
        format!("/v1/namespaces/team-a/virtualmachines/%2e%2e/console?uid={UID}"),
        format!("/v1/namespaces/team-a/virtualmachines/web/exec?uid={UID}"),
        "/metrics".to_owned(),
    ] {
        match connect(f.addr, &client, &path).await {
            Err(Refused::Http(404, _)) => {}
            other => panic!("{path}: expected 404, got {other:?}"),
        }
    }
    match connect(
        f.addr,
        &client,
        "/v1/namespaces/team-a/virtualmachines/web/console",
    )
    .await
    {
        Err(Refused::Http(400, body)) => assert!(body.contains("uid"), "{body}"),
        other => panic!("no uid: expected 400, got {other:?}"),
    }
    let vnc = format!("/v1/namespaces/team-a/virtualmachines/web/vnc?uid={UID}");
    match connect(f.addr, &client, &vnc).await {
        Err(Refused::Http(409, body)) => assert!(body.contains("display"), "{body}"),
        other => panic!("no display: expected 409, got {other:?}"),
    }
}

/// Raw bytes after the TLS handshake: what a hand-written client would send.
async fn raw(f: &Fixture, request: &[u8]) -> String {
    let client = connector(&f.ca.pem(), Some(&f.ca.client("ironvisor-console")));
    let tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = client.connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn plain_http_other_methods_and_oversized_heads_are_refused_with_a_status() {
    let f = start(8).await;
    let get = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", serial_path(UID));
    assert!(raw(&f, get.as_bytes()).await.starts_with("HTTP/1.1 400 "));
    let post = format!("POST {} HTTP/1.1\r\nHost: x\r\n\r\n", serial_path(UID));
    assert!(raw(&f, post.as_bytes()).await.starts_with("HTTP/1.1 405 "));
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(raw(&f, huge.as_bytes()).await.starts_with("HTTP/1.1 400 "));
    let wrong_protocol = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: base64.channel.k8s.io\r\n\r\n",
        serial_path(UID)
    );
    let answer = raw(&f, wrong_protocol.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("binary.ironvisor.io"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_bound_are_closed_at_once_and_the_port_recovers() {
    let f = start(1).await;
    let client = connector(&f.ca.pem(), Some(&f.ca.client("ironvisor-console")));
    let mut held = connect(f.addr, &client, &serial_path(UID)).await.unwrap();
    match connect(f.addr, &client, &serial_path(UID)).await {
        Err(Refused::Transport(_)) => {}
        other => panic!("a connection over the bound must be closed, got {other:?}"),
    }
    assert!(
        f.port
            .metrics
            .refused
            .with_label_values(&["over_limit"])
            .get()
            >= 1
    );
    send(&mut held, b"still here\n").await;
    assert_eq!(
        read_until(&mut held, b"echo:still here\n", Duration::from_secs(10)).await,
        b"echo:still here\n"
    );
    drop(held);
    // The permit comes back when the bridge ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connect(f.addr, &client, &serial_path(UID)).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("never recovered: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn without_a_certificate_yet_the_port_closes_every_connection() {
    let f = start(8).await;
    f.port.tls.set(None);
    let client = connector(&f.ca.pem(), Some(&f.ca.client("ironvisor-console")));
    match connect(f.addr, &client, &serial_path(UID)).await {
        Err(Refused::Transport(_)) => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
}
