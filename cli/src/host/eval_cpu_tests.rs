use super::*;
use crate::host::facts::{NestedParam, Ownership};

fn qemu() -> QemuUser {
    QemuUser {
        name: "libvirt-qemu".into(),
        uid: 64055,
        gids: vec![107, 64055],
    }
}

fn dev(uid: u32, gid: u32, mode: u32, owner: &str, group: &str) -> KvmDevice {
    KvmDevice::CharDevice(Ownership {
        uid,
        gid,
        mode,
        owner: owner.into(),
        group: group.into(),
    })
}

fn root_only() -> KvmDevice {
    dev(0, 0, 0o600, "root", "root")
}

fn udev_like() -> KvmDevice {
    dev(0, 107, 0o660, "root", "kvm")
}

fn bare_metal_intel() -> CpuFacts {
    CpuFacts {
        vmx: true,
        ..CpuFacts::default()
    }
}

fn nested_without_vmx() -> CpuFacts {
    CpuFacts {
        hypervisor: true,
        ..CpuFacts::default()
    }
}

#[test]
fn a_root_only_kvm_device_fails_in_production_and_warns_in_development() {
    let u = qemu();
    let prod = kvm(
        Profile::Production,
        &bare_metal_intel(),
        &root_only(),
        Ok(&u),
    );
    assert_eq!(prod.status, Status::Fail);
    assert!(
        prod.finding
            .starts_with("crw------- root root: libvirt-qemu cannot open it"),
        "{}",
        prod.finding
    );
    assert!(prod.finding.contains("~56 s per define"));
    assert_eq!(prod.remedy.as_deref(), Some(KVM_PERMISSION_REMEDY));
    let dev = kvm(
        Profile::Development,
        &bare_metal_intel(),
        &root_only(),
        Ok(&u),
    );
    assert_eq!(dev.status, Status::Warn);
    assert_eq!(dev.remedy.as_deref(), Some(KVM_PERMISSION_REMEDY));
}

#[test]
fn a_device_udev_set_up_passes_on_bare_metal_and_guests_use_kvm() {
    let u = qemu();
    let c = kvm(
        Profile::Production,
        &bare_metal_intel(),
        &udev_like(),
        Ok(&u),
    );
    assert_eq!(c.status, Status::Pass, "{c:?}");
    assert_eq!(c.remedy, None);
    assert_eq!(
        c.finding,
        "crw-rw---- root kvm: libvirt-qemu can open it; guests use KVM"
    );
    assert_eq!(
        acceleration(&bare_metal_intel(), &udev_like(), Ok(&u)),
        VirtType::Kvm
    );
}

#[test]
fn nested_without_vmx_fails_the_kvm_check_with_the_nested_reason_even_when_the_device_opens() {
    let u = qemu();
    let c = kvm(
        Profile::Production,
        &nested_without_vmx(),
        &udev_like(),
        Ok(&u),
    );
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.finding
            .starts_with("nested virtualisation without vmx/svm"),
        "{}",
        c.finding
    );
    assert!(c.finding.contains("hang"));
    assert!(c.remedy.unwrap().contains("expose vmx/svm"));
    assert_eq!(
        acceleration(&nested_without_vmx(), &udev_like(), Ok(&u)),
        VirtType::Qemu,
        "KVM guests hang there, so the test domain must use TCG"
    );
}

#[test]
fn both_problems_are_named_with_both_remedies() {
    let u = qemu();
    let c = kvm(
        Profile::Development,
        &nested_without_vmx(),
        &root_only(),
        Ok(&u),
    );
    assert_eq!(c.status, Status::Warn);
    assert!(c.finding.contains("cannot open it"));
    assert!(c.finding.contains("nested virtualisation without vmx/svm"));
    let remedy = c.remedy.unwrap();
    assert!(remedy.contains("chmod 0660 /dev/kvm"));
    assert!(remedy.contains("expose vmx/svm"));
}

