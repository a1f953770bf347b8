//! Bad input, persistence and raw protocol behaviour, over plain HTTP/1.1.

use ironvisor_devcluster::{DevCluster, Options};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one request and returns (status, body).
async fn send(addr: SocketAddr, method: &str, path: &str, ct: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a large body; ignore a reset while writing.
    let _ = s.write_all(body).await;
    let mut out = vec![];
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

const CM: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_oversized_413_unknown_resources_404() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let a = c.addr();
    let (code, body) = send(a, "POST", CM, "application/json", b"{\"metadata\": ").await;
    assert_eq!(code, 400, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("BadRequest"))
    );
    let (code, _) = send(a, "POST", CM, "application/yaml", b"metadata: [unclosed\n").await;
    assert_eq!(code, 400);
    let big = vec![b'a'; 4 * 1024 * 1024];
    let (code, _) = send(a, "POST", CM, "application/json", &big).await;
    assert_eq!(code, 413);
    let (code, body) = send(a, "GET", "/apis/nope.io/v1/things", "application/json", b"").await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = send(a, "GET", &format!("{CM}/missing"), "application/json", b"").await;
    assert_eq!(code, 404);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["message"], "configmaps \"missing\" not found");
    assert_eq!(
        status["details"],
        json!({"name": "missing", "kind": "configmaps"})
    );
    let (code, _) = send(a, "PATCH", &format!("{CM}/missing"), "text/plain", b"{}").await;
    assert_eq!(code, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_resource_version_is_a_409_conflict() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let a = c.addr();
    let (code, body) = send(
        a,
        "POST",
        CM,
        "application/json",
        br#"{"metadata":{"name":"x"},"data":{"k":"1"}}"#,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let mut upd = created.clone();
    upd["data"]["k"] = json!("2");
    let (code, _) = send(
        a,
        "PUT",
        &format!("{CM}/x"),
        "application/json",
        upd.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 200);
    upd["data"]["k"] = json!("3");
    let (code, body) = send(
        a,
        "PUT",
        &format!("{CM}/x"),
        "application/json",
        upd.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 409);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "Conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_with_a_data_dir_and_a_torn_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let c = DevCluster::start(opts.clone()).await.unwrap();
    let (code, _) = send(
        c.addr(),
        "POST",
        CM,
        "application/json",
        br#"{"metadata":{"name":"kept"},"data":{"k":"v"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = send(
        c.addr(),
        "POST",
        CM,
        "application/json",
        br#"{"metadata":{"name":"gone"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = send(
        c.addr(),
        "DELETE",
        &format!("{CM}/gone"),
        "application/json",
        b"",
    )
    .await;
    assert_eq!(code, 200);
    c.shutdown().await;
    // A kill -9 in the middle of an append leaves a partial last line.
    let log = dir.path().join("state.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"deadbeef {\"k\":\"configmaps.\",\"o\":{\"metad").unwrap();
    drop(f);
    let c = DevCluster::start(opts).await.unwrap();
    let (code, body) = send(
        c.addr(),
        "GET",
        &format!("{CM}/kept"),
        "application/json",
        b"",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let kept: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(kept["data"]["k"], "v");
    let (code, _) = send(
        c.addr(),
        "GET",
        &format!("{CM}/gone"),
        "application/json",
        b"",
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = send(
        c.addr(),
        "POST",
        CM,
        "application/json",
        br#"{"metadata":{"name":"next"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    let next: Value = serde_json::from_str(&body).unwrap();
    let rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        rv(&next) > rv(&kept),
        "resourceVersions keep increasing across restarts"
    );
}

fn runtime() -> &'static (tokio::runtime::Runtime, DevCluster) {
    static RT: std::sync::OnceLock<(tokio::runtime::Runtime, DevCluster)> =
        std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let c = rt.block_on(DevCluster::start_ephemeral()).unwrap();
        (rt, c)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Arbitrary bodies, content types and paths never crash the server: every answer is a
    /// well-formed HTTP response below 500, and the server still answers afterwards.
    #[test]
    fn request_decoding_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        json_like in "[\\{\\}\\[\\]\":,a-z0-9 ]{0,64}",
        ct in prop::sample::select(vec!["application/json", "application/yaml", "application/merge-patch+json",
            "application/json-patch+json", "application/apply-patch+yaml", "application/strategic-merge-patch+json"]),
        method in prop::sample::select(vec!["POST", "PUT", "PATCH", "DELETE"]),
        path in prop::sample::select(vec![CM, "/api/v1/namespaces/default/configmaps/x",
            "/api/v1/namespaces", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "/api/v1/namespaces/default/configmaps/x/status", "/apis/coordination.k8s.io/v1/namespaces/default/leases/l"]),
    ) {
        let (rt, c) = runtime();
        let with_field = if method == "PATCH" { format!("{path}?fieldManager=fuzz") } else { path.to_string() };
        for b in [body.clone(), json_like.into_bytes()] {
            let (code, _) = rt.block_on(send(c.addr(), method, &with_field, ct, &b));
            prop_assert!((200..500).contains(&code), "{} {} -> {}", method, path, code);
        }
        let (code, _) = rt.block_on(send(c.addr(), "GET", "/version", "application/json", b""));
        prop_assert_eq!(code, 200);
    }
}
