//! The migration steps of one VM and the estate's automated share.
//!
//! The step list is fixed and documented in docs/migration.md ("Automation percentage"):
//! eleven steps per VM, plus one manual step for each finding whose rule says acting on it
//! is manual. Two steps depend on the VM: choosing the tenant is automated when a rule
//! matched (not the default, not none), and mapping networks when every port group is in
//! `--network-map`. Percent = automated steps / all steps over the whole estate, rounded down.

use serde::{Deserialize, Serialize};

use super::model::PlannedVm;

/// Who does a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum By {
    /// The tool.
    Tool,
    /// A person.
    Person,
}

/// The fixed per-VM steps: id, title, who (for the two that vary: who when it goes well).
pub const STEPS: [(&str, &str, By); 11] = [
    ("inventory", "Read the VM from the inventory", By::Tool),
    (
        "assess",
        "Assess readiness against the knowledge base",
        By::Tool,
    ),
    ("size", "Size the target VM", By::Tool),
    ("tenant", "Choose the tenant and namespace", By::Tool),
    (
        "capacity",
        "Check tenant quotas and host capacity",
        By::Tool,
    ),
    (
        "schedule",
        "Schedule into a wave within the window",
        By::Tool,
    ),
    (
        "export",
        "Export the VM from vSphere (OVF/OVA or datastore copy)",
        By::Person,
    ),
    ("convert", "Convert and verify the disks", By::Tool),
    ("manifest", "Write the VirtualMachine manifest", By::Tool),
    ("network", "Map port groups to Ironvisor networks", By::Tool),
    (
        "cutover",
        "Cut over: stop in vSphere, apply, start, check the service",
        By::Person,
    ),
];

/// One step's count over the estate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepCount {
    /// Step id (a rule id for finding steps).
    pub id: String,
    /// Title.
    pub title: String,
    /// Times the tool does it.
    pub automated: u64,
    /// Times a person does it.
    pub manual: u64,
}

/// The steps and the automated share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSummary {
    /// Per step.
    pub steps: Vec<StepCount>,
    /// Automated steps.
    pub automated: u64,
    /// All steps.
    pub total: u64,
    /// automated × 100 / total, rounded down (0 for an empty estate).
    pub automated_percent: u64,
}

/// Who does each fixed step for this VM.
pub fn who(vm: &PlannedVm, id: &str, default: By) -> By {
    match id {
        "tenant" if !vm.tenant_by.starts_with("rule") => By::Person,
        "network" if vm.findings.iter().any(|f| f.id == "unmapped-network") => By::Person,
        _ => default,
    }
}

/// Count the steps of every VM.
pub fn summarise(vms: &[PlannedVm]) -> StepSummary {
    let mut steps: Vec<StepCount> = STEPS
        .iter()
        .map(|(id, title, _)| StepCount {
            id: (*id).into(),
            title: (*title).into(),
            ..StepCount::default()
        })
        .collect();
    for vm in vms {
        for (i, (id, _, default)) in STEPS.iter().enumerate() {
            match who(vm, id, *default) {
                By::Tool => steps[i].automated += 1,
                By::Person => steps[i].manual += 1,
            }
        }
        for f in vm.findings.iter().filter(|f| f.manual_step) {
            let at = steps.iter().position(|s| s.id == f.id).unwrap_or_else(|| {
                steps.push(StepCount {
                    id: f.id.clone(),
                    title: f.title.clone(),
                    ..StepCount::default()
                });
                steps.len() - 1
            });
            steps[at].manual += 1;
        }
    }
    let automated: u64 = steps.iter().map(|s| s.automated).sum();
    let total: u64 = steps.iter().map(|s| s.automated + s.manual).sum();
    StepSummary {
        automated_percent: automated
            .checked_mul(100)
            .and_then(|a| a.checked_div(total))
            .unwrap_or(0),
        steps,
        automated,
        total,
    }
}
