//! A libvirtd "host" of the test's own (`hack/private-libvirtd.sh`): the system-mode daemon
//! in a private mount namespace with its own /dev/kvm node, so a test can reproduce a broken
//! host (a fresh machine's root-only /dev/kvm) without touching the shared libvirtd or the
//! shared /dev/kvm. Stopped, with its domains, when dropped.

use crate::repo_root;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// A private libvirtd and its directory.
pub struct PrivateLibvirtd {
    dir: PathBuf,
    uri: String,
}

fn script() -> PathBuf {
    repo_root().join("hack/private-libvirtd.sh")
}

impl PrivateLibvirtd {
    /// Start one whose /dev/kvm has `mode` (octal text) and `group`, as a host would have it.
    /// Takes as long as libvirtd's first QEMU probes (seconds; tens on a broken host).
    pub fn start(kvm_mode: &str, kvm_group: &str) -> Self {
        Self::start_with(&["--kvm-mode", kvm_mode, "--kvm-group", kvm_group])
    }

    /// One in a network namespace of its own, linked only to the bridge namespace `switch`
    /// with `address` (CIDR, e.g. 198.18.0.1/24): a host for live-migration tests, whose
    /// QEMUs reach each other there and never through the machine's own interfaces.
    pub fn start_on_switch(switch: &str, address: &str) -> Self {
        Self::start_with(&[
            "--kvm-mode",
            "660",
            "--kvm-group",
            "kvm",
            "--net",
            switch,
            address,
        ])
    }

    /// [`Self::start_on_switch`] whose QEMUs may use userfaultfd(2), as post-copy migration
    /// needs (QEMU as root with its capabilities: see `hack/private-libvirtd.sh`).
    pub fn start_on_switch_with_userfaultfd(switch: &str, address: &str) -> Self {
        Self::start_with(&[
            "--kvm-mode",
            "660",
            "--kvm-group",
            "kvm",
            "--net",
            switch,
            address,
            "--userfaultfd",
        ])
    }

    fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ironvisor-host-")
            .tempdir_in("/var/tmp")
            .expect("temp dir")
            .keep();
        let out = crate::run(Command::new(script()).arg("start").arg(&dir).args(args));
        assert!(
            out.status.success(),
            "hack/private-libvirtd.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uri = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { dir, uri }
    }

    /// Its directory (the daemon's /run/libvirt is `run/` in it).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Its libvirt URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The command prefix that runs a program inside the daemon's mount namespace.
    pub fn exec_prefix(&self) -> Vec<OsString> {
        vec![
            script().into(),
            "exec".into(),
            self.dir.clone().into(),
            "--".into(),
        ]
    }
}

impl Drop for PrivateLibvirtd {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}
