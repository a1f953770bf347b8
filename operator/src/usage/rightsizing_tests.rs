//! Right-sizing on hand-made measurements, with "now" set by a hand-set clock.

use ironvisor_crds::pricing::{PriceListSpec, Rate};
use ironvisor_crds::utilization::{Size, UtilizationBucket, Verdict, VmUtilization};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::pricing::Pricing;
use super::rightsizing::{Policy, VmInput, assess, p95, report};
use super::{Clock, ManualClock};

const HOUR: i64 = 3600;
const START: i64 = 1_793_491_200; // 2026-11-01T00:00:00Z

/// `n` hourly buckets from START, each with CPU (avg, max) from `cpu(i)` and guest memory.
fn hours(n: i64, cpu: impl Fn(i64) -> (i64, i64), guest_mib: Option<i64>) -> VmUtilization {
    VmUtilization {
        bucket_seconds: HOUR,
        buckets: (0..n)
            .map(|i| {
                let (avg, max) = cpu(i);
                UtilizationBucket {
                    start: Time(Timestamp::from_second(START + i * HOUR).unwrap()),
                    seconds: HOUR,
                    vcpus: 4,
                    cpu_avg_millicores: avg,
                    cpu_max_millicores: max,
                    guest_memory_used_mib: guest_mib,
                    host_memory_rss_mib: 3000,
                    disk_allocated_mib: 1200,
                }
            })
            .collect(),
    }
}

fn vm<'a>(u: &'a VmUtilization) -> VmInput<'a> {
    VmInput {
        namespace: "ns",
        name: "web",
        node: "host-a",
        allocated: Size {
            vcpus: 4,
            memory_mib: 8192,
        },
        storage_mib: 10240,
        utilization: Some(u),
    }
}

fn week_later() -> ManualClock {
    ManualClock::new(Timestamp::from_second(START + 168 * HOUR).unwrap())
}

fn pricing() -> Pricing {
    let rate = |from: &str, cpu: &str| Rate {
        effective_from: Time(from.parse().unwrap()),
        host_class: None,
        vcpu_hour: cpu.into(),
        memory_gib_hour: "0.01".into(),
        storage_gib_month: "0.1".into(),
    };
    let spec = PriceListSpec {
        currency: "EUR".into(),
        host_class_label: None,
        rates: vec![
            rate("2026-10-01T00:00:00Z", "0.04"),
            rate("2026-11-07T00:00:00Z", "0.05"),
        ],
        budgets: vec![],
    };
    Pricing::new(&spec, Default::default())
}

#[test]
fn the_95th_percentile_is_the_nearest_rank() {
    assert_eq!(p95(&[]), 0);
    assert_eq!(p95(&[7]), 7);
    let v: Vec<i64> = (1..=100).collect();
    assert_eq!(p95(&v), 95);
    let v: Vec<i64> = (1..=20).rev().collect();
    assert_eq!(p95(&v), 19);
}

#[test]
fn a_vm_below_five_percent_for_the_whole_week_is_idle_and_halting_it_saves_its_compute() {
    let u = hours(168, |_| (150, 900), None);
    let (v, saving) = assess(
        &vm(&u),
        &Policy::default(),
        week_later().now(),
        Some(&pricing()),
    );
    assert_eq!(v.verdict, Verdict::Idle, "{}", v.reason);
    assert_eq!(v.recommended, Some(Size::default()));
    // 4 vCPUs × 0.05 × 730 h + 8 GiB × 0.01 × 730 h, at the rate in force now.
    assert_eq!(saving, Some(146_000_000_000 + 58_400_000_000));
    assert_eq!(v.monthly_saving.as_deref(), Some("204.40"));
}

#[test]
fn one_busy_hour_in_the_week_is_not_idle() {
    let u = hours(
        168,
        |i| if i == 100 { (2500, 4000) } else { (100, 200) },
        None,
    );
    let (v, _) = assess(&vm(&u), &Policy::default(), week_later().now(), None);
    assert_ne!(v.verdict, Verdict::Idle);
}

