//! A running tiny guest's disk from the host side, for snapshot and backup tests: which
//! domain runs a VM, writes through QEMU's own block layer (HMP `qemu-io` on the guest's
//! first virtio disk, landing in whatever layer it writes to now), the layer files of a VM
//! directory, and reads of a halted VM's disk file with `qemu-io`.

use std::path::Path;
use std::process::Command;

/// The domain of a VM on `uri`, by the uid in its definition.
pub fn domain_of(uri: &str, vm_uid: &str) -> String {
    let out = Command::new("virsh")
        .args(["-c", uri, "list", "--name"])
        .output()
        .expect("virsh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|d| !d.is_empty())
        .find(|d| {
            let xml = Command::new("virsh")
                .args(["-c", uri, "dumpxml", d])
                .output()
                .expect("virsh");
            String::from_utf8_lossy(&xml.stdout).contains(vm_uid)
        })
        .expect("the VM's domain runs")
        .to_owned()
}

/// Write `len` bytes of `pattern` at `offset` of the guest's first disk, through QEMU
/// (`len` and `offset` as qemu-io takes them, e.g. `64k`, `256M`).
pub fn guest_write(uri: &str, domain: &str, pattern: u8, offset: &str, len: &str) {
    let cmd = format!(
        "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P {pattern:#x} {offset} {len}\""
    );
    let out = Command::new("virsh")
        .args(["-c", uri, "qemu-monitor-command", "--hmp", domain, &cmd])
        .output()
        .expect("virsh");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{out:?}"
    );
}

/// Whether `file` (a qcow2 nobody writes to) reads `pattern` over `len` bytes at `offset`.
pub fn reads(file: &Path, pattern: u8, offset: &str, len: &str) -> bool {
    Command::new("qemu-io")
        .args(["-r", "-U", "-f", "qcow2", "-c"])
        .arg(format!("read -P {pattern:#x} {offset} {len}"))
        .arg(file)
        .output()
        .expect("qemu-io")
        .status
        .success()
}

/// The qcow2 layer files of a VM directory, sorted.
pub fn layers(vm_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(vm_dir)
        .expect("VM directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("disk-") && n.ends_with(".qcow2"))
        .collect();
    v.sort();
    v
}

/// SHA-256 of a file (coreutils' sha256sum).
pub fn sha256(file: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
