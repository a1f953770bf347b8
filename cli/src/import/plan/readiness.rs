//! Per-VM readiness: an inventory row described as the importer's [`SourceVm`], judged by
//! the advisor's knowledge base (`advisor-rules.yaml`, or `--rules FILE`) and by the
//! planner's own rules (`plan-rules.yaml`, or `--plan-rules FILE`) with the same engine.
//!
//! The storage-quota rules of the advisor are left out here: the planner checks quotas itself,
//! cumulatively over the waves (`capacity`). Pure.

use std::collections::BTreeMap;

use crate::import::advisor::{self, ExtraFacts, Fact, Rule, Severity};
use crate::import::model::{
    ControllerKind, DeviceKind, OtherDevice, SourceDisk, SourceFirmware, SourceNic, SourceVm,
};

use super::inventory::InvVm;
use super::model::{PlanFinding, Readiness};

/// The planner's rule file, embedded at build time.
pub const PLAN_RULES_YAML: &str = include_str!("plan-rules.yaml");

/// Advisor rules the planner replaces with its own cumulative check.
const REPLACED: [&str; 2] = ["storage-quota", "storage-quota-unknown"];

/// A MiB figure in bytes, saturating (sizes are capped at 1 EiB when read).
pub fn mib_bytes(mib: u64) -> u64 {
    mib.saturating_mul(1 << 20)
}

fn controller(text: Option<&str>) -> (ControllerKind, u32) {
    let t = text.unwrap_or_default().to_ascii_lowercase();
    let index = t
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let kind = if t.contains("sata") {
        ControllerKind::Sata
    } else if t.contains("ide") {
        ControllerKind::Ide
    } else if t.contains("nvme") {
        ControllerKind::Nvme
    } else if t.contains("paravirtual") || t.contains("pvscsi") {
        ControllerKind::Pvscsi
    } else if t.contains("sas") {
        ControllerKind::LsiLogicSas
    } else {
        ControllerKind::LsiLogic
    };
    (kind, index)
}

/// RVTools writes the guest OS as people read it ("Microsoft Windows Server 2019 (64-bit)",
/// "Red Hat Enterprise Linux 8 (64-bit)"); the advisor knows VMware's identifiers
/// (`windows2019srv_64Guest`, `rhel8_64Guest`). A full name becomes the identifier of its
/// family; an identifier (no spaces) is kept.
pub fn guest_id(os: &str) -> String {
    if !os.contains(' ') {
        return os.to_string();
    }
    let l = os.to_ascii_lowercase();
    const LINUX: [&str; 10] = [
        "linux", "ubuntu", "debian", "red hat", "centos", "suse", "fedora", "rocky", "alma",
        "oracle",
    ];
    if l.contains("windows") {
        "windowsGuest".into()
    } else if LINUX.iter().any(|w| l.contains(w)) {
        "otherLinux64Guest".into()
    } else {
        "otherGuest".into()
    }
}

/// The inventory row as the importer's neutral model. Without vDisk rows one disk of vInfo's
/// provisioned size is assumed (and reported by the `disks-from-vinfo` rule).
pub fn source_vm(vm: &InvVm) -> SourceVm {
    let mut disks: Vec<SourceDisk> = vm
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (kind, index) = controller(d.controller.as_deref());
            SourceDisk {
                controller: kind,
                controller_index: index,
                unit: d.unit.unwrap_or(u32::try_from(i).unwrap_or(u32::MAX)),
                file: Some(d.label.clone()),
                capacity_bytes: Some(mib_bytes(d.capacity_mib)),
                independent: d
                    .mode
                    .as_deref()
                    .is_some_and(|m| m.to_ascii_lowercase().contains("independent")),
                shared: d.shared,
                raw_device_mapping: d.raw,
            }
        })
        .collect();
    if disks.is_empty()
        && let Some(mib) = vm.provisioned_mib.filter(|m| *m > 0)
    {
        disks.push(SourceDisk {
            controller: ControllerKind::LsiLogic,
            controller_index: 0,
            unit: 0,
            file: Some("provisioned (vInfo)".into()),
            capacity_bytes: Some(mib_bytes(mib)),
            independent: false,
            shared: false,
            raw_device_mapping: false,
        });
    }
    let mut devices: Vec<OtherDevice> = vm
        .usb_devices
        .iter()
        .map(|u| OtherDevice {
            kind: DeviceKind::UsbPassthrough,
            label: u.clone(),
        })
        .collect();
    for n in &vm.nics {
        let adapter = n
            .adapter
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let kind = if adapter.contains("sriov") {
            Some(DeviceKind::SriovNic)
        } else if adapter.contains("passthr") {
            Some(DeviceKind::PciPassthrough)
        } else {
            None
        };
        if let Some(kind) = kind {
            devices.push(OtherDevice {
                kind,
                label: n.label.clone(),
            });
        }
    }
    let efi = vm
        .firmware
        .as_deref()
        .is_some_and(|f| f.to_ascii_lowercase().contains("efi"));
    SourceVm {
        name: vm.name.clone(),
        hardware_version: vm.hw_version.clone(),
        guest_os: vm.guest_os.as_deref().map(guest_id),
        vcpus: vm.vcpus,
        cores_per_socket: vm.cores_per_socket.max(1),
        memory_mib: vm.memory_mib,
        firmware: if efi {
            SourceFirmware::Efi
        } else {
            SourceFirmware::Bios
        },
        secure_boot: vm.secure_boot,
        disks,
        nics: vm
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| SourceNic {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                model: n
                    .adapter
                    .as_deref()
                    .unwrap_or("vmxnet3")
                    .to_ascii_lowercase(),
                network: n.network.clone(),
                mac: n.mac.clone(),
            })
            .collect(),
        devices,
        vmware_tools: vm.tools_running,
        snapshots: vm.snapshots,
        boot_disk: None,
    }
}

