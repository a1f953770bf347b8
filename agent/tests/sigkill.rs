//! The real `ironvisor-agent` binary, killed with SIGKILL at random points during 50
//! create/delete cycles of small diskless VMs on `qemu:///system`, restarted each time.
//! Afterwards: no duplicate domain, no leftover VM directory, every VM in its desired state
//! (the deleted ones gone with their finalizer, the others Running).
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does); it fails, never
//! skips, without it. The system libvirt is shared with other tests: everything here lives
//! in its own namespace and node, and only domains whose metadata names that namespace are
//! touched when cleaning up.

mod common;

use common::cluster::{Cluster, TIMEOUT, wait_for};
use ironvisor_agent::domain_xml::DomainMetadata;
use ironvisor_agent::domain_xml::metadata::NAMESPACE_URI;
use ironvisor_crds::common::{condition_is_true, condition_type};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use kube::api::DeleteParams;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";
const CYCLES: usize = 50;

/// A small deterministic generator (xorshift64*), seeded from the clock and printed, so a
/// failing run can be replayed with IRONVISOR_SIGKILL_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("IRONVISOR_SIGKILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("sigkill test seed: IRONVISOR_SIGKILL_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn admin() -> virt::connect::Connect {
    virt::connect::Connect::open(Some(URI)).unwrap_or_else(|e| {
        panic!(
            "this test needs libvirtd on {URI} as root (run hack/start-libvirtd.sh): {}",
            e.message()
        )
    })
}

/// Our domains in `ns`: name → metadata.
fn domains_of(conn: &virt::connect::Connect, ns: &str) -> Vec<(String, DomainMetadata)> {
    let mut out = Vec::new();
    for dom in conn.list_all_domains(0).expect("list domains") {
        let Ok(xml) = dom.metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(NAMESPACE_URI),
            virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
        ) else {
            continue;
        };
        if let Ok(m) = DomainMetadata::parse(&xml)
            && m.namespace == ns
        {
            out.push((dom.name().expect("name"), m));
        }
    }
    out
}

