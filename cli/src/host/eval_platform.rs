//! Verdicts on the platform around the CPU: IOMMU, hugepages, NUMA, cgroups. Pure.

use super::args::Profile;
use super::facts::{CgroupMode, HugepageFacts, IommuFacts, NumaNode};
use super::verdict::{Check, Status};

/// `iommu`: IOMMU groups exist (device passthrough needs them). Production needs them.
pub fn iommu(profile: Profile, f: &IommuFacts) -> Check {
    const ID: &str = "iommu";
    const REMEDY: &str = "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on \
                          (AMD: amd_iommu=on)";
    match f.groups {
        Some(n) if n > 0 => Check::pass(ID, format!("{n} IOMMU groups")),
        Some(_) => Check::problem(
            ID,
            Status::required_in_production(profile),
            "/sys/kernel/iommu_groups is empty: no IOMMU, no device passthrough",
            REMEDY,
        ),
        None => Check::problem(
            ID,
            Status::required_in_production(profile),
            "no /sys/kernel/iommu_groups: the kernel has no IOMMU support",
            REMEDY,
        ),
    }
}

/// `1 GiB`, `2 MiB`, `512 KiB` for a size in KiB.
fn kib_text(kib: u64) -> String {
    match kib {
        k if k >= 1 << 20 && k % (1 << 20) == 0 => format!("{} GiB", k >> 20),
        k if k >= 1 << 10 && k % (1 << 10) == 0 => format!("{} MiB", k >> 10),
        k => format!("{k} KiB"),
    }
}

/// `hugepages`: pages reserved for VMs that ask for them. None reserved is a warning in
/// production (such VMs cannot start) and fine in development.
pub fn hugepages(profile: Profile, f: Option<&HugepageFacts>) -> Check {
    const ID: &str = "hugepages";
    let Some(f) = f else {
        return Check::problem(
            ID,
            Status::Warn,
            "/proc/meminfo could not be read",
            "run ivctl host check where /proc is mounted",
        );
    };
    let sizes = f.sizes_kib.iter().map(|k| kib_text(*k)).collect::<Vec<_>>();
    let offered = if sizes.is_empty() {
        "none".to_owned()
    } else {
        sizes.join(", ")
    };
    if f.total > 0 {
        return Check::pass(
            ID,
            format!(
                "{} x {} reserved, {} free (sizes offered: {offered})",
                f.total,
                kib_text(f.size_kib),
                f.free
            ),
        );
    }
    let finding = format!("none reserved (sizes offered: {offered})");
    match profile {
        Profile::Development => Check::pass(ID, finding),
        Profile::Production => Check::problem(
            ID,
            Status::Warn,
            finding,
            format!(
                "reserve pages for hugepage-backed VMs: echo N > /sys/kernel/mm/hugepages/\
                 hugepages-{}kB/nr_hugepages, or hugepages=N on the kernel command line",
                f.size_kib
            ),
        ),
    }
}

/// `numa`: the nodes, their CPUs and memory (information; missing data is a warning).
pub fn numa(nodes: &[NumaNode]) -> Check {
    const ID: &str = "numa";
    if nodes.is_empty() {
        return Check::problem(
            ID,
            Status::Warn,
            "no NUMA nodes under /sys/devices/system/node",
            "mount sysfs; VM placement cannot take NUMA into account without it",
        );
    }
    let each = nodes
        .iter()
        .map(|n| {
            let mem = n
                .mem_kib
                .map(|k| format!(", {} MiB", k >> 10))
                .unwrap_or_default();
            format!("node{}: CPUs {}{mem}", n.id, n.cpus)
        })
        .collect::<Vec<_>>();
    let count = match nodes.len() {
        1 => "1 node".to_owned(),
        n => format!("{n} nodes"),
    };
    Check::pass(ID, format!("{count} ({})", each.join("; ")))
}

/// `cgroup`: the unified (v2) hierarchy, which production needs.
pub fn cgroup(profile: Profile, mode: CgroupMode) -> Check {
    const ID: &str = "cgroup";
    const REMEDY: &str = "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only)";
    let finding = match mode {
        CgroupMode::Unified => return Check::pass(ID, "v2 (unified hierarchy)"),
        CgroupMode::Hybrid => "hybrid: v1 controllers, v2 only at /sys/fs/cgroup/unified",
        CgroupMode::Legacy => "v1 only",
        CgroupMode::Unknown => "no cgroup hierarchy recognised at /sys/fs/cgroup",
    };
    Check::problem(ID, Status::required_in_production(profile), finding, REMEDY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_iommu_groups_fail_in_production_and_warn_in_development() {
        let empty = IommuFacts { groups: Some(0) };
        assert_eq!(iommu(Profile::Production, &empty).status, Status::Fail);
        assert_eq!(iommu(Profile::Development, &empty).status, Status::Warn);
        let missing = iommu(Profile::Production, &IommuFacts { groups: None });
        assert!(missing.remedy.unwrap().contains("intel_iommu=on"));
        let some = iommu(Profile::Production, &IommuFacts { groups: Some(14) });
        assert_eq!(
            (some.status, some.finding.as_str()),
            (Status::Pass, "14 IOMMU groups")
        );
    }

    #[test]
    fn hugepages_report_reservation_and_sizes() {
        let none = HugepageFacts {
            total: 0,
            free: 0,
            size_kib: 2048,
            sizes_kib: vec![1048576, 2048],
        };
        let prod = hugepages(Profile::Production, Some(&none));
        assert_eq!(prod.status, Status::Warn);
        assert_eq!(prod.finding, "none reserved (sizes offered: 1 GiB, 2 MiB)");
        assert!(
            prod.remedy
                .unwrap()
                .contains("hugepages-2048kB/nr_hugepages")
        );
        assert_eq!(
            hugepages(Profile::Development, Some(&none)).status,
            Status::Pass
        );
        let some = HugepageFacts {
            total: 512,
            free: 500,
            ..none
        };
        let c = hugepages(Profile::Production, Some(&some));
        assert_eq!(c.status, Status::Pass);
        assert_eq!(
            c.finding,
            "512 x 2 MiB reserved, 500 free (sizes offered: 1 GiB, 2 MiB)"
        );
        assert_eq!(hugepages(Profile::Production, None).status, Status::Warn);
    }

    #[test]
    fn numa_lists_each_node() {
        let nodes = [
            NumaNode {
                id: 0,
                cpus: "0-15".into(),
                mem_kib: Some(64 << 20),
            },
            NumaNode {
                id: 1,
                cpus: "16-31".into(),
                mem_kib: None,
            },
        ];
        let c = numa(&nodes);
        assert_eq!(c.status, Status::Pass);
        assert_eq!(
            c.finding,
            "2 nodes (node0: CPUs 0-15, 65536 MiB; node1: CPUs 16-31)"
        );
        assert_eq!(numa(&[]).status, Status::Warn);
    }

    #[test]
    fn only_cgroup_v2_passes_production() {
        assert_eq!(
            cgroup(Profile::Production, CgroupMode::Unified).status,
            Status::Pass
        );
        for mode in [CgroupMode::Hybrid, CgroupMode::Legacy, CgroupMode::Unknown] {
            let prod = cgroup(Profile::Production, mode);
            assert_eq!(prod.status, Status::Fail, "{mode:?}");
            assert!(prod.remedy.unwrap().contains("unified_cgroup_hierarchy=1"));
            assert_eq!(cgroup(Profile::Development, mode).status, Status::Warn);
        }
    }
}
