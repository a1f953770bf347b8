//! Whether guests can use KVM here, and if not, why: no device, a device the QEMU user cannot
//! open, or a CPU without vmx/svm (nested virtualisation that would hang KVM guests).
//!
//! [`verdict`] is pure; [`KvmFacts::read`] reads /dev/kvm and /proc/cpuinfo flags.

use super::{Finding, QemuUser, can_access};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Reasons of the `KVMAvailable` condition.
pub mod reason {
    /// KVM works for the QEMU user.
    pub const USABLE: &str = "KVMUsable";
    /// There is no /dev/kvm.
    pub const NO_DEVICE: &str = "NoKVMDevice";
    /// /dev/kvm exists but the QEMU user cannot open it.
    pub const NOT_ACCESSIBLE: &str = "DeviceNotAccessible";
    /// Running inside a VM whose CPU shows no vmx/svm: KVM guests would hang at boot.
    pub const NESTED: &str = "NestedVirtualizationUnavailable";
    /// The CPU advertises no hardware virtualisation.
    pub const NO_HARDWARE: &str = "NoHardwareVirtualization";
}

/// The device node as stat(2) sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    /// A character device (anything else is not KVM).
    pub is_char: bool,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

/// What decides whether KVM is usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmFacts {
    /// /dev/kvm, when it exists.
    pub device: Option<DeviceFacts>,
    /// The CPU flags show vmx or svm.
    pub hardware_virt: bool,
    /// The CPU flags show `hypervisor`: this host is itself a VM.
    pub under_hypervisor: bool,
}

impl KvmFacts {
    /// Read `device` (normally /dev/kvm) and take the CPU flags the agent already read.
    pub fn read(device: &Path, cpu_flags: &[String]) -> Self {
        let device = std::fs::metadata(device).ok().map(|m| DeviceFacts {
            is_char: m.file_type().is_char_device(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        });
        Self {
            device,
            hardware_virt: cpu_flags.iter().any(|f| f == "vmx" || f == "svm"),
            under_hypervisor: cpu_flags.iter().any(|f| f == "hypervisor"),
        }
    }
}

/// `crw-rw----`-style text for a mode; `kind` is ls's first letter (`c`, `d`, `-`).
pub fn mode_string(mode: u32, kind: char) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// The `KVMAvailable` verdict. Every finding goes into the message; the reason is the first
/// of: no device, device not accessible, no hardware virtualisation (nested or not). The
/// permission problem comes before the CPU flags because it slows libvirt down even on a
/// software-emulation host.
pub fn verdict(facts: &KvmFacts, qemu: Option<&QemuUser>) -> Finding {
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    match &facts.device {
        None => problems.push((
            reason::NO_DEVICE,
            "/dev/kvm does not exist: load the kvm_intel or kvm_amd module and enable \
             virtualisation in the firmware"
                .into(),
        )),
        Some(d) if !d.is_char => problems.push((
            reason::NO_DEVICE,
            "/dev/kvm is not a character device: remove it and load the kvm module".into(),
        )),
        Some(d) => {
            if let Some(q) = qemu
                && !can_access(d.mode, d.uid, d.gid, q, 0o6)
            {
                problems.push((
                    reason::NOT_ACCESSIBLE,
                    format!(
                        "/dev/kvm is {} uid {} gid {}: the QEMU user {} (uid {}) cannot open \
                         it, so libvirt re-probes QEMU on every call (tens of seconds per \
                         define); give it udev's group and mode: chgrp kvm /dev/kvm && chmod \
                         0660 /dev/kvm, with {} in group kvm (hack/start-libvirtd.sh does this \
                         on hosts without udev)",
                        mode_string(d.mode, 'c'),
                        d.uid,
                        d.gid,
                        q.name,
                        q.uid,
                        q.name
                    ),
                ));
            }
        }
    }
    if !facts.hardware_virt {
        if facts.under_hypervisor {
            problems.push((
                reason::NESTED,
                "this host is a VM whose CPU shows no vmx/svm: KVM guests would hang at boot; \
                 guests run under software emulation (TCG). For KVM, enable nested \
                 virtualisation on the outer hypervisor (kvm_intel nested=1, CPU mode \
                 host-passthrough)"
                    .into(),
            ));
        } else {
            problems.push((
                reason::NO_HARDWARE,
                "the CPU shows no vmx/svm flag: enable VT-x/AMD-V in the firmware; guests run \
                 under software emulation (TCG) meanwhile"
                    .into(),
            ));
        }
    }
    match problems.first() {
        None => Finding::ok(
            reason::USABLE,
            "/dev/kvm is usable by the QEMU user and the CPU has hardware virtualisation".into(),
        ),
        Some((reason, _)) => Finding::problem(
            reason,
            problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> QemuUser {
        QemuUser {
            name: "libvirt-qemu".into(),
            uid: 64055,
            groups: vec![64055, 107],
        }
    }

    fn facts(mode: u32, gid: u32, hw: bool, nested: bool) -> KvmFacts {
        KvmFacts {
            device: Some(DeviceFacts {
                is_char: true,
                mode,
                uid: 0,
                gid,
            }),
            hardware_virt: hw,
            under_hypervisor: nested,
        }
    }

    #[test]
    fn a_udev_style_device_and_vmx_make_kvm_usable() {
        let f = verdict(&facts(0o660, 107, true, false), Some(&qemu()));
        assert!(f.ok, "{f:?}");
        assert_eq!(f.reason, reason::USABLE);
    }

    #[test]
    fn a_root_only_device_is_not_accessible_to_the_qemu_user_and_names_the_remedy() {
        let f = verdict(&facts(0o600, 0, true, false), Some(&qemu()));
        assert!(!f.ok);
        assert_eq!(f.reason, reason::NOT_ACCESSIBLE);
        assert!(
            f.message.contains("crw------- uid 0 gid 0"),
            "{}",
            f.message
        );
        assert!(f.message.contains("chmod 0660 /dev/kvm"), "{}", f.message);
    }

    #[test]
    fn a_world_writable_device_is_accessible_to_anyone() {
        assert!(verdict(&facts(0o666, 0, true, false), Some(&qemu())).ok);
    }

    #[test]
    fn nested_without_vmx_is_reported_as_such_after_the_permission_problem() {
        let f = verdict(&facts(0o600, 0, false, true), Some(&qemu()));
        assert_eq!(f.reason, reason::NOT_ACCESSIBLE);
        assert!(f.message.contains("hang at boot"), "{}", f.message);
        let f = verdict(&facts(0o660, 107, false, true), Some(&qemu()));
        assert_eq!(f.reason, reason::NESTED);
        let f = verdict(&facts(0o660, 107, false, false), Some(&qemu()));
        assert_eq!(f.reason, reason::NO_HARDWARE);
    }

    #[test]
    fn no_device_comes_first() {
        let f = verdict(
            &KvmFacts {
                device: None,
                hardware_virt: false,
                under_hypervisor: false,
            },
            Some(&qemu()),
        );
        assert_eq!(f.reason, reason::NO_DEVICE);
    }

    #[test]
    fn modes_print_as_ls_does() {
        assert_eq!(mode_string(0o600, 'c'), "crw-------");
        assert_eq!(mode_string(0o660, 'c'), "crw-rw----");
        assert_eq!(mode_string(0o755, 'd'), "drwxr-xr-x");
    }
}
