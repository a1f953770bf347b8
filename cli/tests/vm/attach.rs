//! `ivctl console` on the VM's host with a terminal attaches the real `virsh console` to a
//! real domain on `qemu:///system` (a diskless 32 MiB guest that the test defines and
//! destroys; it never touches another domain). The terminal is `script`'s pty.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use crate::common::*;

const URI: &str = "qemu:///system";

/// A running diskless domain with a pty serial console; destroyed and undefined on drop.
struct Domain {
    name: String,
    uuid: String,
}

impl Domain {
    async fn start() -> Self {
        let uuid = uuid_v4();
        let name = format!("ivctl-console-test-{}", &uuid[..8]);
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>32</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console></devices>
</domain>"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("domain.xml");
        std::fs::write(&file, xml).unwrap();
        let out = Command::new("virsh")
            .args(["-c", URI, "create"])
            .arg(&file)
            .output()
            .await
            .expect("virsh runs (libvirt-clients)");
        assert!(
            out.status.success(),
            "starting a domain on {URI} (is libvirtd running? hack/start-libvirtd.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name, uuid }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // Transient domain: destroy also removes it.
        let _ = std::process::Command::new("virsh")
            .args(["-c", URI, "destroy", &self.name])
            .output();
    }
}

fn uuid_v4() -> String {
    let bytes = std::fs::read("/proc/sys/kernel/random/uuid").expect("kernel uuid");
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_host_with_a_terminal_the_console_attaches_virsh_to_the_domain_by_uuid() {
    let c = Cluster::start().await;
    let domain = Domain::start().await;
    c.create_vm("web", "Always", json!({})).await;
    c.agent_reports("web", "Running", json!({"domainUUID": domain.uuid}))
        .await;

    let ivctl = env!("CARGO_BIN_EXE_ivctl");
    let line = format!(
        "{ivctl} console web -n {NS} --node-name {HOST} --libvirt-uri {URI} --state-dir /nonexistent"
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("script runs (bsdutils)");
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    let want = format!("Connected to domain '{}'", domain.name);
    while !seen.contains(&want) {
        let n = tokio::time::timeout(TIMEOUT, out.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in time; got {seen:?}"))
            .expect("read");
        assert_ne!(n, 0, "ended before attaching: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.contains(&format!(
            "Attaching to the serial console of team/web (domain {}); detach with Ctrl+]",
            domain.uuid
        )),
        "{seen:?}"
    );
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    drop(domain);
    c.stop().await;
}
