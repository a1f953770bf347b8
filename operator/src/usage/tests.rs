//! Scenarios at known instants, exact to the second.

use ironvisor_crds::usage::{RunRecord, UsageReportStatus, UsageTotals};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::accrue::{Marker, advance, held_for};
use super::calendar::Month;
use super::ledger::{
    VmFacts, accrue_all, accrue_priced, carry_over, children_of, is_closed, open, own_cost,
    roll_up, roll_up_with_cost,
};
use super::pricing::Pricing;
use super::{Clock, ManualClock, report_name};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn rec(at: &str, running: bool, vcpus: i64, memory_mib: i64, storage_mib: i64) -> RunRecord {
    RunRecord {
        at: Time(ts(at)),
        running,
        vcpus,
        memory_mib,
        storage_mib,
        node: "host-a".into(),
    }
}

fn nov() -> Month {
    Month::parse("2026-11").unwrap()
}

fn facts<'a>(uid: &'a str, log: &'a [RunRecord], deleted: Option<&str>) -> VmFacts<'a> {
    VmFacts {
        namespace: "ns",
        name: uid,
        uid,
        log,
        deleted_at: deleted.map(ts),
    }
}

#[test]
fn a_vm_that_runs_halts_and_is_deleted_counts_each_second_once() {
    let log = [
        rec("2026-11-10T10:00:00Z", true, 2, 1024, 10240),
        rec("2026-11-10T12:30:15Z", false, 2, 1024, 10240),
    ];
    let mut s = open(nov());
    let vms = [facts("a", &log, Some("2026-11-10T14:00:00Z"))];
    accrue_all(&mut s, nov(), &vms, ts("2026-11-10T15:00:00Z"), &[]);
    let expected = UsageTotals {
        running_seconds: 9015,
        vcpu_seconds: 2 * 9015,
        memory_mib_seconds: 1024 * 9015,
        reserved_seconds: 5385,
        reserved_vcpu_seconds: 2 * 5385,
        reserved_memory_mib_seconds: 1024 * 5385,
        storage_mib_seconds: 10240 * (9015 + 5385),
    };
    assert_eq!(s.own, expected);
    assert_eq!(s.vms[0].usage, expected);
    assert!(s.vms[0].deleted, "the deleted VM is kept, marked deleted");
    assert_eq!(s.days.len(), 1);
    assert_eq!(s.days[0].date, "2026-11-10");
    // Later checkpoints add nothing for the deleted VM, even when it is gone from the list.
    accrue_all(&mut s, nov(), &[], ts("2026-11-20T00:00:00Z"), &[]);
    assert_eq!(s.own, expected);
}

#[test]
fn a_resize_while_running_counts_each_size_for_its_own_seconds() {
    let log = [
        rec("2026-11-02T10:00:00Z", true, 1, 512, 0),
        rec("2026-11-02T11:00:00Z", true, 4, 2048, 0),
    ];
    let mut s = open(nov());
    accrue_all(
        &mut s,
        nov(),
        &[facts("a", &log, None)],
        ts("2026-11-02T12:00:00Z"),
        &[],
    );
    assert_eq!(s.own.running_seconds, 7200);
    assert_eq!(s.own.vcpu_seconds, 3600 + 4 * 3600);
    assert_eq!(s.own.memory_mib_seconds, 512 * 3600 + 2048 * 3600);
}

#[test]
fn checkpoints_at_any_cadence_sum_to_the_same_totals() {
    let log = [
        rec("2026-11-03T08:00:07Z", true, 2, 1024, 100),
        rec("2026-11-03T09:13:00Z", false, 2, 1024, 100),
        rec("2026-11-03T23:59:59Z", true, 3, 1024, 100),
        rec("2026-11-04T00:10:00Z", false, 3, 1024, 100),
    ];
    let end = ts("2026-11-04T06:00:00Z");
    let mut once = open(nov());
    accrue_all(&mut once, nov(), &[facts("a", &log, None)], end, &[]);
    let mut stepped = open(nov());
    let mut t = ts("2026-11-03T00:00:00Z");
    while t < end {
        t = (t + jiff::SignedDuration::from_secs(7 * 60 + 13)).min(end);
        accrue_all(&mut stepped, nov(), &[facts("a", &log, None)], t, &[]);
        // A checkpoint re-applied (an operator that restarted before seeing its own write
        // succeed, or a second leader) changes nothing.
        accrue_all(&mut stepped, nov(), &[facts("a", &log, None)], t, &[]);
    }
    assert_eq!(stepped.own, once.own);
    assert_eq!(stepped.days, once.days);
    assert_eq!(once.days.len(), 2);
    assert_eq!(once.own.running_seconds, (3600 + 12 * 60 + 53) + 601);
}

