use super::*;

/// A synthetic host tree: `files` are (relative path, contents).
fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
    let tmp = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = tmp.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let root = HostRoot(tmp.path().to_owned());
    (tmp, root)
}

const CPUINFO_NESTED: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\n\
flags\t\t: fpu vme sse2 hypervisor lahf_lm avx2\nbugs\t\t: sysret_ss_attrs\n\n\
processor\t: 1\nflags\t\t: fpu vme sse2 hypervisor lahf_lm avx2\n";

#[test]
fn cpu_flags_and_the_nested_parameter_are_read() {
    let (_t, root) = tree(&[("proc/cpuinfo", CPUINFO_NESTED)]);
    let c = cpu(&root);
    assert_eq!(
        (c.vmx, c.svm, c.hypervisor, c.nested_param),
        (false, false, true, None)
    );
    let (_t, root) = tree(&[
        ("proc/cpuinfo", "flags\t: fpu vmx ept\n"),
        ("sys/module/kvm_intel/parameters/nested", "Y\n"),
    ]);
    let c = cpu(&root);
    assert!(c.vmx && !c.hypervisor);
    let p = c.nested_param.unwrap();
    assert_eq!(
        (p.module.as_str(), p.value.as_str(), p.enabled()),
        ("kvm_intel", "Y", true)
    );
}

#[test]
fn a_missing_or_plain_kvm_device_is_told_apart() {
    let (_t, root) = tree(&[]);
    assert_eq!(kvm_device(&root), KvmDevice::Missing);
    let (_t, root) = tree(&[("dev/kvm", "")]);
    assert!(matches!(kvm_device(&root), KvmDevice::NotCharDevice(_)));
    // A link to /dev/null: a character device every machine has, owned by root.
    let (_t, root) = tree(&[]);
    std::fs::create_dir_all(root.0.join("dev")).unwrap();
    std::os::unix::fs::symlink("/dev/null", root.0.join("dev/kvm")).unwrap();
    match kvm_device(&root) {
        KvmDevice::CharDevice(o) => {
            assert_eq!((o.owner.as_str(), o.mode & 0o666), ("root", 0o666));
            assert_eq!(o.describe('c'), "crw-rw-rw- root root");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn qemu_conf_values_are_read_only_from_uncommented_lines() {
    let conf = "#user = \"qemu\"\n# group = \"kvm\"\n  user = \"+0\"\ngroup=\"kvm\"\n";
    assert_eq!(conf_value(conf, "user").as_deref(), Some("+0"));
    assert_eq!(conf_value(conf, "group").as_deref(), Some("kvm"));
    assert_eq!(conf_value("#user = \"libvirt-qemu\"\n", "user"), None);
}

#[test]
fn qemu_conf_user_root_by_uid_is_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("qemu.conf");
    std::fs::write(&conf, "user = \"+0\"\ngroup = \"+0\"\n").unwrap();
    let u = qemu_user(&conf).unwrap();
    assert_eq!((u.name.as_str(), u.uid), ("root", 0));
    assert!(u.gids.contains(&0));
    std::fs::write(&conf, "user = \"no-such-user-ironvisor\"\n").unwrap();
    let e = qemu_user(&conf).unwrap_err();
    assert!(e.contains("no user \"no-such-user-ironvisor\""), "{e}");
}

#[test]
fn hugepages_come_from_meminfo_and_sysfs() {
    let (_t, root) = tree(&[
        (
            "proc/meminfo",
            "MemTotal: 100 kB\nShmemHugePages: 0 kB\nHugePages_Total:     512\n\
             HugePages_Free:      500\nHugepagesize:       2048 kB\n",
        ),
        (
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "512\n",
        ),
        (
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "0\n",
        ),
    ]);
    let h = hugepages(&root).unwrap();
    assert_eq!(
        h,
        HugepageFacts {
            total: 512,
            free: 500,
            size_kib: 2048,
            sizes_kib: vec![1048576, 2048],
        }
    );
    let (_t, empty) = tree(&[]);
    assert_eq!(hugepages(&empty), None);
}

#[test]
fn numa_nodes_are_listed_in_order() {
    let (_t, root) = tree(&[
        ("sys/devices/system/node/node1/cpulist", "2-3\n"),
        ("sys/devices/system/node/node0/cpulist", "0-1\n"),
        (
            "sys/devices/system/node/node0/meminfo",
            "Node 0 MemTotal:       24576000 kB\nNode 0 MemFree: 1 kB\n",
        ),
        ("sys/devices/system/node/possible", "0-1\n"),
    ]);
    let n = numa(&root);
    assert_eq!(n.len(), 2);
    assert_eq!(
        (n[0].id, n[0].cpus.as_str(), n[0].mem_kib),
        (0, "0-1", Some(24576000))
    );
    assert_eq!((n[1].id, n[1].mem_kib), (1, None));
}

#[test]
fn the_cgroup_hierarchy_is_recognised() {
    let (_t, v2) = tree(&[("sys/fs/cgroup/cgroup.controllers", "cpu memory\n")]);
    assert_eq!(cgroup(&v2), CgroupMode::Unified);
    let (_t, hybrid) = tree(&[
        ("sys/fs/cgroup/memory/tasks", ""),
        ("sys/fs/cgroup/unified/cgroup.controllers", ""),
    ]);
    assert_eq!(cgroup(&hybrid), CgroupMode::Hybrid);
    let (_t, v1) = tree(&[("sys/fs/cgroup/memory/tasks", "")]);
    assert_eq!(cgroup(&v1), CgroupMode::Legacy);
    let (_t, none) = tree(&[]);
    assert_eq!(cgroup(&none), CgroupMode::Unknown);
}

#[test]
fn iommu_groups_are_counted() {
    let (_t, root) = tree(&[
        ("sys/kernel/iommu_groups/0/type", "DMA"),
        ("sys/kernel/iommu_groups/1/type", "DMA"),
    ]);
    assert_eq!(iommu(&root).groups, Some(2));
    let (_t, none) = tree(&[]);
    assert_eq!(iommu(&none).groups, None);
}
