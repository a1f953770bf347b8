//! The migration advisor: facts about a VM, tested against rules kept in a data file.
//!
//! Knowledge (what matters, how bad it is, what to do) lives in `advisor-rules.yaml`, not
//! here. This module computes *facts* from the parsed VM and the inspected disks (pure) and
//! evaluates each rule's `when` test on them. Adding a rule on an existing fact needs no code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{DeviceKind, GuestFamily, SourceVm, guest_family};

/// The rule file, embedded at build time.
pub const RULES_YAML: &str = include_str!("advisor-rules.yaml");

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Stops the import unless `--force`.
    Blocker,
    /// Imported, but something needs attention.
    Warning,
    /// For the record.
    Info,
}

/// A rule's machine test on one fact.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// The fact's name.
    pub fact: String,
    /// The fact is true, non-zero, or a non-empty list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// The fact (a number, or a list's length) is greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<u64>,
    /// The fact equals this (text compared case-insensitively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
}

/// One rule of the knowledge base.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable identifier.
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// One-line title.
    pub title: String,
    /// What the rule looks at, in words.
    pub check: String,
    /// The machine test.
    pub when: When,
    /// What to do about it.
    pub remedy: String,
    /// Whether acting on it is a manual migration step.
    #[serde(default)]
    pub manual_step: bool,
    /// Where the rule's fact comes from: documentation, source code or a test here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<Rule>,
}

/// Why the rule file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Not valid YAML for rules.
    #[error("advisor rules do not parse")]
    Parse(#[source] serde_saphyr::Error),
    /// A rule that tests nothing or more than one thing.
    #[error("rule {0} must have exactly one of present, gt, equals")]
    BadTest(String),
    /// Two rules with one id.
    #[error("rule id {0} is used twice")]
    Duplicate(String),
}

/// Load and check the rules.
pub fn load_rules(yaml: &str) -> Result<Vec<Rule>, RulesError> {
    let file: RuleFile = serde_saphyr::from_str(yaml).map_err(RulesError::Parse)?;
    let mut seen = std::collections::BTreeSet::new();
    for r in &file.rules {
        let tests = [
            r.when.present.is_some(),
            r.when.gt.is_some(),
            r.when.equals.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            return Err(RulesError::BadTest(r.id.clone()));
        }
        if !seen.insert(r.id.clone()) {
            return Err(RulesError::Duplicate(r.id.clone()));
        }
    }
    Ok(file.rules)
}

/// The embedded rules.
pub fn builtin_rules() -> Vec<Rule> {
    // The file is part of the binary and a unit test loads it, so failing here is a build bug.
    load_rules(RULES_YAML).unwrap_or_else(|e| panic!("embedded advisor-rules.yaml is invalid: {e}"))
}

/// A fact's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Fact {
    /// Yes or no.
    Bool(bool),
    /// A number.
    Count(u64),
    /// A word.
    Text(String),
    /// The things concerned (disk slots, device names...).
    Items(Vec<String>),
}

impl Fact {
    fn present(&self) -> bool {
        match self {
            Fact::Bool(b) => *b,
            Fact::Count(n) => *n > 0,
            Fact::Text(t) => !t.is_empty(),
            Fact::Items(v) => !v.is_empty(),
        }
    }
    fn number(&self) -> u64 {
        match self {
            Fact::Bool(b) => u64::from(*b),
            Fact::Count(n) => *n,
            Fact::Text(_) => 0,
            Fact::Items(v) => v.len() as u64,
        }
    }
    fn equals(&self, v: &serde_json::Value) -> bool {
        match (self, v) {
            (Fact::Bool(b), serde_json::Value::Bool(w)) => b == w,
            (Fact::Text(t), serde_json::Value::String(w)) => t.eq_ignore_ascii_case(w),
            (f, serde_json::Value::Number(n)) => n.as_u64() == Some(f.number()),
            _ => false,
        }
    }
    fn describe(&self) -> String {
        match self {
            Fact::Bool(_) => String::new(),
            Fact::Count(n) => n.to_string(),
            Fact::Text(t) => t.clone(),
            Fact::Items(v) => v.join(", "),
        }
    }
}

