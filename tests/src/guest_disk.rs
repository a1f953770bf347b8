//! A running guest's disk from the host: find its domain, write through QEMU's own block
//! layer (HMP `qemu-io` on the disk's device, landing in whatever layer it writes to now),
//! read a file with `qemu-io`, list a VM directory's layer files, hash a file.

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

/// A write by the guest, through QEMU, of 64 KiB of `pattern` at offset 0 of its first disk,
/// then a flush: until then the new cluster's qcow2 metadata may sit in QEMU's cache and a
/// reader of the file would not see the write.
pub fn guest_write(uri: &str, domain: &str, pattern: u8) {
    hmp_qemu_io(uri, domain, &format!("write -P {pattern:#x} 0 64k"));
    hmp_qemu_io(uri, domain, "flush");
}

fn hmp_qemu_io(uri: &str, domain: &str, io: &str) {
    let cmd = format!("qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"{io}\"");
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

/// Write `len` bytes of `pattern` at `offset` of the guest's first disk through QEMU, then
/// flush (`len` and `offset` as qemu-io takes them, e.g. `64k`, `256M`).
pub fn guest_write_at(uri: &str, domain: &str, pattern: u8, offset: &str, len: &str) {
    hmp_qemu_io(
        uri,
        domain,
        &format!("write -P {pattern:#x} {offset} {len}"),
    );
    hmp_qemu_io(uri, domain, "flush");
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

/// The MAC addresses of a domain's interfaces, from its live XML: libvirt's own
/// `<interface>`s (`<mac address='…'/>`) and the user-mode NICs the agent passes to QEMU as
/// `-device …,mac=…` (`<qemu:arg>`), which `virsh domiflist` does not list.
pub fn macs(uri: &str, domain: &str) -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", uri, "dumpxml", domain])
        .output()
        .expect("virsh");
    assert!(out.status.success(), "virsh dumpxml {domain}: {out:?}");
    macs_in_xml(&String::from_utf8_lossy(&out.stdout))
}

/// The MACs in a domain XML (see [`macs`]), in document order.
pub fn macs_in_xml(xml: &str) -> Vec<String> {
    let is_mac = |m: &str| {
        m.len() == 17
            && m.split(':').count() == 6
            && m.split(':')
                .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let mut found = Vec::new();
    for (marker, end) in [
        ("<mac address='", '\''),
        ("<mac address=\"", '"'),
        ("mac=", ','),
    ] {
        let mut rest = xml;
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            let cand = rest.split([end, '"', '\'']).next().unwrap_or_default();
            if is_mac(cand) {
                found.push((xml.len() - rest.len(), cand.to_ascii_lowercase()));
            }
        }
    }
    found.sort();
    found.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::macs_in_xml;

    #[test]
    fn finds_libvirt_and_user_mode_macs_in_order() {
        let xml = "<domain><devices><interface type='network'>\
                   <mac address='52:54:00:aa:bb:01'/></interface></devices>\
                   <qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='user,id=ivnet0'/>\
                   <qemu:arg value='-device'/>\
                   <qemu:arg value='virtio-net-pci,netdev=ivnet0,mac=52:54:00:AA:BB:02,bus=pcie.0,addr=0x1f'/>\
                   </qemu:commandline></domain>";
        assert_eq!(macs_in_xml(xml), ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]);
    }

    #[test]
    fn ignores_what_is_not_a_mac() {
        let xml = "<qemu:arg value='e1000e,mac=zz:54:00:aa:bb:02,bus=x'/><mac address='52:54'/>";
        assert!(macs_in_xml(xml).is_empty());
    }
}
