//! Gathering the host's facts from /proc, /sys, /dev and libvirt's qemu.conf. Reads only.
//!
//! Every path is taken under a [`HostRoot`] (`/` in production), so the parsing is tested
//! against a synthetic tree in a temporary directory. Users and groups come from NSS.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use super::facts::{
    CgroupMode, CpuFacts, HugepageFacts, IommuFacts, KvmDevice, NestedParam, NumaNode, Ownership,
    QemuUser,
};

/// Where the host's /proc, /sys and /dev are (`/`, or a test's tree).
#[derive(Clone, Debug)]
pub struct HostRoot(pub PathBuf);

impl HostRoot {
    /// The real host.
    pub fn system() -> Self {
        Self(PathBuf::from("/"))
    }

    /// `rel` (e.g. `proc/cpuinfo`) under the root.
    fn at(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// A file's text; `None` when it cannot be read.
    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.at(rel)).ok()
    }
}

/// The whitespace-separated words of the first `flags` line of /proc/cpuinfo.
fn cpu_flags(cpuinfo: &str) -> Vec<&str> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// CPU flags and the KVM module's `nested` parameter.
pub fn cpu(root: &HostRoot) -> CpuFacts {
    let text = root.read("proc/cpuinfo").unwrap_or_default();
    let flags = cpu_flags(&text);
    let nested_param = ["kvm_intel", "kvm_amd"].into_iter().find_map(|m| {
        root.read(&format!("sys/module/{m}/parameters/nested"))
            .map(|value| NestedParam {
                module: m.to_owned(),
                value: value.trim().to_owned(),
            })
    });
    CpuFacts {
        vmx: flags.contains(&"vmx"),
        svm: flags.contains(&"svm"),
        hypervisor: flags.contains(&"hypervisor"),
        nested_param,
    }
}

/// Owner, group (with their names) and permission bits.
pub fn ownership(meta: &std::fs::Metadata) -> Ownership {
    let (uid, gid) = (meta.uid(), meta.gid());
    let owner = User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let group = Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name);
    Ownership {
        uid,
        gid,
        mode: meta.mode() & 0o7777,
        owner,
        group,
    }
}

/// What /dev/kvm is.
pub fn kvm_device(root: &HostRoot) -> KvmDevice {
    match std::fs::metadata(root.at("dev/kvm")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KvmDevice::Missing,
        Err(e) => KvmDevice::Unreadable(e.to_string()),
        Ok(m) if m.file_type().is_char_device() => KvmDevice::CharDevice(ownership(&m)),
        Ok(m) => KvmDevice::NotCharDevice(ownership(&m)),
    }
}

/// The value of an uncommented `key = "value"` line of qemu.conf.
fn conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// A qemu.conf `user` value: a name, `+uid`, or a number that is a name or else a uid.
fn lookup_user(spec: &str) -> Result<(String, Uid, Gid), String> {
    let by_uid = |n: &str| -> Option<User> {
        let uid = n.parse().ok()?;
        User::from_uid(Uid::from_raw(uid)).ok().flatten()
    };
    let user = match spec.strip_prefix('+') {
        Some(n) => by_uid(n),
        None => User::from_name(spec)
            .ok()
            .flatten()
            .or_else(|| by_uid(spec)),
    };
    let user = user.ok_or_else(|| format!("no user {spec:?} on this host"))?;
    Ok((user.name, user.uid, user.gid))
}

/// A qemu.conf `group` value, as [`lookup_user`] reads a user.
fn lookup_group(spec: &str) -> Option<Gid> {
    let by_gid = |n: &str| -> Option<Gid> {
        let gid = n.parse().ok()?;
        Group::from_gid(Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.gid)
    };
    match spec.strip_prefix('+') {
        Some(n) => by_gid(n),
        None => Group::from_name(spec)
            .ok()
            .flatten()
            .map(|g| g.gid)
            .or_else(|| by_gid(spec)),
    }
}

