//! `ivctl usage --rightsizing`: each measured VM's verdict, allocated vs used, the
//! recommended size and what it saves, from the reports' right-sizing sections. Pure.

use ironvisor_crds::UsageReport;
use ironvisor_crds::utilization::{Verdict, VmRightsizing};

/// The columns.
pub const HEADERS: [&str; 15] = [
    "TENANT",
    "PERIOD",
    "VM",
    "VERDICT",
    "VCPUS",
    "MEMORY-MIB",
    "CPU-AVG",
    "CPU-P95",
    "MEM-USED-MIB",
    "STORAGE-MIB",
    "DISK-ALLOCATED-MIB",
    "RECOMMENDED",
    "MONTHLY-SAVING",
    "CURRENCY",
    "REASON",
];

/// A window in hours when whole, else seconds.
fn window(seconds: i64) -> String {
    if seconds % 3600 == 0 {
        format!("{} h", seconds / 3600)
    } else {
        format!("{seconds} s")
    }
}

/// vCPUs from millicores, 2 decimals.
fn vcpus(millicores: i64) -> String {
    format!("{:.2}", millicores as f64 / 1000.0)
}

fn recommended(v: &VmRightsizing) -> String {
    match (v.verdict, v.recommended) {
        (Verdict::Idle, _) => "halt".to_owned(),
        (_, Some(r)) => format!("{} vCPU / {} MiB", r.vcpus, r.memory_mib),
        (_, None) => String::new(),
    }
}

/// One row per measured VM of each report, VMs with a saving first within a tenant.
pub fn rows(reports: &[UsageReport]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for r in reports {
        let Some(rs) = r.status.as_ref().and_then(|s| s.rightsizing.as_ref()) else {
            continue;
        };
        let currency = rs.currency.clone().unwrap_or_default();
        for v in &rs.vms {
            out.push(vec![
                r.spec.tenant.clone(),
                r.spec.period.clone(),
                format!("{}/{}", v.namespace, v.name),
                v.verdict.as_str().to_owned(),
                v.allocated.vcpus.to_string(),
                v.allocated.memory_mib.to_string(),
                vcpus(v.cpu_avg_millicores),
                vcpus(v.cpu_p95_millicores),
                v.guest_memory_used_mib.map_or_else(
                    || format!("{} (host)", v.host_memory_rss_mib),
                    |m| m.to_string(),
                ),
                v.allocated_storage_mib.to_string(),
                v.disk_allocated_mib.to_string(),
                recommended(v),
                v.monthly_saving.clone().unwrap_or_default(),
                if v.monthly_saving.is_some() {
                    currency.clone()
                } else {
                    String::new()
                },
                v.reason.clone(),
            ]);
        }
    }
    out
}

/// A short sentence per report: how many VMs are idle or oversized and what that saves.
pub fn summary(reports: &[UsageReport]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|r| {
            let rs = r.status.as_ref()?.rightsizing.as_ref()?;
            let saving = rs
                .monthly_saving
                .as_ref()
                .map(|s| {
                    format!(
                        "; following the recommendations saves {s} {} a month",
                        rs.currency.clone().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            Some(format!(
                "{}: {} running VM(s) hold {} vCPU(s) and use {} on average over the last {}; {} idle, {} oversized{saving}.",
                r.spec.tenant,
                rs.vms.len(),
                rs.allocated.vcpus,
                vcpus(rs.used.cpu_millicores),
                window(rs.window_seconds),
                rs.idle,
                rs.oversized,
            ))
        })
        .collect()
}
