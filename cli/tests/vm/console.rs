//! `ivctl console` away from the VM's host and without a terminal: the serial log the
//! agent's libvirt writes, read-only, and `--follow`.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::common::*;

async fn placed_vm(c: &Cluster) -> std::path::PathBuf {
    let vm = c.create_vm("web", "Always", json!({})).await;
    c.agent_reports(
        "web",
        "Running",
        json!({"domainUUID": "87fd9463-0d86-4566-b980-798b7898ff2a"}),
    )
    .await;
    let uid = vm.metadata.uid.expect("uid");
    c.tmp
        .path()
        .join("state")
        .join("vms")
        .join(uid)
        .join("console.log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_from_its_host_the_console_goes_through_the_api_and_reads_a_local_log_when_asked() {
    let c = Cluster::start().await;
    let log = placed_vm(&c).await;
    let state = c.tmp.path().join("state");
    let state = state.to_str().unwrap();

    // Away from its host ivctl opens the console through the Kubernetes API; this cluster
    // serves no console API, and the refusal says so.
    let out = run(c.ivctl(&[
        "console",
        "web",
        "-n",
        NS,
        "--node-name",
        "host-b",
        "--state-dir",
        state,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: ") && stderr(&out).contains("console of team/web"),
        "{}",
        stderr(&out)
    );

    // --log reads the serial log here when there is one, and names the host when not.
    let out = run(c.ivctl(&[
        "console",
        "web",
        "-n",
        NS,
        "--node-name",
        "host-b",
        "--state-dir",
        state,
        "--log",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is on host host-a (this host is host-b)"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "SeaBIOS\nIRONVISOR-GUEST-UP\n").unwrap();
    let mut cmd = c.ivctl(&["console", "web", "-n", NS, "--state-dir", state, "--log"]);
    cmd.env("NODE_NAME", "host-b");
    let out = run(cmd).await;
    assert_eq!(ok(&out), "SeaBIOS\nIRONVISOR-GUEST-UP\n");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_host_without_a_terminal_the_console_follows_the_log() {
    let c = Cluster::start().await;
    let log = placed_vm(&c).await;
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "boot 1\n").unwrap();
    let state = c.tmp.path().join("state");

    let mut cmd = c.kubectl(&[
        "ironvisor",
        "console",
        "web",
        "-n",
        NS,
        "--follow",
        "--node-name",
        HOST,
        "--state-dir",
    ]);
    cmd.arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut read_until = async |want: &str| {
        let mut buf = [0u8; 256];
        while !seen.contains(want) {
            let n = tokio::time::timeout(TIMEOUT, stdout.read(&mut buf))
                .await
                .expect("output in time")
                .expect("read");
            assert_ne!(n, 0, "the console ended early; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen.clone()
    };
    assert_eq!(read_until("boot 1\n").await, "boot 1\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"login: ")
        .unwrap();
    assert_eq!(read_until("login: ").await, "boot 1\nlogin: ");
    // Truncated (the guest restarted and the log was rotated): read again from the start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&log, "boot 2\n").unwrap();
    assert_eq!(read_until("boot 2\n").await, "boot 1\nlogin: boot 2\n");
    child.start_kill().unwrap();
    let _ = child.wait().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_host_a_stopped_vm_shows_its_log_with_the_reason() {
    let c = Cluster::start().await;
    let log = placed_vm(&c).await;
    c.agent_reports("web", "Stopped", json!({})).await;
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "reboot: Power down\n").unwrap();
    let state = c.tmp.path().join("state");
    let mut cmd = c.ivctl(&[
        "console",
        "web",
        "-n",
        NS,
        "--node-name",
        HOST,
        "--state-dir",
    ]);
    cmd.arg(&state);
    let out = run(cmd).await;
    assert_eq!(ok(&out), "reboot: Power down\n");
    assert_eq!(
        stderr(&out),
        "team/web is not running (Stopped); showing its serial log read-only\n"
    );
    c.stop().await;
}