/// Facts that need more than the descriptor: disk inspection and the quota.
#[derive(Clone, Debug, Default)]
pub struct ExtraFacts {
    /// Slots of disks that are snapshot deltas, with their depth.
    pub snapshot_disks: Vec<String>,
    /// Slots of disks that are RDMs according to their VMDK.
    pub rdm_disks: Vec<String>,
    /// Whether a disk records a VMware Tools version.
    pub tools_in_disk: bool,
    /// Sum of the disks' virtual sizes.
    pub disk_bytes: u64,
    /// What is left of the storage quota, if known.
    pub quota_remaining_bytes: Option<u64>,
    /// VMware networks without a mapping.
    pub unmapped_networks: Vec<String>,
    /// Adapters whose model changes, as `nic0: vmxnet3 → virtio`.
    pub nic_models_changed: Vec<String>,
    /// Files that no manifest checksum covers.
    pub unverified_files: Vec<String>,
    /// OVF vApp properties not carried over, each with why.
    pub vapp_properties_dropped: Vec<String>,
    /// Why a vTPM is not carried over (`--no-tpm`); `None`: carried as `spec.tpm`.
    pub tpm_dropped: Option<String>,
}

/// Every fact the rules may test, by name.
pub fn facts(vm: &SourceVm, extra: &ExtraFacts) -> BTreeMap<&'static str, Fact> {
    let slots = |f: &dyn Fn(&super::model::SourceDisk) -> bool| -> Vec<String> {
        vm.disks.iter().filter(|d| f(d)).map(|d| d.slot()).collect()
    };
    let devices = |kinds: &[DeviceKind]| -> Vec<String> {
        vm.devices
            .iter()
            .filter(|d| kinds.contains(&d.kind))
            .map(|d| d.label.clone())
            .collect()
    };
    let mut snapshots = extra.snapshot_disks.clone();
    if vm.snapshots > 0 {
        snapshots.push(format!(
            "{} snapshot(s) recorded in the .vmsd",
            vm.snapshots
        ));
    }
    let mut rdm = slots(&|d| d.raw_device_mapping);
    for r in &extra.rdm_disks {
        if !rdm.contains(r) {
            rdm.push(r.clone());
        }
    }
    let family = match guest_family(vm.guest_os.as_deref()) {
        GuestFamily::Windows => "windows",
        GuestFamily::Linux => "linux",
        GuestFamily::Other => "other",
    };
    let tpm = super::tpm::map(vm, extra.tpm_dropped.as_deref());
    let over = extra
        .quota_remaining_bytes
        .map_or(0, |left| extra.disk_bytes.saturating_sub(left));
    BTreeMap::from([
        ("snapshots", Fact::Items(snapshots)),
        ("rdm_disks", Fact::Items(rdm)),
        ("independent_disks", Fact::Items(slots(&|d| d.independent))),
        ("shared_disks", Fact::Items(slots(&|d| d.shared))),
        ("secure_boot", Fact::Bool(vm.secure_boot)),
        ("guest_os_family", Fact::Text(family.into())),
        (
            "vmware_tools",
            Fact::Bool(vm.vmware_tools || extra.tools_in_disk),
        ),
        (
            "usb_passthrough",
            Fact::Items(devices(&[DeviceKind::UsbPassthrough])),
        ),
        (
            "usb_controllers",
            Fact::Items(devices(&[DeviceKind::UsbController])),
        ),
        (
            "pci_devices",
            Fact::Items(devices(&[DeviceKind::Vgpu, DeviceKind::PciPassthrough])),
        ),
        ("sriov_nics", Fact::Items(devices(&[DeviceKind::SriovNic]))),
        ("vtpm", Fact::Items(devices(&[DeviceKind::Vtpm]))),
        ("vtpm_carried", Fact::Items(tpm.carried())),
        ("vtpm_dropped", Fact::Items(tpm.dropped_items())),
        (
            "serial_network",
            Fact::Items(devices(&[DeviceKind::SerialNetwork])),
        ),
        (
            "dropped_devices",
            Fact::Items(devices(&[
                DeviceKind::Cdrom,
                DeviceKind::Floppy,
                DeviceKind::Sound,
                DeviceKind::Serial,
            ])),
        ),
        ("storage_over_quota_bytes", Fact::Count(over)),
        (
            "storage_quota_unknown",
            Fact::Bool(extra.quota_remaining_bytes.is_none()),
        ),
        ("disk_count", Fact::Count(vm.disks.len() as u64)),
        ("nic_count", Fact::Count(vm.nics.len() as u64)),
        (
            "pci_slots",
            Fact::Count((vm.disks.len() + vm.nics.len()) as u64),
        ),
        ("vcpus", Fact::Count(u64::from(vm.vcpus))),
        ("memory_below_minimum", Fact::Bool(vm.memory_mib < 64)),
        (
            "unmapped_networks",
            Fact::Items(extra.unmapped_networks.clone()),
        ),
        (
            "nic_models_changed",
            Fact::Items(extra.nic_models_changed.clone()),
        ),
        (
            "nvme_disks",
            Fact::Items(slots(&|d| {
                d.controller == super::model::ControllerKind::Nvme
            })),
        ),
        (
            "unverified_files",
            Fact::Items(extra.unverified_files.clone()),
        ),
        (
            "vapp_properties_dropped",
            Fact::Items(extra.vapp_properties_dropped.clone()),
        ),
    ])
}

