//! `VirtualMachineSchedule`: snapshots or backups of a VM on a cron schedule, with retention.
//!
//! Set up once and forget, as vSphere administrators do: the operator creates a
//! `VirtualMachineSnapshot` or `VirtualMachineBackup` at each time the cron expression names
//! (UTC) and prunes what this schedule made beyond its retention. It never deletes an object
//! it did not make: pruning lists by the [`SCHEDULE_UID_LABEL`] and the schedule's own uid.
//! Deleting the schedule keeps what it made.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on every snapshot or backup a schedule made: the schedule's uid.
pub const SCHEDULE_UID_LABEL: &str = "ironvisor.io/schedule-uid";

/// Snapshots or backups of a VM on a schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "VirtualMachineSchedule",
    doc = "Snapshots or backups of a VM on a cron schedule (UTC), with retention: keep the last N and/or those younger than a maximum age. Only objects this schedule made are pruned; deleting the schedule keeps them.",
    plural = "virtualmachineschedules",
    singular = "virtualmachineschedule",
    shortname = "vmschedule",
    category = "ironvisor",
    category = "all",
    namespaced,
    status = "VirtualMachineScheduleStatus",
    printcolumn = r#"{"name":"VM","type":"string","jsonPath":".spec.vmName"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextScheduleTime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.action != 'Backup' || has(self.location)",
     "message": "a Backup schedule needs location (a BackupLocation)", "fieldPath": ".location"},
    {"rule": "has(self.retention.keepLast) || has(self.retention.maxAge)",
     "message": "set retention.keepLast and/or retention.maxAge: a schedule without retention grows without bound",
     "fieldPath": ".retention"}
]))]
pub struct VirtualMachineScheduleSpec {
    /// The VM, in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub vm_name: String,
    /// A cron expression in UTC: five fields (minute hour day-of-month month day-of-week),
    /// e.g. `0 2 * * *` for 02:00 every day, or six with seconds first. A missed time (the
    /// operator was down) is made up once, not once per missed time.
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,
    /// What to make: Snapshot or Backup.
    pub action: ScheduleAction,
    /// The BackupLocation of a Backup schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub location: Option<String>,
    /// What to keep of what this schedule made.
    pub retention: Retention,
    /// Make nothing new while true (pruning goes on).
    #[serde(default)]
    pub suspend: bool,
}

/// What a schedule makes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScheduleAction {
    /// A `VirtualMachineSnapshot`.
    Snapshot,
    /// A `VirtualMachineBackup` (of a snapshot taken for it, deleted afterwards).
    Backup,
}

/// Which of its objects a schedule keeps. Both rules apply when both are set; an object
/// still in progress is never pruned.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many (the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last: Option<u32>,
    /// Delete those older than this: a number and a unit, `m` (minutes), `h` or `d`, e.g.
    /// `36h` or `14d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[mhd]$"))]
    pub max_age: Option<String>,
}

/// Observed state of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineScheduleStatus {
    /// The last scheduled time something was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next time something will be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Name of the last object made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_created: Option<String>,
    /// How many objects of this schedule exist now.
    #[serde(default)]
    pub kept: u32,
    /// How many this schedule pruned since it was created.
    #[serde(default)]
    pub pruned: u64,
    /// Ready (reason Scheduled, Suspended, InvalidSchedule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Reasons of a schedule's Ready condition.
pub mod schedule_reason {
    /// Making objects on schedule.
    pub const SCHEDULED: &str = "Scheduled";
    /// `suspend: true`.
    pub const SUSPENDED: &str = "Suspended";
    /// The cron expression or the retention cannot be read.
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
}