/// What the planner knows about a VM beyond its inventory row.
#[derive(Clone, Debug, Default)]
pub struct PlanContext {
    /// Port groups mapped with --network-map.
    pub mapped_networks: Vec<String>,
    /// How the tenant was chosen: `rule N`, `default` or `none`.
    pub tenant_by: String,
    /// Whether an export was found.
    pub has_export: bool,
    /// Memory right-sized from, to (MiB), when it was.
    pub right_sized: Option<(u64, u64)>,
}

/// The advisor's extra facts for an inventory VM.
pub fn extra_facts(src: &SourceVm, ctx: &PlanContext) -> ExtraFacts {
    let networks: Vec<String> = src.nics.iter().filter_map(|n| n.network.clone()).collect();
    let mut unmapped: Vec<String> = networks
        .into_iter()
        .filter(|n| !ctx.mapped_networks.contains(n))
        .collect();
    unmapped.dedup();
    ExtraFacts {
        disk_bytes: src
            .disks
            .iter()
            .filter_map(|d| d.capacity_bytes)
            .fold(0u64, u64::saturating_add),
        unmapped_networks: unmapped,
        nic_models_changed: src
            .nics
            .iter()
            .filter(|n| n.model != "virtio")
            .map(|n| format!("nic{}: {} → virtio", n.index, n.model))
            .collect(),
        ..ExtraFacts::default()
    }
}

/// The planner's facts, by name (the names `plan-rules.yaml` tests).
pub fn plan_facts(vm: &InvVm, ctx: &PlanContext) -> BTreeMap<&'static str, Fact> {
    let mut missing = Vec::new();
    if vm.vcpus == 0 {
        missing.push("vCPUs".to_string());
    }
    if vm.memory_mib == 0 {
        missing.push("memory".to_string());
    }
    BTreeMap::from([
        ("inventory_missing", Fact::Items(missing)),
        (
            "disks_assumed",
            Fact::Bool(vm.disks.is_empty() && vm.provisioned_mib.is_some_and(|m| m > 0)),
        ),
        (
            "direct_path_io",
            Fact::Items(
                vm.nics
                    .iter()
                    .filter(|n| n.direct_path_io)
                    .map(|n| n.label.clone())
                    .collect(),
            ),
        ),
        ("no_tenant", Fact::Bool(ctx.tenant_by == "none")),
        ("default_tenant", Fact::Bool(ctx.tenant_by == "default")),
        ("no_export", Fact::Bool(!ctx.has_export)),
        (
            "powerstate",
            Fact::Text(vm.powerstate.clone().unwrap_or_default()),
        ),
        (
            "memory_right_sized",
            Fact::Items(
                ctx.right_sized
                    .map(|(from, to)| format!("{from} MiB → {to} MiB"))
                    .into_iter()
                    .collect(),
            ),
        ),
    ])
}

/// Findings of both rule sets, blockers first, and the readiness they give.
pub fn assess(
    advisor_rules: &[Rule],
    plan_rules: &[Rule],
    advisor_facts: &BTreeMap<&'static str, Fact>,
    plan_facts: &BTreeMap<&'static str, Fact>,
) -> (Vec<PlanFinding>, Readiness) {
    let mut findings: Vec<PlanFinding> = advisor::evaluate(advisor_rules, advisor_facts)
        .into_iter()
        .filter(|f| !REPLACED.contains(&f.id.as_str()))
        .chain(advisor::evaluate(plan_rules, plan_facts))
        .map(PlanFinding::from)
        .collect();
    findings.sort_by_key(|f| f.severity);
    (findings.clone(), readiness(&findings))
}

