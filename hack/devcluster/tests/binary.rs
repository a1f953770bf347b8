//! The `ironvisor-devcluster` binary: starts fast, writes a kubeconfig, and its `--data-dir`
//! stays readable after `kill -9` in the middle of writes.

use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

fn spawn(dir: &std::path::Path, kubeconfig: &std::path::Path) -> Child {
    // Port 0: the kernel picks a free port and the kubeconfig says which. (A port picked by
    // the test and released before the server binds can be taken by another test meanwhile.)
    Command::new(env!("CARGO_BIN_EXE_ironvisor-devcluster"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Wait until the server named by the kubeconfig `child` writes answers: its address and how
/// long that took since `t`.
async fn wait_ready(
    child: &mut Child,
    kubeconfig: &std::path::Path,
    t: Instant,
) -> (SocketAddr, Duration) {
    loop {
        let port = std::fs::read_to_string(kubeconfig).ok().and_then(|text| {
            let rest = text.split("server: http://127.0.0.1:").nth(1)?;
            rest.lines().next()?.trim().parse::<u16>().ok()
        });
        if let Some(port) = port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Some((200, _)) = send(addr, "GET", "/version", "").await {
                return (addr, t.elapsed());
            }
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server never answered");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_survives_kill_9_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kc = dir.path().join("kubeconfig");
    let t = Instant::now();
    let mut child = spawn(&data, &kc);
    let (addr, ready_in) = wait_ready(&mut child, &kc, t).await;
    assert!(ready_in < Duration::from_secs(2), "started in {ready_in:?}");

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

    std::fs::remove_file(&kc).unwrap();
    let mut child = spawn(&data, &kc);
    let (addr, _) = wait_ready(&mut child, &kc, Instant::now()).await;
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
