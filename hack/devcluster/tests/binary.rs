//! The `ironvisor-devcluster` binary: starts fast, writes a kubeconfig, and its `--data-dir`
//! stays readable after `kill -9` in the middle of writes.

use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.ok()?;
    let mut out = vec![];
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

fn spawn(port: u16, dir: &std::path::Path, kubeconfig: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ironvisor-devcluster"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    loop {
        if let Some((200, _)) = send(addr, "GET", "/version", "").await {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the server never answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_survives_kill_9_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kc = dir.path().join("kubeconfig");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = spawn(port, &data, &kc);
    let ready_in = wait_ready(addr).await;
    assert!(ready_in < Duration::from_secs(2), "started in {ready_in:?}");
    let kubeconfig = std::fs::read_to_string(&kc).unwrap();
    assert!(
        kubeconfig.contains(&format!("server: http://127.0.0.1:{port}")),
        "{kubeconfig}"
    );

    let writer = tokio::spawn(async move {
        let mut acked = 0u32;
        for i in 0.. {
            let body = format!(
                r#"{{"metadata":{{"name":"c{i}"}},"data":{{"k":"{}"}}}}"#,
                "x".repeat(2000)
            );
            match send(addr, "POST", "/api/v1/namespaces/default/configmaps", &body).await {
                Some((201, _)) => acked = i + 1,
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = writer.await.unwrap();
    assert!(acked > 10, "the writer got going ({acked} creates)");

    let mut child = spawn(port, &data, &kc);
    wait_ready(addr).await;
    let (code, body) = send(addr, "GET", "/api/v1/namespaces/default/configmaps", "")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let n = list["items"].as_array().map_or(0, |a| a.len()) as u32;
    assert!(
        n >= acked,
        "every acknowledged create survived: {n} stored, {acked} acknowledged"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
