//! A running guest's disk from the host: find its domain, write through QEMU's own block
//! layer (HMP `qemu-io` on the disk's device), read a file with `qemu-io`, hash a file.

use std::path::Path;
use std::process::Command;

/// The domain of a VM, by the uid in its definition.
pub fn domain_of(uri: &str, vm_uid: &str) -> String {
    let out = Command::new("virsh")
        .args(["-c", uri, "list", "--name", "--all"])
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
        .expect("the VM has a domain")
        .to_owned()
}

/// A write by the guest, through QEMU, of 64 KiB of `pattern` at offset 0 of its first disk.
pub fn guest_write(uri: &str, domain: &str, pattern: u8) {
    let cmd = format!(
        "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P {pattern:#x} 0 64k\""
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

/// Whether the first 64 KiB of the disk image `file` (through its backing chain) hold
/// `pattern`; read with shared locks, so a running guest may have it open.
pub fn reads_pattern(file: &Path, pattern: u8) -> bool {
    let out = Command::new("qemu-io")
        .args(["-r", "-U", "-c", &format!("read -P {pattern:#x} 0 64k")])
        .arg(file)
        .output()
        .expect("qemu-io");
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("verification failed")
}

/// SHA-256 of a file, as `sha256sum` prints it.
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

/// The MAC addresses of a domain's interfaces.
pub fn macs(uri: &str, domain: &str) -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", uri, "domiflist", domain])
        .output()
        .expect("virsh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|m| m.len() == 17 && m.matches(':').count() == 5)
        .map(str::to_owned)
        .collect()
}
