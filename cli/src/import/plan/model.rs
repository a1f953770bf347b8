//! The plan as a document: what `ivctl import plan` writes as JSON and `ivctl import wave`
//! reads back. Pure data.

use serde::{Deserialize, Serialize};

use super::inventory::{ColumnReport, RowProblem};
use super::steps::StepSummary;
use super::throughput::Throughput;
use crate::import::advisor::{Finding, Severity};

/// Version of the plan document.
pub const PLAN_VERSION: u32 = 1;

/// A finding about a planned VM (the advisor's, or the planner's own rules).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanFinding {
    /// Rule id.
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// Title.
    pub title: String,
    /// What is concerned.
    pub detail: String,
    /// What to do.
    pub remedy: String,
    /// Whether acting on it is a manual step.
    pub manual_step: bool,
}

impl From<Finding> for PlanFinding {
    fn from(f: Finding) -> Self {
        Self {
            id: f.id,
            severity: f.severity,
            title: f.title,
            detail: f.detail,
            remedy: f.remedy,
            manual_step: f.manual_step,
        }
    }
}

/// How ready a VM is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Readiness {
    /// Nothing to do by hand.
    Ready,
    /// Can move, after manual steps.
    NeedsWork,
    /// A blocker stops it.
    Blocked,
}

impl Readiness {
    /// As the report prints it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::NeedsWork => "needs work",
            Self::Blocked => "blocked",
        }
    }
}

/// The target VM's size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizing {
    /// vCPUs.
    pub vcpus: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// Memory in MiB (right-sized when asked and possible).
    pub memory_mib: u64,
    /// Memory configured in vSphere, MiB.
    pub source_memory_mib: u64,
    /// Disk sizes in MiB, in order.
    pub disks_mib: Vec<u64>,
    /// Sum of the disks in bytes (what quotas account).
    pub storage_bytes: u64,
    /// Bytes the import reads and converts (in-use data when known).
    pub import_bytes: u64,
    /// How the size was chosen, in words.
    pub basis: String,
}

/// One VM in the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedVm {
    /// vSphere name.
    pub name: String,
    /// VirtualMachine name (a DNS label).
    pub k8s_name: String,
    /// Tenant, if assigned.
    pub tenant: Option<String>,
    /// Namespace, if assigned.
    pub namespace: Option<String>,
    /// How the tenant was chosen.
    pub tenant_by: String,
    /// Folder in vSphere.
    pub folder: Option<String>,
    /// The value of the ordering attribute, when ordering by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_value: Option<String>,
    /// Application group from the dependency file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Readiness.
    pub readiness: Readiness,
    /// Findings, blockers first.
    pub findings: Vec<PlanFinding>,
    /// Target size.
    pub sizing: Sizing,
    /// The export (.ovf/.ova/.vmx) found for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// Estimated import time, seconds.
    pub estimated_seconds: u64,
    /// Host it was placed on in the capacity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Wave number (1-based), when scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
    /// Why it is in no wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unscheduled: Option<String>,
    /// The VirtualMachine manifest (what the importer's builder makes).
    pub manifest: serde_json::Value,
}

/// One wave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// 1-based.
    pub number: u32,
    /// vSphere names, in import order.
    pub vms: Vec<String>,
    /// Application groups in it.
    pub groups: Vec<String>,
    /// Estimated duration, seconds (imports one after another at the stated rate).
    pub estimated_seconds: u64,
    /// vCPUs.
    pub vcpus: u64,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// Storage, bytes.
    pub storage_bytes: u64,
}

/// A quota that a VM would exceed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityViolation {
    /// vSphere name.
    pub vm: String,
    /// Its tenant.
    pub tenant: Option<String>,
    /// The quota or `hosts`.
    pub limit: String,
    /// Resource.
    pub resource: String,
    /// Needed.
    pub needed: u64,
    /// Left at that point of the plan.
    pub left: u64,
}

/// Totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// VMs planned.
    pub vms: usize,
    /// Ready.
    pub ready: usize,
    /// Needing manual work.
    pub needs_work: usize,
    /// Blocked.
    pub blocked: usize,
    /// In a wave.
    pub scheduled: usize,
    /// Waves.
    pub waves: usize,
    /// vCPUs of the scheduled VMs.
    pub vcpus: u64,
    /// Memory of the scheduled VMs, bytes.
    pub memory_bytes: u64,
    /// Storage of the scheduled VMs, bytes.
    pub storage_bytes: u64,
    /// Sum of the waves' estimates, seconds.
    pub estimated_seconds: u64,
}

/// The plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// Inputs, in words (paths and where the target facts came from).
    pub inputs: Vec<String>,
    /// Conversion rate used for estimates.
    pub throughput: Throughput,
    /// Maintenance window, seconds.
    pub window_seconds: u64,
    /// Ordering: size, folder or attribute:NAME.
    pub order: String,
    /// Where the manifests point for images.
    pub images_dir: String,
    /// `--network-map` as given (`VMNET=network:NAME`, `=bridge:NAME`, `=user`), for the wave import.
    #[serde(default)]
    pub network_map: Vec<String>,
    /// `--scsi-bus`, for the wave import.
    #[serde(default)]
    pub scsi_bus: String,
    /// Why vTPMs are left out (`--no-tpm`, or no target host with a TPM emulator), for the
    /// wave import; absent: they are carried over as `spec.tpm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_tpm: Option<String>,
    /// Totals.
    pub summary: Summary,
    /// Steps and the automated share.
    pub steps: StepSummary,
    /// The VMs.
    pub vms: Vec<PlannedVm>,
    /// The waves.
    pub waves: Vec<Wave>,
    /// Quota and host shortfalls.
    pub violations: Vec<CapacityViolation>,
    /// Column matching, per tab.
    pub columns: Vec<ColumnReport>,
    /// Tabs missing from the inventory.
    pub missing_tabs: Vec<String>,
    /// Cells and rows not used.
    pub problems: Vec<RowProblem>,
    /// Templates left out.
    pub templates: Vec<String>,
    /// Anything else the reader should know.
    pub notes: Vec<String>,
}