/// A rule that fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The rule's id.
    pub id: String,
    /// Its severity.
    pub severity: Severity,
    /// Its title.
    pub title: String,
    /// The fact's value: what is concerned.
    pub detail: String,
    /// What to do.
    pub remedy: String,
    /// Whether it is a manual step.
    pub manual_step: bool,
}

/// Evaluate every rule; findings are ordered blockers first, then by rule order.
/// A rule naming an unknown fact never fires (a unit test keeps the file free of those).
pub fn evaluate(rules: &[Rule], facts: &BTreeMap<&'static str, Fact>) -> Vec<Finding> {
    let mut out: Vec<Finding> = rules
        .iter()
        .filter_map(|r| {
            let fact = facts.get(r.when.fact.as_str())?;
            let fired = if let Some(p) = r.when.present {
                fact.present() == p
            } else if let Some(n) = r.when.gt {
                fact.number() > n
            } else {
                r.when.equals.as_ref().is_some_and(|v| fact.equals(v))
            };
            fired.then(|| Finding {
                id: r.id.clone(),
                severity: r.severity,
                title: r.title.clone(),
                detail: fact.describe(),
                remedy: r.remedy.clone(),
                manual_step: r.manual_step,
            })
        })
        .collect();
    out.sort_by_key(|f| f.severity);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::model::{ControllerKind, OtherDevice, SourceDisk, SourceNic};

    fn disk(unit: u32) -> SourceDisk {
        SourceDisk {
            controller: ControllerKind::LsiLogic,
            controller_index: 0,
            unit,
            file: Some(format!("d{unit}.vmdk")),
            capacity_bytes: Some(1 << 30),
            independent: false,
            shared: false,
            raw_device_mapping: false,
        }
    }

    fn clean_vm() -> SourceVm {
        SourceVm {
            name: "clean".into(),
            guest_os: Some("debian11_64Guest".into()),
            vcpus: 2,
            cores_per_socket: 1,
            memory_mib: 2048,
            disks: vec![disk(0)],
            nics: vec![SourceNic {
                index: 0,
                model: "virtio".into(),
                network: Some("lan".into()),
                mac: None,
            }],
            ..SourceVm::default()
        }
    }

    fn ids(vm: &SourceVm, extra: &ExtraFacts) -> Vec<String> {
        evaluate(&builtin_rules(), &facts(vm, extra))
            .into_iter()
            .map(|f| f.id)
            .collect()
    }

    fn known_quota() -> ExtraFacts {
        ExtraFacts {
            quota_remaining_bytes: Some(u64::MAX),
            ..ExtraFacts::default()
        }
    }

    #[test]
    fn the_embedded_rules_load_and_name_only_known_facts() {
        let rules = builtin_rules();
        let known = facts(&clean_vm(), &ExtraFacts::default());
        for r in &rules {
            assert!(
                known.contains_key(r.when.fact.as_str()),
                "rule {} tests unknown fact {}",
                r.id,
                r.when.fact
            );
        }
        assert!(rules.len() >= 20);
    }

    #[test]
    fn the_rule_limits_match_the_api_limits() {
        let rules = builtin_rules();
        let gt = |id: &str| {
            rules
                .iter()
                .find(|r| r.id == id)
                .and_then(|r| r.when.gt)
                .unwrap()
        };
        assert_eq!(gt("too-many-disks"), ironvisor_crds::vm::MAX_DISKS as u64);
        assert_eq!(gt("too-many-nics"), ironvisor_crds::vm::MAX_NETWORKS as u64);
        assert_eq!(
            gt("too-many-vcpus"),
            u64::from(ironvisor_crds::vm::MAX_VCPUS)
        );
    }

    #[test]
    fn a_clean_linux_vm_has_no_findings() {
        assert!(ids(&clean_vm(), &known_quota()).is_empty());
    }

    #[test]
    fn a_problem_vm_fires_every_matching_rule_blockers_first() {
        let mut vm = clean_vm();
        vm.guest_os = Some("windows9Server64Guest".into());
        vm.secure_boot = true;
        vm.vmware_tools = true;
        vm.snapshots = 2;
        vm.disks.push(SourceDisk {
            shared: true,
            independent: true,
            ..disk(1)
        });
        vm.disks.push(SourceDisk {
            raw_device_mapping: true,
            ..disk(2)
        });
        vm.devices = vec![
            OtherDevice {
                kind: DeviceKind::UsbPassthrough,
                label: "usb:0".into(),
            },
            OtherDevice {
                kind: DeviceKind::Vgpu,
                label: "pcipassthru0".into(),
            },
            OtherDevice {
                kind: DeviceKind::SerialNetwork,
                label: "serial0".into(),
            },
            OtherDevice {
                kind: DeviceKind::Cdrom,
                label: "ide0:0".into(),
            },
        ];
        let extra = ExtraFacts {
            disk_bytes: 300 << 30,
            quota_remaining_bytes: Some(100 << 30),
            unmapped_networks: vec!["lan".into()],
            ..ExtraFacts::default()
        };
        let found = evaluate(&builtin_rules(), &facts(&vm, &extra));
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        for id in [
            "snapshots-present",
            "raw-device-mapping",
            "shared-disk",
            "vgpu",
            "storage-quota",
            "independent-disk",
            "efi-secure-boot",
            "windows-virtio-drivers",
            "usb-passthrough",
            "serial-over-network",
            "unmapped-network",
            "vmware-tools",
            "devices-dropped",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        assert!(found.windows(2).all(|w| w[0].severity <= w[1].severity));
        let quota = found.iter().find(|f| f.id == "storage-quota").unwrap();
        assert_eq!(quota.detail, (200u64 << 30).to_string());
        let shared = found.iter().find(|f| f.id == "shared-disk").unwrap();
        assert_eq!(shared.detail, "scsi0:1");
    }

    #[test]
    fn every_device_kind_fires_a_rule_so_nothing_is_dropped_silently() {
        let kinds = [
            DeviceKind::Cdrom,
            DeviceKind::Floppy,
            DeviceKind::UsbController,
            DeviceKind::UsbPassthrough,
            DeviceKind::Vgpu,
            DeviceKind::PciPassthrough,
            DeviceKind::SerialNetwork,
            DeviceKind::Serial,
            DeviceKind::Sound,
            DeviceKind::Vtpm,
            DeviceKind::SriovNic,
        ];
        for kind in kinds {
            let mut vm = clean_vm();
            vm.devices = vec![OtherDevice {
                kind,
                label: "dev0".into(),
            }];
            let found = evaluate(&builtin_rules(), &facts(&vm, &ExtraFacts::default()));
            assert!(
                found.iter().any(|f| f.detail.contains("dev0")),
                "{kind:?} fires no rule naming it: {found:?}"
            );
        }
        // A match on the enum: a new kind fails to compile until it is listed above.
        let _ = |k: DeviceKind| match k {
            DeviceKind::Cdrom
            | DeviceKind::Floppy
            | DeviceKind::UsbController
            | DeviceKind::UsbPassthrough
            | DeviceKind::Vgpu
            | DeviceKind::PciPassthrough
            | DeviceKind::SerialNetwork
            | DeviceKind::Serial
            | DeviceKind::Sound
            | DeviceKind::Vtpm
            | DeviceKind::SriovNic => (),
        };
    }

    #[test]
    fn too_many_disks_nics_and_vcpus_are_blockers() {
        let mut vm = clean_vm();
        vm.disks = (0..25).map(disk).collect();
        vm.nics = (0..17)
            .map(|i| SourceNic {
                index: i,
                model: "e1000".into(),
                network: None,
                mac: None,
            })
            .collect();
        vm.vcpus = 512;
        vm.memory_mib = 32;
        let found = evaluate(&builtin_rules(), &facts(&vm, &known_quota()));
        for id in [
            "too-many-disks",
            "too-many-nics",
            "too-many-devices",
            "too-many-vcpus",
            "memory-too-small",
        ] {
            let f = found
                .iter()
                .find(|f| f.id == id)
                .unwrap_or_else(|| panic!("{id} did not fire"));
            assert_eq!(f.severity, Severity::Blocker);
        }
    }

    #[test]
    fn an_unknown_quota_is_reported_as_info_only() {
        let found = evaluate(
            &builtin_rules(),
            &facts(&clean_vm(), &ExtraFacts::default()),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].id.as_str(), found[0].severity),
            ("storage-quota-unknown", Severity::Info)
        );
    }

    #[test]
    fn a_rule_file_with_two_tests_in_one_rule_is_refused() {
        let yaml = "rules:\n  - id: x\n    severity: info\n    title: t\n    check: c\n    remedy: r\n    when: { fact: vcpus, gt: 1, present: true }\n";
        assert!(matches!(load_rules(yaml), Err(RulesError::BadTest(_))));
        let yaml = "rules:\n  - id: x\n    severity: fatal\n    title: t\n    check: c\n    remedy: r\n    when: { fact: vcpus, gt: 1 }\n";
        assert!(matches!(load_rules(yaml), Err(RulesError::Parse(_))));
    }
}
