//! `VirtualMachineMigration`: move a running VM to another host without stopping it.
//!
//! Created by a tenant (or `ivctl migrate`) naming a VM and optionally a host; deleting it
//! cancels the migration (a finalizer keeps the object until the source agent has aborted
//! QEMU's job). The status has three writers, each with fields of its own: the operator
//! (`phase`, the hosts, conditions), the target agent (`target`: ready to receive) and the
//! source agent (`source`: QEMU's progress and outcome).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The finalizer that keeps a migration until its QEMU job is aborted or over.
pub const MIGRATION_FINALIZER: &str = "ironvisor.io/migration";
/// Label the operator sets on a migration once scheduled: the host the VM leaves.
pub const SOURCE_LABEL: &str = "ironvisor.io/migration-source";
/// Label the operator sets on a migration once scheduled: the host the VM goes to.
pub const TARGET_LABEL: &str = "ironvisor.io/migration-target";

/// A live migration of one VM to another host.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "VirtualMachineMigration",
    doc = "A live migration of a running VM to another host (QEMU's memory and disks copied while the guest runs). Delete it to cancel.",
    plural = "virtualmachinemigrations",
    singular = "virtualmachinemigration",
    shortname = "vmim",
    category = "ironvisor",
    namespaced,
    status = "VirtualMachineMigrationStatus",
    printcolumn = r#"{"name":"VM","type":"string","jsonPath":".spec.vmName","description":"The VM being moved"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".status.sourceNode","description":"Host the VM leaves"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.targetNode","description":"Host the VM goes to"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.source.progress.percent","description":"Memory (and disks) copied, percent"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.vmName == oldSelf.vmName", "message": "vmName is immutable", "fieldPath": ".vmName"},
    {"rule": "has(self.targetNode) == has(oldSelf.targetNode) && (!has(self.targetNode) || self.targetNode == oldSelf.targetNode)",
     "message": "targetNode is immutable", "fieldPath": ".targetNode"},
    {"rule": "has(self.mode) == has(oldSelf.mode) && (!has(self.mode) || self.mode == oldSelf.mode)",
     "message": "mode is immutable", "fieldPath": ".mode"}
]))]
pub struct VirtualMachineMigrationSpec {
    /// Name of the VM to move, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub vm_name: String,
    /// Host to move it to; empty lets the operator choose with the placement filters and
    /// scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub target_node: Option<String>,
    /// Most bytes per second QEMU may send, in MiB/s; none leaves QEMU's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub bandwidth_mib_per_second: Option<u64>,
    /// Give up (and leave the VM on its source) when the migration has not completed after
    /// this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub completion_timeout_seconds: Option<u64>,
    /// Live (default: the guest keeps running) or Restart (the guest is shut down, moved with
    /// its disks and booted afresh on the target; what a drain does for `drainStrategy:
    /// Restart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MigrationMode>,
}

/// How a migration moves the guest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MigrationMode {
    /// The guest keeps running: memory and disks are copied while it runs.
    #[default]
    Live,
    /// A cold restart elsewhere: the source agent shuts the guest down (ACPI, destroyed
    /// after the VM's terminationGracePeriodSeconds), starts it paused (its CPUs never run),
    /// migrates it with its disks like a live migration, and the target boots it afresh.
    Restart,
}

impl VirtualMachineMigrationSpec {
    /// Whether this is a cold restart elsewhere rather than a live migration.
    pub fn restarts(&self) -> bool {
        self.mode == Some(MigrationMode::Restart)
    }
}

/// Where a migration is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum MigrationPhase {
    /// Waiting for the VM's operation lock.
    #[default]
    Pending,
    /// Choosing and reserving the target host.
    Scheduling,
    /// The target agent prepares directories, disks and seed.
    PreparingTarget,
    /// QEMU copies the guest.
    Migrating,
    /// The VM runs on the target.
    Completed,
    /// The VM still runs on its source; see the conditions for why.
    Failed,
    /// Cancelled by deleting the migration; the VM still runs on its source.
    Cancelled,
}

impl MigrationPhase {
    /// Whether nothing will happen to this migration any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationPhase::Completed | MigrationPhase::Failed | MigrationPhase::Cancelled
        )
    }

    /// The phase as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Pending => "Pending",
            MigrationPhase::Scheduling => "Scheduling",
            MigrationPhase::PreparingTarget => "PreparingTarget",
            MigrationPhase::Migrating => "Migrating",
            MigrationPhase::Completed => "Completed",
            MigrationPhase::Failed => "Failed",
            MigrationPhase::Cancelled => "Cancelled",
        }
    }
}