/// Blocked on a blocker, needs work on a manual step, else ready.
pub fn readiness(findings: &[PlanFinding]) -> Readiness {
    if findings.iter().any(|f| f.severity == Severity::Blocker) {
        Readiness::Blocked
    } else if findings.iter().any(|f| f.manual_step) {
        Readiness::NeedsWork
    } else {
        Readiness::Ready
    }
}

/// The embedded planner rules.
pub fn builtin_plan_rules() -> Vec<Rule> {
    // Embedded and loaded by a unit test: failing here is a build bug.
    advisor::load_rules(PLAN_RULES_YAML)
        .unwrap_or_else(|e| panic!("embedded plan-rules.yaml is invalid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::plan::inventory::{InvDisk, InvNic};

    fn vm() -> InvVm {
        InvVm {
            name: "db-01".into(),
            vcpus: 4,
            cores_per_socket: 2,
            memory_mib: 8192,
            guest_os: Some("Microsoft Windows Server 2019 (64-bit)".into()),
            disks: vec![InvDisk {
                label: "Hard disk 1".into(),
                capacity_mib: 40960,
                controller: Some("SATA controller 1".into()),
                unit: Some(2),
                ..InvDisk::default()
            }],
            nics: vec![InvNic {
                label: "Network adapter 1".into(),
                adapter: Some("PCIPassthrough".into()),
                network: Some("VM Network".into()),
                direct_path_io: true,
                ..InvNic::default()
            }],
            ..InvVm::default()
        }
    }

    #[test]
    fn the_plan_rules_load_cite_a_source_and_name_only_known_facts() {
        let known = plan_facts(&vm(), &PlanContext::default());
        for r in builtin_plan_rules() {
            assert!(
                known.contains_key(r.when.fact.as_str()),
                "{} tests {}",
                r.id,
                r.when.fact
            );
            assert!(
                r.source.as_deref().is_some_and(|s| s.len() > 10),
                "{} cites no source",
                r.id
            );
        }
    }

    #[test]
    fn every_rule_of_the_knowledge_base_cites_its_source() {
        for r in advisor::builtin_rules() {
            assert!(
                r.source.as_deref().is_some_and(|s| s.len() > 10),
                "advisor rule {} cites no source",
                r.id
            );
        }
    }

    #[test]
    fn full_guest_os_names_from_rvtools_map_to_the_advisor_families() {
        use crate::import::model::{GuestFamily, guest_family};
        let family = |os: &str| guest_family(Some(&guest_id(os)));
        assert_eq!(
            family("Microsoft Windows Server 2019 (64-bit)"),
            GuestFamily::Windows
        );
        assert_eq!(
            family("Red Hat Enterprise Linux 8 (64-bit)"),
            GuestFamily::Linux
        );
        assert_eq!(family("FreeBSD 12 (64-bit)"), GuestFamily::Other);
        assert_eq!(guest_id("rhel8_64Guest"), "rhel8_64Guest");
    }

    #[test]
    fn a_passthrough_nic_blocks_and_the_disk_keeps_its_controller() {
        let src = source_vm(&vm());
        assert_eq!(src.disks[0].slot(), "sata1:2");
        assert_eq!(src.disks[0].capacity_bytes, Some(40 << 30));
        let ctx = PlanContext {
            tenant_by: "rule 1".into(),
            has_export: true,
            ..PlanContext::default()
        };
        let (findings, readiness) = assess(
            &advisor::builtin_rules(),
            &builtin_plan_rules(),
            &advisor::facts(&src, &extra_facts(&src, &ctx)),
            &plan_facts(&vm(), &ctx),
        );
        let ids: Vec<&str> = findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(readiness, Readiness::Blocked);
        for id in [
            "vgpu",
            "direct-path-io",
            "unmapped-network",
            "windows-virtio-drivers",
        ] {
            assert!(ids.contains(&id), "{id} not in {ids:?}");
        }
        assert!(
            !ids.iter().any(|i| i.starts_with("storage-quota")),
            "{ids:?}"
        );
    }

    #[test]
    fn a_vm_without_size_or_tenant_is_blocked_by_the_plan_rules() {
        let mut v = vm();
        v.vcpus = 0;
        v.nics.clear();
        let facts = plan_facts(
            &v,
            &PlanContext {
                tenant_by: "none".into(),
                ..PlanContext::default()
            },
        );
        let found = advisor::evaluate(&builtin_plan_rules(), &facts);
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert!(
            ids.contains(&"inventory-incomplete") && ids.contains(&"no-tenant"),
            "{ids:?}"
        );
        assert_eq!(found[0].detail, "vCPUs");
    }
}