#[test]
fn an_oversized_vm_gets_p95_with_headroom_in_whole_vcpus_and_memory_steps() {
    // Peaks of 1.5 vCPUs most hours, 3.9 in 5 hours (under the 95th percentile); the guest
    // uses 2000 MiB of its 8 GiB.
    let u = hours(
        168,
        |i| {
            if i % 40 == 0 {
                (1000, 3900)
            } else {
                (800, 1500)
            }
        },
        Some(2000),
    );
    let clock = week_later();
    let (v, saving) = assess(&vm(&u), &Policy::default(), clock.now(), Some(&pricing()));
    assert_eq!(v.verdict, Verdict::Oversized, "{}", v.reason);
    // 1500 × 1.2 = 1800 millicores → 2 vCPUs; 2000 × 1.2 = 2400 MiB → 2560 MiB.
    assert_eq!(
        v.recommended,
        Some(Size {
            vcpus: 2,
            memory_mib: 2560
        })
    );
    assert_eq!(v.cpu_p95_millicores, 1500);
    // 2 vCPUs × 0.05 × 730 + 5.5 GiB × 0.01 × 730 = 73 + 40.15.
    assert_eq!(v.monthly_saving.as_deref(), Some("113.15"));
    assert_eq!(saving, Some(113_150_000_000));
}

#[test]
fn a_guest_that_reports_no_memory_keeps_its_memory() {
    let u = hours(168, |_| (800, 1500), None);
    let (v, _) = assess(&vm(&u), &Policy::default(), week_later().now(), None);
    assert_eq!(v.recommended.map(|r| r.memory_mib), Some(8192));
    assert_eq!(v.monthly_saving, None, "no price list, no saving");
}

#[test]
fn a_busy_vm_is_right_sized() {
    let u = hours(168, |_| (3000, 3900), Some(7000));
    let (v, _) = assess(&vm(&u), &Policy::default(), week_later().now(), None);
    assert_eq!(v.verdict, Verdict::RightSized, "{}", v.reason);
    assert_eq!(v.recommended, None);
}

#[test]
fn too_few_measurements_in_the_window_give_no_verdict_and_old_ones_do_not_count() {
    let u = hours(100, |_| (0, 0), None);
    let (v, _) = assess(&vm(&u), &Policy::default(), week_later().now(), None);
    assert_eq!(v.verdict, Verdict::Unknown, "{}", v.reason);
    // The same 168 idle hours, looked at a week after they ended: nothing in the window.
    let u = hours(168, |_| (0, 0), None);
    let clock = week_later();
    clock.set(Timestamp::from_second(START + 2 * 168 * HOUR).unwrap());
    let (v, _) = assess(&vm(&u), &Policy::default(), clock.now(), None);
    assert_eq!((v.verdict, v.measured_seconds), (Verdict::Unknown, 0));
}

#[test]
fn a_short_window_by_configuration_judges_the_last_buckets_only() {
    let policy = Policy {
        window_seconds: 10 * HOUR,
        ..Policy::default()
    };
    // Busy for the first 158 hours, then idle for the last 10.
    let u = hours(168, |i| if i < 158 { (3000, 3900) } else { (10, 40) }, None);
    let (v, _) = assess(&vm(&u), &policy, week_later().now(), None);
    assert_eq!(v.verdict, Verdict::Idle, "{}", v.reason);
    assert_eq!(v.measured_seconds, 10 * HOUR);
}

#[test]
fn the_tenant_sums_allocated_used_and_savings() {
    let idle = hours(168, |_| (100, 200), Some(500));
    let busy = hours(168, |_| (3000, 3900), Some(7000));
    let vms = [vm(&idle), vm(&busy)];
    let r = report(
        &vms,
        &Policy::default(),
        week_later().now(),
        Some(&pricing()),
    )
    .unwrap();
    assert_eq!((r.idle, r.oversized), (1, 0));
    assert_eq!(r.allocated.vcpus, 8);
    assert_eq!(r.used.cpu_millicores, 3100);
    assert_eq!(r.used.memory_mib, 7500);
    assert_eq!(r.disk_allocated_mib, 2400);
    assert_eq!(r.monthly_saving.as_deref(), Some("204.40"));
    assert_eq!(r.currency.as_deref(), Some("EUR"));
    assert_eq!(
        r.at.map(|t| t.0.as_second()),
        Some(START + 168 * HOUR),
        "as of the newest bucket's end"
    );
    assert!(report(&[], &Policy::default(), week_later().now(), None).is_none());
}