#[test]
fn a_missing_device_or_a_plain_file_is_named() {
    let u = qemu();
    let missing = kvm(
        Profile::Production,
        &bare_metal_intel(),
        &KvmDevice::Missing,
        Ok(&u),
    );
    assert_eq!(missing.status, Status::Fail);
    assert!(missing.finding.starts_with("no /dev/kvm"));
    let plain = KvmDevice::NotCharDevice(Ownership {
        uid: 0,
        gid: 0,
        mode: 0o666,
        owner: "root".into(),
        group: "root".into(),
    });
    let c = kvm(Profile::Development, &bare_metal_intel(), &plain, Ok(&u));
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.finding
            .contains("not a character device (-rw-rw-rw- root root)"),
        "{}",
        c.finding
    );
}

#[test]
fn an_unknown_qemu_user_is_a_problem_not_a_pass() {
    let err = "no user libvirt-qemu".to_string();
    let c = kvm(
        Profile::Production,
        &bare_metal_intel(),
        &udev_like(),
        Err(&err),
    );
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.finding
            .contains("cannot tell who QEMU runs as: no user libvirt-qemu")
    );
}

#[test]
fn the_owner_bits_apply_to_the_owner_even_when_the_group_bits_allow_more() {
    let owned = Ownership {
        uid: 64055,
        gid: 107,
        mode: 0o060,
        owner: "libvirt-qemu".into(),
        group: "kvm".into(),
    };
    assert!(!owned.allows(&qemu(), perm::R | perm::W));
    let by_group = Ownership { uid: 0, ..owned };
    assert!(by_group.allows(&qemu(), perm::R | perm::W));
}

#[test]
fn qemu_running_as_root_opens_any_device() {
    let root = QemuUser {
        name: "root".into(),
        uid: 0,
        gids: vec![0],
    };
    assert_eq!(
        acceleration(&bare_metal_intel(), &root_only(), Ok(&root)),
        VirtType::Kvm
    );
}

#[test]
fn missing_flags_fail_in_production_and_warn_in_development() {
    let none = CpuFacts::default();
    let prod = cpu_flags(Profile::Production, &none);
    assert_eq!(prod.status, Status::Fail);
    assert!(prod.remedy.unwrap().contains("firmware"));
    let dev = cpu_flags(Profile::Development, &nested_without_vmx());
    assert_eq!(dev.status, Status::Warn);
    assert!(dev.remedy.unwrap().contains("this host is a VM"));
    let amd = CpuFacts {
        svm: true,
        ..CpuFacts::default()
    };
    assert_eq!(cpu_flags(Profile::Production, &amd).finding, "svm (AMD-V)");
}

#[test]
fn nesting_is_judged_by_flags_and_device() {
    let hang = nested(Profile::Production, &nested_without_vmx(), &root_only());
    assert_eq!(hang.status, Status::Fail);
    assert!(hang.finding.contains("KVM guests hang at boot"));
    let dev = nested(Profile::Development, &nested_without_vmx(), &root_only());
    assert_eq!(dev.status, Status::Warn);
    let no_device = nested(
        Profile::Development,
        &nested_without_vmx(),
        &KvmDevice::Missing,
    );
    assert_eq!(
        no_device.status,
        Status::Pass,
        "nothing can hang without /dev/kvm"
    );
    let with_vmx = CpuFacts {
        vmx: true,
        hypervisor: true,
        nested_param: None,
        svm: false,
    };
    assert_eq!(
        nested(Profile::Production, &with_vmx, &udev_like()).status,
        Status::Warn
    );
    assert_eq!(
        nested(Profile::Development, &with_vmx, &udev_like()).status,
        Status::Pass
    );
    let host = CpuFacts {
        nested_param: Some(NestedParam {
            module: "kvm_intel".into(),
            value: "Y\n".into(),
        }),
        ..bare_metal_intel()
    };
    let c = nested(Profile::Production, &host, &udev_like());
    assert_eq!(c.status, Status::Pass);
    assert_eq!(
        c.finding,
        "bare metal (no hypervisor flag); kvm_intel nested=Y"
    );
}
