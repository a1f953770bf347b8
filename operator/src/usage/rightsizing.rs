//! Right-sizing: from the buckets of measured use the agents keep in each VM's status, per
//! VM a verdict (idle, oversized, right-sized, or unknown for want of measurements), a
//! recommended size and what it saves per month; per tenant the sums. Pure, with "now"
//! passed in.
//!
//! The rules, in one place (`docs/usage.md` explains them):
//! - only the buckets that overlap the window `[now - window, now]` count, and a VM measured
//!   for less than [`Policy::min_coverage_percent`] of the window is `Unknown`;
//! - idle: no bucket's average CPU reaches [`Policy::idle_cpu_percent`] of the VM's vCPUs;
//! - recommended vCPUs: the 95th percentile of the buckets' highest CPU use, plus
//!   [`Policy::headroom_percent`], rounded up to whole vCPUs (the quota's unit), at least 1;
//! - recommended memory: the highest memory the guest reported in use, plus the headroom,
//!   rounded up to [`Policy::memory_step_mib`]; a guest that reports nothing keeps its memory
//!   (the host's resident size says nothing of what the guest needs);
//! - oversized: the recommendation is smaller than what the VM holds; the saving is the
//!   difference priced per month (730 hours) at the rate in force now on the VM's host, an
//!   idle VM's saving its whole compute (halting it leaves only its storage reserved).

use ironvisor_crds::pricing::HOURS_PER_MONTH;
use ironvisor_crds::usage::UsageTotals;
use ironvisor_crds::utilization::{
    RightsizingReport, Size, UsedSummary, UtilizationBucket, Verdict, VmRightsizing, VmUtilization,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::pricing::{Pricing, cost_nanos, format_cents};

/// How right-sizing judges (operator flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The window looked at, seconds (a week by default).
    pub window_seconds: i64,
    /// A VM is idle when no bucket averages this share of its vCPUs (percent).
    pub idle_cpu_percent: i64,
    /// Headroom added on top of the measured peak (percent).
    pub headroom_percent: i64,
    /// Memory recommendations are multiples of this, MiB.
    pub memory_step_mib: i64,
    /// Share of the window a VM must have been measured for a verdict (percent).
    pub min_coverage_percent: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window_seconds: 7 * 24 * 3600,
            idle_cpu_percent: 5,
            headroom_percent: 20,
            memory_step_mib: 256,
            min_coverage_percent: 75,
        }
    }
}

/// One running VM as right-sizing sees it.
#[derive(Clone, Debug)]
pub struct VmInput<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// The host (for its price).
    pub node: &'a str,
    /// What it holds.
    pub allocated: Size,
    /// Admitted storage, MiB.
    pub storage_mib: i64,
    /// Its measured use.
    pub utilization: Option<&'a VmUtilization>,
}

/// `v × (100 + pct) / 100`, rounded up.
fn with_headroom(v: i64, pct: i64) -> i64 {
    let n = i128::from(v) * i128::from(100 + pct.max(0));
    i64::try_from((n + 99) / 100).unwrap_or(i64::MAX)
}

fn round_up(v: i64, step: i64) -> i64 {
    let step = step.max(1);
    v.div_euclid(step) * step + if v.rem_euclid(step) == 0 { 0 } else { step }
}

/// The 95th percentile (nearest rank) of `values`; 0 for none.
pub fn p95(values: &[i64]) -> i64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    let rank = (v.len() * 95).div_ceil(100).max(1);
    v[rank - 1]
}

/// The buckets of `u` that overlap `[now - window, now]`.
pub fn in_window(
    u: &VmUtilization,
    now: Timestamp,
    window_seconds: i64,
) -> Vec<&UtilizationBucket> {
    let from = now.as_second() - window_seconds;
    u.buckets
        .iter()
        .filter(|b| {
            let s = b.start.0.as_second();
            s + u.bucket_seconds > from && s <= now.as_second()
        })
        .collect()
}

/// What `freed` costs per month at the rate for `node` now; None without a rate.
fn monthly_cost(
    freed: Size,
    node: &str,
    now: Timestamp,
    pricing: Option<&Pricing>,
) -> Option<i128> {
    let rate = pricing?.rate_at(node, now)?;
    let secs = HOURS_PER_MONTH * 3600;
    let u = UsageTotals {
        vcpu_seconds: freed.vcpus.max(0).saturating_mul(secs),
        memory_mib_seconds: freed.memory_mib.max(0).saturating_mul(secs),
        ..UsageTotals::default()
    };
    Some(cost_nanos(&u, rate))
}

/// Measurements of one VM over the window.
struct Measured {
    seconds: i64,
    cpu_avg: i64,
    cpu_p95: i64,
    busiest_bucket_avg: i64,
    guest_used: Option<i64>,
    rss: i64,
    disk: i64,
}

fn measure(buckets: &[&UtilizationBucket]) -> Measured {
    let seconds: i64 = buckets.iter().map(|b| b.seconds.max(0)).sum();
    let weighted: i128 = buckets
        .iter()
        .map(|b| i128::from(b.cpu_avg_millicores) * i128::from(b.seconds.max(0)))
        .sum();
    let maxes: Vec<i64> = buckets.iter().map(|b| b.cpu_max_millicores).collect();
    Measured {
        seconds,
        cpu_avg: if seconds > 0 {
            i64::try_from(weighted / i128::from(seconds)).unwrap_or(i64::MAX)
        } else {
            0
        },
        cpu_p95: p95(&maxes),
        busiest_bucket_avg: buckets
            .iter()
            .map(|b| b.cpu_avg_millicores)
            .max()
            .unwrap_or(0),
        guest_used: buckets.iter().filter_map(|b| b.guest_memory_used_mib).max(),
        rss: buckets
            .iter()
            .map(|b| b.host_memory_rss_mib)
            .max()
            .unwrap_or(0),
        disk: buckets.last().map_or(0, |b| b.disk_allocated_mib),
    }
}