/// What the operator, the target agent and the source agent report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineMigrationStatus {
    /// Where the migration is (operator).
    #[serde(default)]
    pub phase: MigrationPhase,
    /// Uid of the VM being moved, fixed when the migration takes the VM's lock (operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_uid: Option<String>,
    /// Host the VM leaves (operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_node: Option<String>,
    /// Host the VM goes to (operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// Why this target: the placement scores of the chosen host (operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_reason: Option<String>,
    /// When the migration took the VM's lock (operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it reached a terminal phase (operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The policy the migration runs by (operator, when it leaves `Pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::migration_policy::AppliedPolicy>,
    /// What the target agent prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<MigrationTarget>,
    /// What the source agent reports of QEMU's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MigrationSource>,
    /// `Ready` (the migration reached a terminal phase) with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The target host, ready to receive the guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationTarget {
    /// Directories, disks and seed are in place.
    pub ready: bool,
    /// libvirt URI the source host's libvirtd opens to reach this host's (peer to peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_uri: Option<String>,
    /// Address this host's QEMU listens on for the guest's memory and disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The VM's directory on this host: the source rewrites its own in the domain it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_dir: Option<String>,
    /// Why the target could not be prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long the guest was paused at the switch-over, as QEMU measured it (read from the
    /// completed incoming job: the source's domain is gone once it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_milliseconds: Option<u64>,
    /// How long QEMU's job took, as QEMU measured it, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_milliseconds: Option<u64>,
    /// Restart mode: the paused copy that arrived here was stopped, so the guest boots afresh
    /// once the VM is placed here (the operator completes the migration only then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cold_boot_ready: bool,
}

/// The source agent's report of QEMU's migration job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSource {
    /// Where the job is.
    pub state: SourceState,
    /// libvirt's message when it failed; on success, what the job had to do without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The latest job statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<MigrationProgress>,
    /// From the migrate call to its return, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_milliseconds: Option<u64>,
    /// The copy did not converge and was switched to post-copy (the policy allowed it): the
    /// guest runs on the target and fetches its remaining pages from here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub post_copy: bool,
}

/// States of the source's QEMU job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SourceState {
    /// The job runs.
    #[default]
    Running,
    /// QEMU reported completion: the guest runs on the target.
    Succeeded,
    /// The job failed; the guest still runs here.
    Failed,
    /// The job was aborted on request; the guest still runs here.
    Aborted,
}

/// QEMU's job statistics (`virDomainGetJobStats`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationProgress {
    /// Guest memory to copy, bytes.
    pub memory_total_bytes: u64,
    /// Guest memory still to copy, bytes.
    pub memory_remaining_bytes: u64,
    /// Transfer rate, bytes per second.
    pub memory_bytes_per_second: u64,
    /// Pass over the guest's memory (1 = the first full copy).
    pub iteration: u64,
    /// Pages the guest dirties per second.
    pub dirty_pages_per_second: u64,
    /// Disk bytes to copy (non-shared storage), bytes.
    pub disk_total_bytes: u64,
    /// Disk bytes still to copy.
    pub disk_remaining_bytes: u64,
    /// Memory and disks copied, percent, as text for the printer column (`"42%"`).
    pub percent: String,
}

impl MigrationProgress {
    /// The percent of memory and disks copied (100 when there is nothing to copy).
    pub fn percent_done(&self) -> u64 {
        let total = self.memory_total_bytes + self.disk_total_bytes;
        let left = self.memory_remaining_bytes + self.disk_remaining_bytes;
        if total == 0 {
            return 100;
        }
        (total.saturating_sub(left) * 100 / total).min(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_memory_and_disks_together() {
        let p = MigrationProgress {
            memory_total_bytes: 100,
            memory_remaining_bytes: 50,
            disk_total_bytes: 100,
            disk_remaining_bytes: 0,
            ..Default::default()
        };
        assert_eq!(p.percent_done(), 75);
        assert_eq!(MigrationProgress::default().percent_done(), 100);
    }

    #[test]
    fn only_the_ends_are_terminal() {
        use MigrationPhase::*;
        for p in [Pending, Scheduling, PreparingTarget, Migrating] {
            assert!(!p.is_terminal(), "{p:?}");
        }
        for p in [Completed, Failed, Cancelled] {
            assert!(p.is_terminal(), "{p:?}");
        }
    }
}