/// Who QEMU runs as: qemu.conf's `user` (else Debian's `libvirt-qemu`, else `qemu`), with its
/// groups and qemu.conf's `group`, as libvirt sets them before it executes QEMU.
pub fn qemu_user(qemu_conf: &Path) -> Result<QemuUser, String> {
    let conf = std::fs::read_to_string(qemu_conf).unwrap_or_default();
    let (name, uid, primary) = match conf_value(&conf, "user") {
        Some(spec) => {
            lookup_user(&spec).map_err(|e| format!("{e} (user= in {})", qemu_conf.display()))?
        }
        None => lookup_user("libvirt-qemu")
            .or_else(|_| lookup_user("qemu"))
            .map_err(|_| {
                "neither libvirt-qemu nor qemu exists (is libvirt installed?)".to_owned()
            })?,
    };
    let mut gids: Vec<u32> = std::ffi::CString::new(name.clone())
        .ok()
        .and_then(|c| nix::unistd::getgrouplist(&c, primary).ok())
        .unwrap_or_else(|| vec![primary])
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    if let Some(g) = conf_value(&conf, "group").as_deref().and_then(lookup_group) {
        gids.push(g.as_raw());
    }
    gids.sort_unstable();
    gids.dedup();
    Ok(QemuUser {
        name,
        uid: uid.as_raw(),
        gids,
    })
}

/// How many IOMMU groups.
pub fn iommu(root: &HostRoot) -> IommuFacts {
    let groups = std::fs::read_dir(root.at("sys/kernel/iommu_groups"))
        .ok()
        .map(|d| d.filter_map(Result::ok).count());
    IommuFacts { groups }
}

/// A `Key:   123 kB` line of a meminfo file, as a number.
fn meminfo_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim_end().ends_with(key) {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Reserved hugepages and the sizes offered.
pub fn hugepages(root: &HostRoot) -> Option<HugepageFacts> {
    let text = root.read("proc/meminfo")?;
    let mut sizes_kib: Vec<u64> = std::fs::read_dir(root.at("sys/kernel/mm/hugepages"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    sizes_kib.sort_unstable();
    sizes_kib.reverse();
    Some(HugepageFacts {
        total: meminfo_value(&text, "HugePages_Total").unwrap_or(0),
        free: meminfo_value(&text, "HugePages_Free").unwrap_or(0),
        size_kib: meminfo_value(&text, "Hugepagesize").unwrap_or(0),
        sizes_kib,
    })
}

/// The NUMA nodes, in order.
pub fn numa(root: &HostRoot) -> Vec<NumaNode> {
    let Ok(dir) = std::fs::read_dir(root.at("sys/devices/system/node")) else {
        return Vec::new();
    };
    let mut nodes: Vec<NumaNode> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let id: u32 = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            let base = format!("sys/devices/system/node/node{id}");
            let cpus = root.read(&format!("{base}/cpulist")).unwrap_or_default();
            let mem_kib = root
                .read(&format!("{base}/meminfo"))
                .and_then(|t| meminfo_value(&t, "MemTotal"));
            Some(NumaNode {
                id,
                cpus: cpus.trim().to_owned(),
                mem_kib,
            })
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    nodes
}

/// Which cgroup hierarchy is mounted at /sys/fs/cgroup.
pub fn cgroup(root: &HostRoot) -> CgroupMode {
    if root.at("sys/fs/cgroup/cgroup.controllers").exists() {
        CgroupMode::Unified
    } else if root.at("sys/fs/cgroup/unified/cgroup.controllers").exists() {
        CgroupMode::Hybrid
    } else if ["memory", "cpu", "pids"]
        .iter()
        .any(|c| root.at(&format!("sys/fs/cgroup/{c}")).is_dir())
    {
        CgroupMode::Legacy
    } else {
        CgroupMode::Unknown
    }
}

#[cfg(test)]
#[path = "gather_tests.rs"]
mod tests;