/// Kills the agent and removes this test's domains and state, whatever happens.
struct Cleanup {
    ns: String,
    state_dir: PathBuf,
    agent: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        if let Ok(conn) = virt::connect::Connect::open(Some(URI)) {
            for (name, _) in domains_of(&conn, &self.ns) {
                if let Ok(d) = conn.lookup_domain_by_name(&name) {
                    let _ = d.destroy();
                    let _ = d.undefine();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn spawn_agent(node: &str, kubeconfig: &Path, state: &Path, images: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    Command::new(env!("CARGO_BIN_EXE_ironvisor-agent"))
        .args(["--node-name", node, "--libvirt-uri", URI, "--accel", "tcg"])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--state-dir")
        .arg(state)
        .arg("--images-dir")
        .arg(images)
        .args(["--metrics-addr", "127.0.0.1:0", "--resync-interval", "5s"])
        .env("RUST_LOG", "warn,ironvisor_agent=info")
        .stdout(Stdio::null())
        .stderr(log.try_clone().expect("log"))
        .spawn()
        .expect("the agent binary starts")
}

fn spec() -> serde_json::Value {
    serde_json::json!({
        "memory": {"size": "64Mi"},
        "terminationGracePeriodSeconds": 0,
    })
}

fn running(v: &VirtualMachine) -> bool {
    v.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Running) && condition_is_true(&s.conditions, condition_type::READY)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_during_create_delete_cycles_leaves_no_trace() {
    drop(admin());
    let pid = std::process::id();
    let ns = format!("sigkill-{pid}");
    let node = format!("sigkill-node-{pid}");
    let c = Cluster::without_agent(&node).await;
    // QEMU runs unprivileged: the state directory must be traversable.
    let state_dir = tempfile::Builder::new()
        .prefix("ironvisor-sigkill-")
        .tempdir_in("/var/tmp")
        .expect("state dir")
        .keep();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let kubeconfig = c.tmp.path().join("kubeconfig");
    c.cluster
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let log = c.tmp.path().join("agent.log");
    let start = || spawn_agent(&node, &kubeconfig, &state_dir, &c.images_dir, &log);
    let mut guard = Cleanup {
        ns: ns.clone(),
        state_dir: state_dir.clone(),
        agent: Some(start()),
    };
    let mut rng = Rng::new();
    let began = Instant::now();
    let mut kept = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut kills = 0;
    for i in 0..CYCLES {
        let name = format!("vm-{i}");
        c.place(&ns, &name, &node, spec()).await;
        // Every tenth VM stays; the others are deleted a cycle after their creation, so
        // creates and deletes overlap with the agent's work and with the kills.
        if i % 10 == 0 {
            kept.insert(name);
        }
        if i > 0 && (i - 1) % 10 != 0 {
            let prev = format!("vm-{}", i - 1);
            c.vms(&ns)
                .delete(&prev, &DeleteParams::default())
                .await
                .expect("delete accepted");
            deleted.insert(prev);
        }
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        if rng.below(3) == 0 {
            let mut a = guard.agent.take().expect("agent");
            a.kill().expect("SIGKILL");
            a.wait().expect("reaped");
            kills += 1;
            guard.agent = Some(start());
        }
    }
    let last = format!("vm-{}", CYCLES - 1);
    if !kept.contains(&last) {
        c.vms(&ns)
            .delete(&last, &DeleteParams::default())
            .await
            .expect("delete accepted");
        deleted.insert(last);
    }
    eprintln!(
        "{CYCLES} cycles, {kills} kills in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    assert!(kills > 0, "the agent was killed at least once");

    let api = c.vms(&ns);
    let settle = Instant::now();
    let deadline = settle + TIMEOUT * 4;
    let mut uids = BTreeMap::new();
    loop {
        let list = api.list(&Default::default()).await.expect("list");
        let present: BTreeSet<String> = list
            .items
            .iter()
            .filter_map(|v| v.metadata.name.clone())
            .collect();
        let all_running = list.items.iter().all(running);
        if present == kept && all_running {
            for v in &list.items {
                uids.insert(
                    v.metadata.uid.clone().expect("uid"),
                    v.metadata.name.clone().expect("name"),
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged: present {present:?}, want {kept:?}, all running: {all_running}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "converged {:.1} s after the last cycle",
        settle.elapsed().as_secs_f64()
    );

    let conn = admin();
    let domains = domains_of(&conn, &ns);
    let mut per_uid: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, m) in &domains {
        *per_uid.entry(m.uid.as_str()).or_default() += 1;
    }
    assert!(
        per_uid.values().all(|n| *n == 1),
        "duplicate domains: {domains:?}"
    );
    let domain_uids: BTreeSet<&str> = per_uid.keys().copied().collect();
    let want_uids: BTreeSet<&str> = uids.keys().map(String::as_str).collect();
    assert_eq!(
        domain_uids, want_uids,
        "exactly one domain per remaining VM"
    );
    for (name, _) in &domains {
        let d = conn.lookup_domain_by_name(name).expect("domain");
        assert!(d.is_active().expect("state"), "{name} runs");
    }
    let mut dirs: Vec<String> = std::fs::read_dir(state_dir.join("vms"))
        .expect("vms dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let want_dirs: Vec<String> = uids.keys().cloned().collect();
    assert_eq!(dirs, want_dirs, "no leftover VM directory");
    for name in &deleted {
        assert!(
            api.get_opt(name).await.expect("get").is_none(),
            "{name} is gone with its finalizer"
        );
    }

    // Clean up through the agent, then the guard removes anything left.
    for name in &kept {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete accepted");
    }
    wait_for("the kept VMs to be deleted", || {
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
    assert!(domains_of(&conn, &ns).is_empty());
    drop(guard);
    c.stop().await;
}