/// The verdict, recommendation and reason for a VM measured as `m`.
fn judge(vm: &VmInput<'_>, m: &Measured, p: &Policy) -> (Verdict, Option<Size>, String) {
    let a = vm.allocated;
    let needed = p.window_seconds.saturating_mul(p.min_coverage_percent) / 100;
    if m.seconds < needed {
        let why = format!(
            "measured {} s of the {} s window (needs {} %)",
            m.seconds, p.window_seconds, p.min_coverage_percent
        );
        return (Verdict::Unknown, None, why);
    }
    let idle_below = a.vcpus.max(1) * 1000 * p.idle_cpu_percent / 100;
    if m.busiest_bucket_avg < idle_below {
        let why = format!(
            "no bucket averaged {} % of its {} vCPU(s) (busiest: {} millicores)",
            p.idle_cpu_percent, a.vcpus, m.busiest_bucket_avg
        );
        return (Verdict::Idle, Some(Size::default()), why);
    }
    let vcpus = (with_headroom(m.cpu_p95, p.headroom_percent) + 999) / 1000;
    let vcpus = vcpus.clamp(1, a.vcpus.max(1));
    let memory_mib = m.guest_used.map_or(a.memory_mib, |used| {
        round_up(with_headroom(used, p.headroom_percent), p.memory_step_mib)
            .clamp(p.memory_step_mib.min(a.memory_mib), a.memory_mib)
    });
    let rec = Size { vcpus, memory_mib };
    if rec == a || (rec.vcpus >= a.vcpus && rec.memory_mib >= a.memory_mib) {
        let why = format!(
            "peak CPU (p95) {} millicores and memory fit {} vCPU(s) and {} MiB",
            m.cpu_p95, a.vcpus, a.memory_mib
        );
        return (Verdict::RightSized, None, why);
    }
    let why = format!(
        "peak CPU (p95) {} millicores{} plus {} % headroom fit {} vCPU(s) and {} MiB",
        m.cpu_p95,
        m.guest_used
            .map(|u| format!(" and {u} MiB used by the guest"))
            .unwrap_or_default(),
        p.headroom_percent,
        rec.vcpus,
        rec.memory_mib
    );
    (Verdict::Oversized, Some(rec), why)
}

/// One running VM's right-sizing at `now`, and its monthly saving in nano-units.
pub fn assess(
    vm: &VmInput<'_>,
    p: &Policy,
    now: Timestamp,
    pricing: Option<&Pricing>,
) -> (VmRightsizing, Option<i128>) {
    let buckets = vm
        .utilization
        .map(|u| in_window(u, now, p.window_seconds))
        .unwrap_or_default();
    let m = measure(&buckets);
    let (verdict, recommended, reason) = judge(vm, &m, p);
    let saving = recommended.and_then(|r| {
        let freed = Size {
            vcpus: vm.allocated.vcpus - r.vcpus,
            memory_mib: vm.allocated.memory_mib - r.memory_mib,
        };
        monthly_cost(freed, vm.node, now, pricing)
    });
    let out = VmRightsizing {
        namespace: vm.namespace.to_owned(),
        name: vm.name.to_owned(),
        verdict,
        allocated: vm.allocated,
        allocated_storage_mib: vm.storage_mib,
        measured_seconds: m.seconds,
        cpu_avg_millicores: m.cpu_avg,
        cpu_p95_millicores: m.cpu_p95,
        guest_memory_used_mib: m.guest_used,
        host_memory_rss_mib: m.rss,
        disk_allocated_mib: m.disk,
        recommended,
        monthly_saving: saving.map(format_cents),
        reason,
    };
    (out, saving)
}

/// A tenant's right-sizing at `now` over its running VMs `vms`; None when it has none.
pub fn report(
    vms: &[VmInput<'_>],
    p: &Policy,
    now: Timestamp,
    pricing: Option<&Pricing>,
) -> Option<RightsizingReport> {
    if vms.is_empty() {
        return None;
    }
    let mut r = RightsizingReport {
        window_seconds: p.window_seconds,
        currency: pricing.map(|p| p.currency.clone()),
        ..RightsizingReport::default()
    };
    let mut saving: Option<i128> = None;
    for vm in vms {
        let (v, s) = assess(vm, p, now, pricing);
        r.allocated.vcpus += v.allocated.vcpus;
        r.allocated.memory_mib += v.allocated.memory_mib;
        r.allocated_storage_mib += v.allocated_storage_mib;
        r.used = UsedSummary {
            cpu_millicores: r.used.cpu_millicores + v.cpu_avg_millicores,
            memory_mib: r.used.memory_mib
                + v.guest_memory_used_mib.unwrap_or(v.host_memory_rss_mib),
        };
        r.disk_allocated_mib += v.disk_allocated_mib;
        r.idle += i64::from(v.verdict == Verdict::Idle);
        r.oversized += i64::from(v.verdict == Verdict::Oversized);
        if let Some(s) = s {
            *saving.get_or_insert(0) += s;
        }
        r.at = r.at.max(newest(vm.utilization));
        r.vms.push(v);
    }
    if pricing.is_some() {
        r.monthly_saving = Some(format_cents(saving.unwrap_or(0)));
    }
    Some(r)
}

/// The end of the newest bucket (what the figures are as of).
fn newest(u: Option<&VmUtilization>) -> Option<Time> {
    let u = u?;
    let last = u.buckets.last()?;
    let end = last.start.0.as_second().saturating_add(u.bucket_seconds);
    Timestamp::from_second(end).ok().map(Time)
}
