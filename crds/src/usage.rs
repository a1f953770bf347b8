//! `UsageReport`: what a tenant consumed in one UTC month, checkpointed by the operator, and
//! [`RunRecord`], the durable fact an agent writes into a VM's status when the guest starts,
//! stops or changes size.
//!
//! Units are integers so totals are exact to the second: seconds, vCPU-seconds and
//! MiB-seconds (memory and storage sizes are counted in MiB, rounded up). The `*Hours`
//! strings are the same figures in hours (and GiB-hours), for people and `kubectl get`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Namespace that holds every `UsageReport`, so reports outlive the tenants and namespaces
/// they describe. Tenant owners are given read access to their own reports by name.
pub const USAGE_NAMESPACE: &str = "ironvisor-usage";

/// Finalizer the operator keeps on a VM until its usage up to the deletion request is
/// checkpointed, so a VM deleted while the operator is down is still accounted to the second.
pub const USAGE_FINALIZER: &str = "ironvisor.io/usage";

/// Most entries an agent keeps in `status.runLog` (the oldest go first when the operator has
/// not acknowledged them for that long; see `docs/usage.md`).
pub const RUN_LOG_MAX: usize = 64;

/// One fact of a VM's life as its agent saw it: from `at` on, the guest was running (or
/// halted) on `node` with this admitted size. A new record is written whenever any of these
/// changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// When the agent saw the change.
    pub at: Time,
    /// Whether the guest runs (Running or Paused: both hold the host's CPU and memory).
    pub running: bool,
    /// Admitted vCPUs.
    #[schemars(range(min = 0))]
    pub vcpus: i64,
    /// Admitted memory in MiB (rounded up).
    #[serde(rename = "memoryMiB")]
    #[schemars(range(min = 0))]
    pub memory_mib: i64,
    /// Admitted storage in MiB (rounded up): the sum of the disks' accounted sizes.
    #[serde(rename = "storageMiB")]
    #[schemars(range(min = 0))]
    pub storage_mib: i64,
    /// The host.
    #[schemars(length(max = 253))]
    pub node: String,
}

/// Bytes to MiB, rounded up (a partial MiB counts whole); negative is zero.
pub fn mib_ceil(bytes: i128) -> i64 {
    let mib = (bytes.max(0) + (1 << 20) - 1) >> 20;
    i64::try_from(mib).unwrap_or(i64::MAX)
}

/// Accrued usage, exact integers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// Seconds VMs ran (VM-seconds).
    #[serde(default)]
    pub running_seconds: i64,
    /// vCPU-seconds of running VMs.
    #[serde(default)]
    pub vcpu_seconds: i64,
    /// MiB-seconds of memory of running VMs.
    #[serde(default, rename = "memoryMiBSeconds")]
    pub memory_mib_seconds: i64,
    /// Seconds VMs were halted but admitted (a reservation, shown apart).
    #[serde(default)]
    pub reserved_seconds: i64,
    /// vCPU-seconds reserved by halted VMs.
    #[serde(default)]
    pub reserved_vcpu_seconds: i64,
    /// MiB-seconds of memory reserved by halted VMs.
    #[serde(default, rename = "reservedMemoryMiBSeconds")]
    pub reserved_memory_mib_seconds: i64,
    /// MiB-seconds of storage held while the VMs existed, running or not.
    #[serde(default, rename = "storageMiBSeconds")]
    pub storage_mib_seconds: i64,
}

impl UsageTotals {
    /// Field-wise sum (saturating).
    pub fn add(&mut self, o: &UsageTotals) {
        self.running_seconds = self.running_seconds.saturating_add(o.running_seconds);
        self.vcpu_seconds = self.vcpu_seconds.saturating_add(o.vcpu_seconds);
        self.memory_mib_seconds = self.memory_mib_seconds.saturating_add(o.memory_mib_seconds);
        self.reserved_seconds = self.reserved_seconds.saturating_add(o.reserved_seconds);
        self.reserved_vcpu_seconds = self
            .reserved_vcpu_seconds
            .saturating_add(o.reserved_vcpu_seconds);
        self.reserved_memory_mib_seconds = self
            .reserved_memory_mib_seconds
            .saturating_add(o.reserved_memory_mib_seconds);
        self.storage_mib_seconds = self
            .storage_mib_seconds
            .saturating_add(o.storage_mib_seconds);
    }

    /// Whether nothing was used.
    pub fn is_zero(&self) -> bool {
        *self == UsageTotals::default()
    }

