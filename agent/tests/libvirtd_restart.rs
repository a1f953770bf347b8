//! libvirtd killed and restarted under a running agent: the agent notices, reports itself
//! not ready, reconnects on its own (with backoff), and converges what changed meanwhile.
//!
//! The shared system libvirtd must not be restarted under other tests, so this test runs a
//! private libvirtd of its own: a session daemon (QEMU driver, TCG) as the unprivileged user
//! `nobody`, with its socket in a temporary directory, reached by root through
//! `qemu+unix:///session?socket=…`. Its domains survive a daemon restart, as on a host.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_crds::common::{condition_is_true, condition_type};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use kube::api::DeleteParams;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// A libvirtd of this test's own.
struct PrivateLibvirtd {
    dir: PathBuf,
    daemon: Option<Child>,
}

impl PrivateLibvirtd {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ironvisor-libvirtd-")
            .tempdir_in("/var/tmp")
            .expect("temp dir")
            .keep();
        for d in [dir.clone(), dir.join("home"), dir.join("run")] {
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).expect("chown");
        }
        let mut me = Self { dir, daemon: None };
        me.start();
        me
    }

    fn uri(&self) -> String {
        format!(
            "qemu+unix:///session?socket={}",
            self.dir.join("run/libvirt/libvirt-sock").display()
        )
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("libvirtd.log"))
            .expect("log");
        let child = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "libvirtd",
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.dir.join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("setpriv and libvirtd are installed (libvirt-daemon-system)");
        self.daemon = Some(child);
        let start = Instant::now();
        while virt::connect::Connect::open(Some(&self.uri())).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the private libvirtd did not answer; its log:\n{}",
                std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL the daemon (its guests keep running).
    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill().expect("SIGKILL");
            d.wait().expect("reaped");
        }
    }
}

impl Drop for PrivateLibvirtd {
    fn drop(&mut self) {
        if self.daemon.is_some()
            && let Ok(conn) = virt::connect::Connect::open(Some(&self.uri()))
        {
            for d in conn.list_all_domains(0).unwrap_or_default() {
                let _ = d.destroy();
                let _ = d.undefine();
            }
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec() -> serde_json::Value {
    serde_json::json!({"memory": {"size": "64Mi"}, "terminationGracePeriodSeconds": 0})
}

fn phase(v: &VirtualMachine) -> Option<Phase> {
    v.status.as_ref().and_then(|s| s.phase)
}

fn running(v: &VirtualMachine) -> bool {
    phase(v) == Some(Phase::Running)
        && v.status
            .as_ref()
            .is_some_and(|s| condition_is_true(&s.conditions, condition_type::READY))
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Create a VM and, before confirming its placement (the agent waits for that), its
/// directory owned by `nobody`: the session daemon's virtlogd writes the console log there.
async fn place_with_dir(c: &Cluster, state_dir: &Path, ns: &str, name: &str, node: &str) {
    common::cluster::create_namespace(&c.client, ns).await;
    let vm: VirtualMachine = serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "labels": {ironvisor_crds::labels::NODE: node}},
        "spec": spec(),
    }))
    .expect("VM");
    let vm = c
        .vms(ns)
        .create(&Default::default(), &vm)
        .await
        .expect("created");
    let dir = state_dir.join("vms").join(vm.metadata.uid.expect("uid"));
    std::fs::create_dir_all(&dir).expect("VM dir");
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    c.confirm(ns, name, node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_after_libvirtd_restarts_and_converges() {
    let mut lv = PrivateLibvirtd::new();
    let uri = lv.uri();
    let state_dir = lv.dir.join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let metrics = free_port();
    let node = "node-lvrestart";
    let c = Cluster::start(node, &uri, |cfg| {
        cfg.state_dir = state_dir.clone();
        cfg.metrics_addr = Some(metrics);
    })
    .await;
    let ns = "it-lvrestart";
    place_with_dir(&c, &state_dir, ns, "a", node).await;
    let a = c.wait_vm(ns, "a", "a Running", running).await;
    let uuid = a.status.as_ref().and_then(|s| s.domain_uuid.clone());
    wait_for("/readyz to answer 200", || async {
        (get(metrics, "/readyz").await?.0 == 200).then_some(())
    })
    .await;

    lv.kill();
    wait_for("/readyz to report the lost connection", || async {
        let (code, body) = get(metrics, "/readyz").await?;
        (code == 503 && body.contains("libvirt")).then_some(())
    })
    .await;
    // Changes while libvirtd is away: a new VM, and a running one to stop.
    place_with_dir(&c, &state_dir, ns, "b", node).await;
    c.merge(
        ns,
        "a",
        serde_json::json!({"spec": {"runStrategy": "Halted"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    lv.start();

    let b = c
        .wait_vm(ns, "b", "b Running after the restart", running)
        .await;
    assert!(
        b.status
            .as_ref()
            .and_then(|s| s.domain_uuid.clone())
            .is_some()
    );
    let a = c
        .wait_vm(ns, "a", "a Stopped after the restart", |v| {
            phase(v) == Some(Phase::Stopped)
        })
        .await;
    assert_eq!(
        a.status.as_ref().and_then(|s| s.domain_uuid.clone()),
        uuid,
        "the domain that survived the daemon restart was adopted, not recreated"
    );
    wait_for("/readyz to answer 200 again", || async {
        (get(metrics, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let (_, text) = get(metrics, "/metrics").await.expect("metrics");
    let reconnects = text
        .lines()
        .find_map(|l| l.strip_prefix("ironvisor_agent_libvirt_reconnects_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the reconnect counter");
    assert!(reconnects >= 1.0, "{text}");
    assert!(text.contains("ironvisor_agent_libvirt_connected 1"));

    for name in ["a", "b"] {
        c.vms(ns)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    let api = c.vms(ns);
    wait_for("the VMs to be deleted", || {
        let api = api.clone();
        async move {
            api.list(&Default::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(|_| ())
        }
    })
    .await;
    c.stop().await;
}
