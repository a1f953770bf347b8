use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::host::facts::{
    CgroupMode, CpuFacts, DirFacts, DomainRun, DomainTestFacts, HugepageFacts, IommuFacts,
    KvmDevice, LibvirtFacts, LibvirtUnavailable, NumaNode, Ownership, ProbeFacts, QemuUser,
    Version, Versions, VirtType,
};
use crate::host::verdict::Status;

fn own(mode: u32, gid: u32, group: &str) -> Ownership {
    Ownership {
        uid: 0,
        gid,
        mode,
        owner: "root".into(),
        group: group.into(),
    }
}

fn dir(path: &str) -> DirFacts {
    DirFacts {
        path: path.into(),
        exists: false,
        free_bytes: Ok(80 << 30),
        components: vec![
            (PathBuf::from("/"), own(0o755, 0, "root")),
            (PathBuf::from("/var"), own(0o755, 0, "root")),
            (PathBuf::from("/var/lib"), own(0o755, 0, "root")),
        ],
        blocked: None,
    }
}

fn version(major: u32, minor: u32, micro: u32) -> Option<Version> {
    Some(Version {
        major,
        minor,
        micro,
    })
}

/// This build machine: nested without vmx, /dev/kvm root-only, cgroup hybrid, no IOMMU.
fn build_machine() -> HostFacts {
    HostFacts {
        cpu: CpuFacts {
            hypervisor: true,
            ..CpuFacts::default()
        },
        kvm: KvmDevice::CharDevice(own(0o600, 0, "root")),
        qemu_user: Ok(QemuUser {
            name: "libvirt-qemu".into(),
            uid: 64055,
            gids: vec![107, 64055],
        }),
        iommu: IommuFacts { groups: None },
        hugepages: Some(HugepageFacts {
            total: 0,
            free: 0,
            size_kib: 2048,
            sizes_kib: vec![1 << 20, 2048],
        }),
        numa: vec![NumaNode {
            id: 0,
            cpus: "0-1".into(),
            mem_kib: Some(24 << 20),
        }],
        cgroup: CgroupMode::Hybrid,
        libvirt: Ok(LibvirtFacts {
            versions: Versions {
                libvirt: version(9, 0, 0),
                qemu: version(7, 2, 22),
            },
            probe: ProbeFacts::Timed {
                command: "domcapabilities".into(),
                first: Duration::from_millis(4000),
                second: Duration::from_millis(20),
            },
            domain: DomainTestFacts::Ran(DomainRun {
                name: "ironvisor-hostcheck-0".into(),
                virt_type: VirtType::Qemu,
                define: Ok(Duration::from_millis(19)),
                start: Some(Ok(Duration::from_millis(500))),
                destroy: Some(Ok(Duration::from_millis(1200))),
                cleanup: Ok(()),
            }),
        }),
        state_dir: dir("/var/lib/ironvisor"),
        images_dir: dir("/var/lib/ironvisor/images"),
    }
}

fn ids(r: &Report) -> Vec<&str> {
    r.checks.iter().map(|c| c.id).collect()
}

#[test]
fn every_check_is_reported_once_in_the_fixed_order() {
    let r = evaluate(Profile::Production, "qemu:///system", &build_machine());
    assert_eq!(ids(&r), CHECK_IDS);
}

#[test]
fn a_tcg_only_host_qualifies_for_development_but_not_production() {
    let f = build_machine();
    let dev = evaluate(Profile::Development, "qemu:///system", &f);
    assert!(dev.qualifies, "{:#?}", dev.checks);
    assert!(dev.count(Status::Warn) > 0);
    let prod = evaluate(Profile::Production, "qemu:///system", &f);
    assert!(!prod.qualifies);
    let failed: Vec<&str> = prod
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id)
        .collect();
    assert_eq!(failed, ["cpu-flags", "nested", "kvm", "iommu", "cgroup"]);
}

#[test]
fn without_virsh_every_libvirt_check_fails_with_the_install_remedy() {
    let f = HostFacts {
        libvirt: Err(LibvirtUnavailable::VirshMissing),
        ..build_machine()
    };
    let r = evaluate(Profile::Development, "qemu:///system", &f);
    assert_eq!(ids(&r), CHECK_IDS, "the report keeps its shape");
    assert!(!r.qualifies);
    for id in [
        "libvirt-version",
        "qemu-version",
        "capability-probe",
        "domain-test",
    ] {
        let c = r.checks.iter().find(|c| c.id == id).unwrap();
        assert_eq!(c.status, Status::Fail, "{id}");
        assert_eq!(c.remedy.as_deref(), Some("apt-get install libvirt-clients"));
    }
}
