//! All verdicts over all facts, in the report's fixed order. Pure.

use super::args::Profile;
use super::eval_dirs::{IMAGES_LIMITS, STATE_LIMITS};
use super::eval_libvirt::{MIN_LIBVIRT, MIN_QEMU};
use super::facts::HostFacts;
use super::verdict::{Check, Report};
use super::{eval_cpu, eval_dirs, eval_libvirt, eval_platform};

/// Every check's id, in the order the report lists them.
pub const CHECK_IDS: [&str; 15] = [
    "cpu-flags",
    "nested",
    "kvm",
    "iommu",
    "hugepages",
    "numa",
    "cgroup",
    "libvirt-version",
    "qemu-version",
    "capability-probe",
    "domain-test",
    "state-dir-space",
    "state-dir-access",
    "images-dir-space",
    "images-dir-access",
];

/// The libvirt checks: versions, probe, domain test; each says so when libvirt could not
/// be asked.
fn libvirt_checks(profile: Profile, uri: &str, f: &HostFacts) -> Vec<Check> {
    let lv = match &f.libvirt {
        Ok(lv) => lv,
        Err(why) => {
            return [
                "libvirt-version",
                "qemu-version",
                "capability-probe",
                "domain-test",
            ]
            .into_iter()
            .map(|id| eval_libvirt::unavailable(id, uri, why))
            .collect();
        }
    };
    let v = &lv.versions;
    vec![
        eval_libvirt::version(
            profile,
            "libvirt-version",
            "libvirt",
            v.libvirt,
            MIN_LIBVIRT,
        ),
        eval_libvirt::version(profile, "qemu-version", "QEMU", v.qemu, MIN_QEMU),
        eval_libvirt::probe(&lv.probe),
        eval_libvirt::domain_test(uri, &lv.domain),
    ]
}

/// The report on `f` for `profile`.
pub fn evaluate(profile: Profile, uri: &str, f: &HostFacts) -> Report {
    let user = f.qemu_user.as_ref();
    let mut checks = vec![
        eval_cpu::cpu_flags(profile, &f.cpu),
        eval_cpu::nested(profile, &f.cpu, &f.kvm),
        eval_cpu::kvm(profile, &f.cpu, &f.kvm, user),
        eval_platform::iommu(profile, &f.iommu),
        eval_platform::hugepages(profile, f.hugepages.as_ref()),
        eval_platform::numa(&f.numa),
        eval_platform::cgroup(profile, f.cgroup),
    ];
    checks.extend(libvirt_checks(profile, uri, f));
    checks.extend([
        eval_dirs::space("state-dir-space", &f.state_dir, STATE_LIMITS),
        eval_dirs::access("state-dir-access", &f.state_dir, user),
        eval_dirs::space("images-dir-space", &f.images_dir, IMAGES_LIMITS),
        eval_dirs::access("images-dir-access", &f.images_dir, user),
    ]);
    Report::new(profile, uri, checks)
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