#[test]
fn an_interval_across_the_month_end_lands_in_each_month_by_its_seconds() {
    let log = [
        rec("2026-11-30T23:00:00Z", true, 1, 1024, 0),
        rec("2026-12-01T01:00:00Z", false, 1, 1024, 0),
    ];
    let vms = [facts("a", &log, None)];
    let mut november = open(nov());
    accrue_all(&mut november, nov(), &vms, ts("2026-12-01T02:00:00Z"), &[]);
    assert!(is_closed(&november, nov()));
    assert_eq!(november.own.running_seconds, 3600);
    let dec = nov().next();
    let mut december = carry_over(&november, dec);
    accrue_all(&mut december, dec, &vms, ts("2026-12-01T02:00:00Z"), &[]);
    assert_eq!(december.own.running_seconds, 3600);
    assert_eq!(december.own.reserved_seconds, 3600);
    assert_eq!(december.days[0].date, "2026-12-01");
}

#[test]
fn a_change_the_agent_reports_late_applies_from_the_checkpoint_not_twice() {
    let start = rec("2026-11-05T10:00:00Z", true, 1, 0, 0);
    let m = advance(
        &Marker {
            accounted_through: ts("2026-11-05T10:00:00Z"),
            holding: None,
        },
        std::slice::from_ref(&start),
        ts("2026-11-05T11:00:00Z"),
        &[],
    );
    // The halt is timed 10:30 but reaches the log after the checkpoint at 11:00.
    let log = [start, rec("2026-11-05T10:30:00Z", false, 1, 0, 0)];
    let m2 = advance(&m.marker, &log, ts("2026-11-05T12:00:00Z"), &[]);
    assert_eq!(m.total().running_seconds, 3600);
    assert_eq!(m2.total().running_seconds, 0);
    assert_eq!(m2.total().reserved_seconds, 3600);
}

#[test]
fn a_record_timed_after_the_checkpoint_waits_for_a_later_one() {
    let log = [
        rec("2026-11-05T10:00:00Z", true, 1, 0, 0),
        rec("2026-11-05T13:00:00Z", false, 1, 0, 0),
    ];
    let marker = Marker {
        accounted_through: ts("2026-11-05T10:00:00Z"),
        holding: None,
    };
    let a = advance(&marker, &log, ts("2026-11-05T12:00:00Z"), &[]);
    assert_eq!(a.marker.holding.as_ref().map(|h| h.running), Some(true));
    let b = advance(&a.marker, &log, ts("2026-11-05T14:00:00Z"), &[]);
    assert_eq!(
        a.total().running_seconds + b.total().running_seconds,
        3 * 3600
    );
    assert_eq!(b.total().reserved_seconds, 3600);
}

#[test]
fn a_log_that_rolled_past_the_marker_still_accounts_what_it_holds() {
    let old = rec("2026-11-05T09:00:00Z", true, 1, 0, 0);
    let marker = Marker {
        accounted_through: ts("2026-11-05T10:00:00Z"),
        holding: Some(old),
    };
    let log = [rec("2026-11-05T11:00:00Z", false, 1, 0, 0)];
    let a = advance(&marker, &log, ts("2026-11-05T12:00:00Z"), &[]);
    assert_eq!(a.total().running_seconds, 3600);
    assert_eq!(a.total().reserved_seconds, 3600);
}

#[test]
fn a_vm_first_seen_mid_period_is_accounted_from_the_last_checkpoint() {
    let log = [rec("2026-11-01T00:00:00Z", true, 1, 0, 0)];
    let mut s = open(nov());
    accrue_all(&mut s, nov(), &[], ts("2026-11-10T00:00:00Z"), &[]);
    // The VM's namespace joined this tenant now: its earlier hours were another tenant's.
    accrue_all(
        &mut s,
        nov(),
        &[facts("a", &log, None)],
        ts("2026-11-10T01:00:00Z"),
        &[],
    );
    assert_eq!(s.own.running_seconds, 3600);
}

#[test]
fn a_vm_with_no_run_record_holds_nothing() {
    let mut s = open(nov());
    accrue_all(
        &mut s,
        nov(),
        &[facts("a", &[], None)],
        ts("2026-11-10T00:00:00Z"),
        &[],
    );
    assert!(s.vms.is_empty() && s.own.is_zero());
}

fn ledger_with(running_seconds: i64, ancestors: &[&str]) -> UsageReportStatus {
    let u = held_for(&rec("2026-11-01T00:00:00Z", true, 1, 0, 0), running_seconds);
    let mut s = UsageReportStatus {
        own: u,
        ..Default::default()
    };
    s.lineages.push(ironvisor_crds::usage::LineageUsage {
        ancestors: ancestors.iter().map(|a| a.to_string()).collect(),
        usage: u,
        cost_nanos: 0,
    });
    s
}

