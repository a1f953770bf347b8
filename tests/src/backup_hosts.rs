//! Backup test support: a control plane, the operator and two "hosts" (two agents with their
//! own state directories and node names on `qemu:///system`) sharing a directory that stands
//! in for an NFS export mounted on both, with a BackupLocation on it and a tenant.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::guest_disk::domain_of;
use crate::system::{
    Agent, Proc, System, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest, uid, wait_for,
};

/// How long a guest may take to boot.
pub const BOOT: Duration = Duration::from_secs(180);
/// How long an operation may take.
pub const QUICK: Duration = Duration::from_secs(120);
/// The hosts' libvirt.
pub const URI: &str = "qemu:///system";

/// A control plane, the operator, two hosts, a shared backup directory, a tenant.
pub struct TwoHosts {
    /// Host A.
    pub a: Agent,
    /// Host B.
    pub b: Agent,
    _operator: Proc,
    /// The tenant's namespace.
    pub ns: String,
    /// The shared directory.
    pub share: PathBuf,
    images: PathBuf,
    /// The control plane.
    pub sys: System,
}

impl TwoHosts {
    /// Start everything; the tenant gets quota `hard`; location `share` is on the directory.
    pub fn start(prefix: &str, hard: &str) -> Self {
        require_libvirtd();
        let images = tiny_guest(&guest_cache());
        let sys = System::start();
        let (operator, _) = sys.operator();
        let pid = std::process::id();
        let a = sys.agent(&format!("{prefix}-a-{pid}"), URI, &images);
        let b = sys.agent(&format!("{prefix}-b-{pid}"), URI, &images);
        let share = sys.dir.path().join("nfs-share");
        std::fs::create_dir_all(&share).unwrap();
        let ns = format!("{prefix}{pid}");
        sys.tenant(&ns, &ns, hard);
        let hosts = TwoHosts {
            a,
            b,
            _operator: operator,
            ns,
            share,
            images,
            sys,
        };
        hosts.location("share", "");
        hosts
    }

    /// A BackupLocation on the shared directory (`extra`: more spec lines), and both hosts
    /// reporting it available.
    pub fn location(&self, name: &str, extra: &str) {
        self.sys.apply(&format!(
            "apiVersion: ironvisor.io/v1alpha1\nkind: BackupLocation\nmetadata: {{name: {name}}}\n\
             spec:\n  path: {}\n{extra}",
            self.share.display()
        ));
        wait_for("both hosts report the location available", QUICK, || {
            let l = self.sys.get("backuplocation", None, name).ok_or("gone")?;
            let hosts = l["status"]["hosts"].as_array().cloned().unwrap_or_default();
            let up = hosts.iter().filter(|h| h["available"] == true).count();
            (up == 2).then_some(()).ok_or(l["status"].to_string())
        });
    }

    /// A running tiny guest `name` on host `node` with a blank data disk of `size`.
    pub fn vm(&self, name: &str, node: &str, size: &str) -> (Value, String) {
        let disks = format!(
            "  nodeName: {node}\n  disks:\n  - name: data\n    size: {size}\n    source: {{blank: {{}}}}\n"
        );
        self.sys
            .apply(&tiny_vm_manifest(&self.ns, name, &self.images, &disks));
        let vm = self.sys.wait_phase(&self.ns, name, "Running", BOOT);
        let domain = domain_of(URI, &uid(&vm));
        (vm, domain)
    }

    /// Apply a backup of `vm` into `location`.
    pub fn backup(&self, name: &str, vm: &str, location: &str) {
        self.sys.apply(&format!(
            "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineBackup\n\
             metadata: {{name: {name}, namespace: {}}}\nspec: {{vmName: {vm}, location: {location}}}\n",
            self.ns
        ));
    }

    /// Wait for a backup's phase.
    pub fn wait_backup(&self, name: &str, phase: &str, timeout: Duration) -> Value {
        wait_for(&format!("backup {name} {phase}"), timeout, || {
            let b = self
                .sys
                .get("vmbackup", Some(&self.ns), name)
                .ok_or("not found")?;
            if b["status"]["phase"] == phase {
                Ok(b)
            } else {
                Err(b["status"].to_string())
            }
        })
    }

    /// Run ivctl in the tenant's namespace.
    pub fn ivctl(&self, args: &[&str]) -> std::process::Output {
        self.sys.ivctl(&self.ns, args)
    }

    /// Halt a VM and wait until it is stopped.
    pub fn halt(&self, vm: &str) {
        self.sys.kubectl_ok(&[
            "patch",
            "vm",
            vm,
            "-n",
            &self.ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Halted"}}"#,
        ]);
        self.sys.wait_phase(&self.ns, vm, "Stopped", BOOT);
    }
}

/// The backup's directory in the shared location.
pub fn backup_dir(share: &Path, backup: &Value) -> PathBuf {
    share
        .join("ironvisor-backups")
        .join(backup["metadata"]["uid"].as_str().unwrap())
}

/// An agent's /metrics text.
pub fn metrics(agent: &Agent) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{}/metrics", agent.metrics_port),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of one series (`name{labels}` exactly as exported) in a /metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The Events of a namespace, as JSON text.
pub fn events(sys: &System, ns: &str) -> String {
    sys.kubectl_ok(&["get", "events", "-n", ns, "-o", "json"])
}