    /// The same figures in hours, for display.
    pub fn summary(&self) -> UsageSummary {
        const H: f64 = 3600.0;
        const GIB_H: f64 = 1024.0 * 3600.0;
        let f = |v: i64, d: f64| format!("{:.3}", v as f64 / d);
        UsageSummary {
            vm_hours: f(self.running_seconds, H),
            vcpu_hours: f(self.vcpu_seconds, H),
            memory_gib_hours: f(self.memory_mib_seconds, GIB_H),
            reserved_vm_hours: f(self.reserved_seconds, H),
            storage_gib_hours: f(self.storage_mib_seconds, GIB_H),
        }
    }
}

/// Totals in hours, rounded to 3 decimals (display only; the exact figures are beside).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    /// VM-hours running.
    pub vm_hours: String,
    /// vCPU-hours running.
    pub vcpu_hours: String,
    /// GiB-hours of memory running.
    pub memory_gib_hours: String,
    /// VM-hours halted but admitted.
    pub reserved_vm_hours: String,
    /// GiB-hours of storage.
    pub storage_gib_hours: String,
}

/// A tenant's usage in one UTC month. Written by the operator only; named
/// `<tenant>.<YYYY-MM>` in [`USAGE_NAMESPACE`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "UsageReport",
    doc = "What a tenant (and its descendants) consumed in one UTC month: VM-hours, vCPU-hours, GiB-hours of memory and storage, checkpointed by the operator.",
    plural = "usagereports",
    singular = "usagereport",
    shortname = "usage",
    category = "ironvisor",
    namespaced,
    status = "UsageReportStatus",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenant"}"#,
    printcolumn = r#"{"name":"Period","type":"string","jsonPath":".spec.period"}"#,
    printcolumn = r#"{"name":"VM-Hours","type":"string","jsonPath":".status.totalSummary.vmHours","description":"with descendants"}"#,
    printcolumn = r#"{"name":"vCPU-Hours","type":"string","jsonPath":".status.totalSummary.vcpuHours","description":"with descendants"}"#,
    printcolumn = r#"{"name":"Mem-GiB-Hours","type":"string","jsonPath":".status.totalSummary.memoryGibHours","description":"with descendants"}"#,
    printcolumn = r#"{"name":"Storage-GiB-Hours","type":"string","jsonPath":".status.totalSummary.storageGibHours","description":"with descendants"}"#,
    printcolumn = r#"{"name":"Cost","type":"string","jsonPath":".status.cost.total","description":"with descendants"}"#,
    printcolumn = r#"{"name":"Budget","type":"string","jsonPath":".status.cost.budget"}"#,
    printcolumn = r#"{"name":"Accrued-Through","type":"date","jsonPath":".status.accruedThrough"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UsageReportSpec {
    /// The tenant whose VMs incurred the usage.
    #[schemars(length(min = 1, max = 253))]
    pub tenant: String,
    /// The UTC month, `YYYY-MM`.
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    pub period: String,
}

/// The accrued usage and the checkpoint it was accrued up to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReportStatus {
    /// Usage is accounted up to this instant (the end of the month once it is closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accrued_through: Option<Time>,
    /// The tenant's own VMs.
    #[serde(default)]
    pub own: UsageTotals,
    /// The tenant's own VMs and its descendants' (as the tree stood when each usage was
    /// incurred).
    #[serde(default)]
    pub total: UsageTotals,
    /// [`UsageReportStatus::total`] in hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_summary: Option<UsageSummary>,
    /// The tenant's own usage per UTC day (`YYYY-MM-DD`), days with usage only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<DayUsage>,
    /// The tenant's own usage by the ancestors it had when it was incurred, so a parent's
    /// total keeps what a child incurred under it after the child moves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineages: Vec<LineageUsage>,
    /// The tenant's own usage by the rate that priced it (a copy of the rate, so a later
    /// edit of the price list does not rewrite history). Usage with no rate in force is in
    /// no entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priced: Vec<PricedUsage>,
    /// What the usage costs, when a price list prices it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostSummary>,
    /// Each VM of the tenant seen this month, deleted ones included, with the marker up to
    /// which it is accounted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmUsage>,
    /// Each direct child's part of [`UsageReportStatus::total`] (with its own descendants),
    /// as the tree stood when the usage was incurred: `own` plus the children is `total`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildUsage>,
    /// Right-sizing of the tenant's own running VMs from their measured use (current month:
    /// refreshed as it accrues; closed months: as the month ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rightsizing: Option<crate::utilization::RightsizingReport>,
}

