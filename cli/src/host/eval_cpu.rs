//! Verdicts on hardware virtualisation: the CPU flags, nesting, and whether the QEMU user
//! can use /dev/kvm. Pure.

use super::args::Profile;
use super::facts::{CpuFacts, KvmDevice, QemuUser, VirtType, perm};
use super::verdict::{Check, Status};

/// The remedy for a /dev/kvm the QEMU user cannot open.
pub const KVM_PERMISSION_REMEDY: &str = "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (what udev's \
     rule does), or run hack/start-libvirtd.sh";

/// KVM is usable for guests: /dev/kvm is a character device the QEMU user can open read-write
/// and the CPU offers vmx or svm (without them a nested KVM guest hangs at boot).
pub fn kvm_usable(cpu: &CpuFacts, kvm: &KvmDevice, user: Result<&QemuUser, &String>) -> bool {
    let opens = match (kvm, user) {
        (KvmDevice::CharDevice(o), Ok(u)) => o.allows(u, perm::R | perm::W),
        _ => false,
    };
    opens && cpu.has_virt_flags()
}

/// The domain type guests get: `kvm` only when [`kvm_usable`], else `qemu` (TCG).
pub fn acceleration(cpu: &CpuFacts, kvm: &KvmDevice, user: Result<&QemuUser, &String>) -> VirtType {
    if kvm_usable(cpu, kvm, user) {
        VirtType::Kvm
    } else {
        VirtType::Qemu
    }
}

/// `cpu-flags`: vmx or svm in /proc/cpuinfo.
pub fn cpu_flags(profile: Profile, cpu: &CpuFacts) -> Check {
    const ID: &str = "cpu-flags";
    match (cpu.vmx, cpu.svm) {
        (true, _) => Check::pass(ID, "vmx (Intel VT-x)"),
        (_, true) => Check::pass(ID, "svm (AMD-V)"),
        _ => {
            let remedy = if cpu.hypervisor {
                "this host is a VM: enable nested virtualisation on its hypervisor so the VM \
                 sees vmx/svm"
            } else {
                "enable VT-x or AMD-V (SVM) in the firmware settings"
            };
            Check::problem(
                ID,
                Status::required_in_production(profile),
                "neither vmx nor svm in /proc/cpuinfo: guests run under TCG software \
                 emulation, many times slower",
                remedy,
            )
        }
    }
}

/// `nested`: is this host itself a VM, and can its KVM guests run?
pub fn nested(profile: Profile, cpu: &CpuFacts, kvm: &KvmDevice) -> Check {
    const ID: &str = "nested";
    let param = cpu
        .nested_param
        .as_ref()
        .map(|p| format!("; {} nested={}", p.module, p.value.trim()))
        .unwrap_or_default();
    if !cpu.hypervisor {
        return Check::pass(ID, format!("bare metal (no hypervisor flag){param}"));
    }
    let device = !matches!(kvm, KvmDevice::Missing);
    if !cpu.has_virt_flags() && device {
        return Check::problem(
            ID,
            Status::required_in_production(profile),
            format!(
                "inside a VM without vmx/svm, yet /dev/kvm exists: KVM guests hang at boot, \
                 guests must use TCG (type=qemu){param}"
            ),
            "expose vmx/svm to this VM (nested virtualisation on the outer hypervisor), or \
             accept software emulation (--profile development)",
        );
    }
    let finding = if cpu.has_virt_flags() {
        format!(
            "inside a VM with nested virtualisation: KVM guests run, slower than on bare metal{param}"
        )
    } else {
        format!("inside a VM without nested virtualisation: guests run under TCG{param}")
    };
    match profile {
        Profile::Development => Check::pass(ID, finding),
        Profile::Production => Check::problem(
            ID,
            Status::Warn,
            finding,
            "qualify production on bare metal; a nested stack is not hardware-tested",
        ),
    }
}

/// One thing wrong with KVM and what to do.
type Problem = (String, &'static str);

/// What keeps the QEMU user from the device itself.
fn device_problem(kvm: &KvmDevice, user: Result<&QemuUser, &String>) -> Option<Problem> {
    match kvm {
        KvmDevice::Missing => Some((
            "no /dev/kvm: guests run under TCG software emulation".into(),
            "load KVM (modprobe kvm_intel or kvm_amd) on a CPU with VT-x/AMD-V enabled",
        )),
        KvmDevice::Unreadable(e) => Some((
            format!("/dev/kvm cannot be examined: {e}"),
            "run ivctl host check as root",
        )),
        KvmDevice::NotCharDevice(o) => Some((
            format!("/dev/kvm is not a character device ({})", o.describe('-')),
            "remove it and load KVM again (modprobe kvm_intel or kvm_amd) so the kernel \
             creates the device",
        )),
        KvmDevice::CharDevice(o) => match user {
            Err(e) => Some((
                format!("{}: cannot tell who QEMU runs as: {e}", o.describe('c')),
                "install libvirt-daemon-system (it creates the libvirt-qemu user), or fix \
                 user= in qemu.conf",
            )),
            Ok(u) if !o.allows(u, perm::R | perm::W) => Some((
                format!(
                    "{}: {} cannot open it; libvirt re-probes QEMU on every call (~56 s per \
                     define)",
                    o.describe('c'),
                    u.name
                ),
                KVM_PERMISSION_REMEDY,
            )),
            Ok(_) => None,
        },
    }
}

/// What keeps KVM guests from running although the device is there.
fn cpu_problem(cpu: &CpuFacts, kvm: &KvmDevice) -> Option<Problem> {
    if matches!(kvm, KvmDevice::Missing) || cpu.has_virt_flags() {
        return None;
    }
    Some(if cpu.hypervisor {
        (
            "nested virtualisation without vmx/svm: /dev/kvm is present but KVM guests hang \
             at boot, so guests use TCG (type=qemu)"
                .into(),
            "expose vmx/svm to this VM (nested virtualisation on the outer hypervisor)",
        )
    } else {
        (
            "/dev/kvm is present but the CPU shows neither vmx nor svm: KVM guests cannot run"
                .into(),
            "enable VT-x or AMD-V (SVM) in the firmware settings",
        )
    })
}

/// `kvm`: /dev/kvm exists, is a character device, the QEMU user can open it, and KVM guests
/// can run. Production needs it; development runs guests under TCG with a warning.
pub fn kvm(
    profile: Profile,
    cpu: &CpuFacts,
    kvm: &KvmDevice,
    user: Result<&QemuUser, &String>,
) -> Check {
    const ID: &str = "kvm";
    let problems: Vec<Problem> = [device_problem(kvm, user), cpu_problem(cpu, kvm)]
        .into_iter()
        .flatten()
        .collect();
    // No problem means the device is a character device and the user is known.
    if problems.is_empty()
        && let (KvmDevice::CharDevice(o), Ok(u)) = (kvm, user)
    {
        let owner = o.describe('c');
        return Check::pass(
            ID,
            format!("{owner}: {} can open it; guests use KVM", u.name),
        );
    }
    let finding = problems.iter().map(|p| p.0.as_str()).collect::<Vec<_>>();
    let remedy = problems.iter().map(|p| p.1).collect::<Vec<_>>();
    Check::problem(
        ID,
        Status::required_in_production(profile),
        finding.join("; "),
        remedy.join("; "),
    )
}

#[cfg(test)]
#[path = "eval_cpu_tests.rs"]
mod tests;