#[test]
fn a_parent_sees_its_childrens_totals_and_keeps_them_after_a_child_moves() {
    let org = ledger_with(1, &[]);
    let dept = ledger_with(10, &["org"]);
    let project = ledger_with(100, &["dept", "org"]);
    // `moved` ran 1000 s under org, then 5000 s under other.
    let mut moved = ledger_with(1000, &["org"]);
    let later = ledger_with(5000, &["other"]);
    moved.own.add(&later.own);
    moved.lineages.extend(later.lineages);
    let reports = [
        ("org", &org),
        ("dept", &dept),
        ("project", &project),
        ("moved", &moved),
    ];
    let total = |t: &str| roll_up(t, reports.iter().copied()).running_seconds;
    assert_eq!(total("org"), 1 + 10 + 100 + 1000);
    assert_eq!(total("dept"), 10 + 100);
    assert_eq!(total("project"), 100);
    assert_eq!(total("other"), 5000);
    assert_eq!(total("moved"), 6000);
    // Each direct child's part: own plus the children is the total.
    let children = |t: &str| -> Vec<(String, i64)> {
        children_of(t, reports.iter().copied())
            .into_iter()
            .map(|(c, u, _)| (c, u.running_seconds))
            .collect()
    };
    assert_eq!(
        children("org"),
        vec![("dept".to_string(), 110), ("moved".to_string(), 1000)]
    );
    assert_eq!(children("dept"), vec![("project".to_string(), 100)]);
    assert_eq!(children("other"), vec![("moved".to_string(), 5000)]);
    assert!(children("project").is_empty());
}

#[test]
fn report_names_are_tenant_dot_month_and_overlong_tenants_are_refused() {
    assert_eq!(report_name("finance", nov()).unwrap(), "finance.2026-11");
    assert!(report_name(&"a".repeat(246), nov()).is_err());
}

#[test]
fn the_manual_clock_says_what_it_was_set_to() {
    let c = ManualClock::new(ts("2026-11-01T00:00:00Z"));
    c.set(ts("2026-11-02T00:00:00Z"));
    assert_eq!(c.now(), ts("2026-11-02T00:00:00Z"));
}

fn prices() -> Pricing {
    let rate = |from: &str, cpu: &str| ironvisor_crds::pricing::Rate {
        effective_from: Time(ts(from)),
        host_class: None,
        vcpu_hour: cpu.into(),
        memory_gib_hour: "0".into(),
        storage_gib_month: "0".into(),
    };
    let spec = ironvisor_crds::pricing::PriceListSpec {
        currency: "EUR".into(),
        host_class_label: None,
        rates: vec![
            rate("2026-11-01T00:00:00Z", "0.04"),
            rate("2026-11-05T12:00:00Z", "0.10"),
        ],
        budgets: vec![],
    };
    Pricing::new(&spec, Default::default())
}

#[test]
fn a_price_change_applies_from_its_effective_time_only_whatever_the_checkpoints() {
    let log = [
        rec("2026-11-05T10:00:00Z", true, 2, 0, 0),
        rec("2026-11-05T14:00:00Z", false, 2, 0, 0),
    ];
    let p = prices();
    let end = ts("2026-11-05T15:00:00Z");
    let mut once = open(nov());
    accrue_priced(
        &mut once,
        nov(),
        &[facts("a", &log, None)],
        end,
        &["org".into()],
        Some(&p),
    );
    let mut stepped = open(nov());
    for t in [
        "2026-11-05T11:00:00Z",
        "2026-11-05T12:30:00Z",
        "2026-11-05T15:00:00Z",
    ] {
        let f = [facts("a", &log, None)];
        accrue_priced(&mut stepped, nov(), &f, ts(t), &["org".into()], Some(&p));
    }
    // 4 vCPU-hours at 0.04 before noon, 4 at 0.10 after.
    assert_eq!(own_cost(&once), 160_000_000 + 400_000_000);
    assert_eq!(own_cost(&stepped), own_cost(&once));
    assert_eq!(once.priced.len(), 2);
    let org = open(nov());
    let reports = [("org", &org), ("dept", &once)];
    let (_, children) = roll_up_with_cost("org", reports.iter().copied());
    assert_eq!(
        children, 560_000_000,
        "the parent's cost includes the child's"
    );
}

#[test]
fn usage_before_any_rate_is_not_priced() {
    let log = [rec("2026-10-31T23:00:00Z", true, 1, 0, 0)];
    let mut s = open(nov());
    s.accrued_through = Some(Time(ts("2026-10-31T23:00:00Z")));
    let p = prices();
    let f = [facts("a", &log, None)];
    accrue_priced(&mut s, nov(), &f, ts("2026-11-01T01:00:00Z"), &[], Some(&p));
    assert_eq!(s.own.running_seconds, 7200);
    assert_eq!(
        own_cost(&s),
        40_000_000,
        "only the hour after the first rate"
    );
}