/// A direct child's share of a tenant's total.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildUsage {
    /// The child tenant.
    pub tenant: String,
    /// Its usage under this tenant, with its descendants'.
    pub usage: UsageTotals,
    /// What it cost, rounded to the cent (absent without a price list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
}

/// Usage priced by one rate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricedUsage {
    /// The rate, as it was.
    pub rate: crate::pricing::Rate,
    /// The currency of the rate.
    pub currency: String,
    /// Usage it priced.
    pub usage: UsageTotals,
}

/// Cost of a report, as decimal strings rounded to the cent (exact figures are derived from
/// `priced`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostSummary {
    /// Currency.
    pub currency: String,
    /// Cost of the tenant's own VMs.
    pub own: String,
    /// Cost with the descendants'.
    pub total: String,
    /// The tenant's monthly budget, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
}

/// One day's usage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayUsage {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// Usage that day.
    pub usage: UsageTotals,
}

/// Usage incurred under one chain of ancestors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineageUsage {
    /// The tenant's ancestors, parent first.
    #[serde(default)]
    pub ancestors: Vec<String>,
    /// Usage incurred while the tenant had these ancestors.
    pub usage: UsageTotals,
    /// What it cost, in nano-units of the price list's currency.
    #[serde(default)]
    pub cost_nanos: i64,
}

/// One VM's usage in the period and its accounting marker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmUsage {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// The VM's uid (a VM recreated under the same name is another VM).
    pub uid: String,
    /// Usage this period.
    pub usage: UsageTotals,
    /// The VM is accounted up to this instant.
    pub accounted_through: Time,
    /// What the VM held at `accountedThrough` (absent: nothing yet, or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<RunRecord>,
    /// The VM was deleted; its usage stays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// The record of a guest that is (or is not) `running` at `at` on `node` with the admitted
/// size `admitted`; None when a size cannot be read (the status is written by the operator
/// only, so that is a bug there, not input to guess about).
pub fn run_record(
    at: Time,
    running: bool,
    admitted: &crate::vm::AdmittedSize,
    node: &str,
) -> Option<RunRecord> {
    let bytes = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        crate::quantity::to_bytes(&q.0).ok()
    };
    Some(RunRecord {
        at,
        running,
        vcpus: admitted.vcpus.max(0),
        memory_mib: mib_ceil(bytes(&admitted.memory)?),
        storage_mib: mib_ceil(bytes(&admitted.storage)?),
        node: node.to_owned(),
    })
}

/// `log` with `rec` appended when it says something new (running, size or host differ from
/// the last record), the oldest dropped beyond [`RUN_LOG_MAX`].
pub fn append_run_record(log: &[RunRecord], rec: RunRecord) -> Vec<RunRecord> {
    let same = |l: &RunRecord| {
        (l.running, l.vcpus, l.memory_mib, l.storage_mib, &l.node)
            == (
                rec.running,
                rec.vcpus,
                rec.memory_mib,
                rec.storage_mib,
                &rec.node,
            )
    };
    let mut out = log.to_vec();
    if out.last().is_some_and(same) {
        return out;
    }
    out.push(rec);
    let excess = out.len().saturating_sub(RUN_LOG_MAX);
    out.drain(..excess);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::AdmittedSize;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn size(vcpus: i64, memory: &str) -> AdmittedSize {
        AdmittedSize {
            vcpus,
            memory: Quantity(memory.into()),
            storage: Quantity("10Gi".into()),
            host_ports: None,
        }
    }

    #[test]
    fn a_record_counts_sizes_in_mib_rounded_up() {
        let r = run_record(at(5), true, &size(2, "1000001"), "h").unwrap();
        assert_eq!((r.vcpus, r.memory_mib, r.storage_mib), (2, 1, 10240));
        assert!(run_record(at(5), true, &size(2, "lots"), "h").is_none());
    }

    #[test]
    fn only_changes_are_appended_and_the_log_is_bounded() {
        let r = |s, running| run_record(at(s), running, &size(1, "1Gi"), "h").unwrap();
        let log = append_run_record(&[], r(1, true));
        assert_eq!(
            append_run_record(&log, r(2, true)),
            log,
            "no change, no record"
        );
        let log = append_run_record(&log, r(3, false));
        assert_eq!(log.len(), 2);
        let mut long = log;
        for s in 0..200 {
            long = append_run_record(&long, r(10 + s, s % 2 == 0));
        }
        assert_eq!(long.len(), RUN_LOG_MAX);
        assert_eq!(long.last().unwrap().at, at(209), "the newest are kept");
    }
}
