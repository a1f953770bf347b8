//! Hostile requests to the proxy: relative and encoded path segments never reach the backend
//! (whatever the caller may do), and oversized headers are refused without harming the server.

use super::{GROUP, VERSION, path, setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw `request` bytes to the plain port and returns the status code of the answer
/// (`None` when the server closed the connection without one).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(request).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_and_encoded_paths_never_reach_the_backend() {
    let s = setup().await;
    let token = s.h.cluster.token_for("root", &["system:masters"]);
    for p in [
        path("/namespaces/t1/things/x/../../../../../../api/v1/secrets"),
        path("/namespaces/t1/things/%2e%2e/%2E%2E/hidden"),
        path("/namespaces/t1/things/a%2fb"),
        path("/namespaces/t1//things/x"),
    ] {
        let req = format!(
            "GET {p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            raw(s.h.cluster.addr(), req.as_bytes()).await,
            Some(400),
            "{p}"
        );
    }
    let reached = s.backend.all_paths();
    assert!(
        !reached.iter().any(|p| p.contains("secrets")
            || p.contains("hidden")
            || p.contains("a%2f")
            || p.contains("//")),
        "{reached:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_server_keeps_serving() {
    let s = setup().await;
    let token = s.h.cluster.token_for("root", &["system:masters"]);
    let huge = "a".repeat(1024 * 1024);
    let req = format!(
        "GET /apis/{GROUP}/{VERSION}/namespaces/t1/things/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Big: {huge}\r\n\r\n"
    );
    let code = raw(s.h.cluster.addr(), req.as_bytes()).await;
    assert!(code.is_none() || code == Some(431), "{code:?}");
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!(
        "GET /apis/{GROUP}/{VERSION}/namespaces/t1/things/many HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{many}\r\n"
    );
    let code = raw(s.h.cluster.addr(), req.as_bytes()).await;
    assert!(code.is_none() || code == Some(431), "{code:?}");
    assert!(
        !s.backend
            .all_paths()
            .iter()
            .any(|p| p.ends_with("/big") || p.ends_with("/many"))
    );
    s.h.ok(&["get", "--raw", &path("/namespaces/t1/things/after")])
        .await;
}
