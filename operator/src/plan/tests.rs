//! Tests of whole passes: the index is fed as the watches would, and each pass's writes are
//! applied back to it as the API server would, so sequences (bursts, restarts, host loss)
//! are exercised end to end without a cluster.

use std::collections::BTreeSet;

use ironvisor_crds::common::condition_status;
use ironvisor_crds::vm::{Phase, RunStrategy};
use jiff::Timestamp;
use pretty_assertions::assert_eq;

use super::*;
use crate::index::{HostEntry, Index, VmEntry, VmKey, VmNet};
use crate::placement::{Capacity, Request};
use crate::quota::QuotaEntry;
use crate::quota::tree::tests::node;
use crate::units::{Limits, Units};

pub(super) const GI: i128 = 1 << 30;

pub(super) fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).expect("valid")
}

pub(super) fn vm(ns: &str, name: &str, created: i64, vcpus: i128, mem_gi: i128) -> VmEntry {
    VmEntry {
        key: VmKey {
            namespace: ns.into(),
            name: name.into(),
        },
        uid: format!("uid-{ns}-{name}"),
        created: t(created),
        deleting: false,
        demand: Ok(Units {
            vms: 1,
            vcpus,
            memory: mem_gi * GI,
            storage: GI,
        }),
        run_strategy: RunStrategy::Always,
        request: Request {
            namespace: ns.into(),
            ..Request::default()
        },
        restart_elsewhere: false,
        label_node: None,
        legacy_annotation: false,
        status_node: None,
        status_vcpus: None,
        admitted: None,
        admitted_ports: None,
        phase: None,
        printable: None,
        scheduled: None,
        ready: None,
        tenant: None,
        agents: BTreeSet::new(),
        operator_owns_phase: false,
        net: VmNet::default(),
        template: false,
        clones: Vec::new(),
        operation: None,
    }
}

pub(super) fn host(vcpus: i128, mem_gi: i128, seen: i64) -> HostEntry {
    HostEntry {
        has_object: true,
        allocatable: Some(Capacity {
            vcpus,
            memory: mem_gi * GI,
        }),
        ready: Some(("True".into(), "AgentReady".into())),
        heartbeat: Some(t(seen)),
        heartbeat_seen: Some(t(seen)),
        ..HostEntry::default()
    }
}

pub(super) fn key(ns: &str, name: &str) -> VmKey {
    VmKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// An index with tenant `fin` owning namespace `fin`, and quota `fin-q` on it.
pub(super) fn cluster(limits: Limits, hosts: &[(&str, i128, i128)]) -> Index {
    let mut ix = Index::new();
    ix.apply_tenant_node(node("fin", None, &["fin"], 0));
    ix.apply_quota_entry(QuotaEntry {
        name: "fin-q".into(),
        tenant: "fin".into(),
        limits,
    });
    for (n, c, m) in hosts {
        ix.hosts.insert((*n).into(), host(*c, *m, 0));
    }
    ix
}

/// Apply a pass's writes as the API server and the watch would (with the operator's
/// assumptions recorded first, as the write loop does).
pub(super) fn write_back(ix: &mut Index, plan: &Plan) {
    for w in &plan.vms {
        if let Some(a) = &w.assume {
            ix.assume(w.key.clone(), a.clone());
        }
    }
    for w in &plan.vms {
        let mut e = ix.vm(&w.key).expect("known").clone();
        e.status_node = w.status.node_name.clone();
        e.status_vcpus = w.status.vcpus;
        e.admitted = w.status.admitted;
        e.admitted_ports = w.status.host_ports.clone();
        e.scheduled = Some(w.status.scheduled.clone());
        if let Some(r) = &w.status.ready {
            e.ready = Some(r.clone());
        }
        // The operator alone writes the Tenant condition: leaving it out removes it.
        e.tenant = w.status.tenant.clone();
        e.operator_owns_phase = w.status.phase.is_some();
        if let Some((p, s)) = &w.status.phase {
            e.phase = Some(*p);
            e.printable = Some(s.clone());
        }
        ix.apply_vm_entry(e);
    }
    for w in &plan.labels {
        let mut e = ix.vm(&w.key).expect("known").clone();
        e.label_node = w.node.clone();
        e.legacy_annotation &= !w.drop_annotation;
        ix.apply_vm_entry(e);
    }
}

pub(super) fn run(ix: &mut Index, now: i64) -> Plan {
    let p = plan(ix, Config::default(), t(now));
    write_back(ix, &p);
    p
}

pub(super) fn used(ix: &Index, tenant: &str) -> Units {
    plan(ix, Config::default(), t(1)).ledger.used(tenant)
}

pub(super) fn limits(vms: Option<i128>, vcpus: Option<i128>) -> Limits {
    Limits {
        vms,
        vcpus,
        ..Limits::default()
    }
}

#[test]
fn vm_over_quota_stays_pending_with_quota_exceeded() {
    let mut ix = cluster(limits(None, Some(32)), &[("h1", 64, 64)]);
    for i in 0..15 {
        ix.apply_vm_entry(vm("fin", &format!("old{i}"), i, 2, 1));
    }
    ix.apply_vm_entry(vm("fin", "big", 100, 4, 1));
    let p = run(&mut ix, 1);
    assert_eq!(p.placed.len(), 15);
    let w = p.vms.iter().find(|w| w.key == key("fin", "big")).unwrap();
    assert_eq!(w.status.scheduled.status, condition_status::FALSE);
    assert_eq!(w.status.scheduled.reason, "QuotaExceeded");
    assert_eq!(
        w.status.scheduled.message,
        "exceeded quota: fin-q, requested: vcpus=4, used: vcpus=30, limited: vcpus=32"
    );
    assert_eq!(
        w.status.phase,
        Some((Phase::Pending, "QuotaExceeded".into()))
    );
    assert_eq!(w.announce.as_ref().map(|a| a.reason), Some("QuotaExceeded"));
    assert_eq!(p.pending.get("QuotaExceeded"), Some(&1));
}

#[test]
fn a_hundred_creates_against_a_quota_of_fifty_admit_exactly_fifty() {
    let mut ix = cluster(
        limits(Some(50), None),
        &[("h1", 1000, 1000), ("h2", 1000, 1000)],
    );
    for i in 0..100 {
        ix.apply_vm_entry(vm("fin", &format!("vm{i:03}"), i % 7, 1, 1));
    }
    let p = run(&mut ix, 1);
    assert_eq!(p.placed.len(), 50);
    assert_eq!(used(&ix, "fin").vms, 50);
    // Nothing more on later passes, and the pending ones are not rewritten.
    let again = run(&mut ix, 2);
    assert!(again.placed.is_empty());
    assert!(again.vms.is_empty(), "{:?}", again.vms);
}

#[test]
fn a_vm_over_quota_does_not_block_a_younger_one_that_fits() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "running", 0, 3, 1));
    run(&mut ix, 1);
    ix.apply_vm_entry(vm("fin", "old-big", 10, 2, 1));
    ix.apply_vm_entry(vm("fin", "young-small", 20, 1, 1));
    let p = run(&mut ix, 2);
    let big = p
        .vms
        .iter()
        .find(|w| w.key == key("fin", "old-big"))
        .unwrap();
    assert_eq!(
        big.status.scheduled.message,
        "exceeded quota: fin-q, requested: vcpus=2, used: vcpus=3, limited: vcpus=4"
    );
    assert_eq!(p.placed, vec![key("fin", "young-small")]);
    assert_eq!(used(&ix, "fin").vcpus, 4);
}

#[test]
fn room_that_appears_goes_to_the_oldest_pending_vm_that_fits() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "running", 0, 4, 1));
    run(&mut ix, 1);
    ix.apply_vm_entry(vm("fin", "old", 10, 2, 1));
    ix.apply_vm_entry(vm("fin", "young", 20, 2, 1));
    ix.apply_vm_entry(vm("fin", "youngest", 30, 1, 1));
    assert!(run(&mut ix, 2).placed.is_empty());
    // 3 vCPUs free up: the oldest (2) first, then the youngest (1) that still fits; the
    // middle one (2) waits on the real limit.
    ix.delete_vm(&key("fin", "running"));
    ix.apply_vm_entry(vm("fin", "running-1", 0, 1, 1));
    ix.assume(
        key("fin", "running-1"),
        Assumed {
            node: "h1".into(),
            compute: true,
        },
    );
    let p = run(&mut ix, 3);
    assert_eq!(p.placed, vec![key("fin", "old"), key("fin", "youngest")]);
    let young = p.vms.iter().find(|w| w.key == key("fin", "young")).unwrap();
    assert_eq!(
        young.status.scheduled.message,
        "exceeded quota: fin-q, requested: vcpus=2, used: vcpus=3, limited: vcpus=4",
        "checked before the youngest took the last vCPU"
    );
}

#[test]
fn a_burst_never_overfills_a_host_because_unreported_placements_count() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8), ("h2", 4, 4)]);
    for i in 0..40 {
        ix.apply_vm_entry(vm("fin", &format!("b{i:02}"), 0, 1, 1));
    }
    // First pass: writes made but the watch has not shown any of them yet.
    let p = plan(&ix, Config::default(), t(1));
    assert_eq!(p.placed.len(), 12);
    for w in &p.vms {
        if let Some(a) = &w.assume {
            ix.assume(w.key.clone(), a.clone());
        }
    }
    let p2 = plan(&ix, Config::default(), t(2));
    assert!(
        p2.placed.is_empty(),
        "assumed placements must fill the hosts"
    );
    let on = |h: &str| {
        p.vms
            .iter()
            .filter(|w| w.status.node_name.as_deref() == Some(h))
            .count()
    };
    assert_eq!((on("h1"), on("h2")), (8, 4));
}

#[test]
fn the_watch_confirming_a_write_drops_the_assumption() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 1, 1));
    run(&mut ix, 1);
    assert_eq!(ix.assumed_len(), 0);
}

#[test]
fn an_operator_restart_rebuilds_the_same_usage_from_the_api_and_decides_nothing_new() {
    let mut ix = cluster(limits(Some(5), None), &[("h1", 64, 64)]);
    for i in 0..8 {
        ix.apply_vm_entry(vm("fin", &format!("v{i}"), i, 1, 1));
    }
    run(&mut ix, 1);
    // A fresh operator: only what the API holds, no assumptions.
    let mut fresh = cluster(limits(Some(5), None), &[("h1", 64, 64)]);
    for e in ix.vms() {
        fresh.apply_vm_entry(e.clone());
    }
    let p = plan(&fresh, Config::default(), t(2));
    assert!(p.placed.is_empty());
    assert!(p.vms.is_empty());
    assert_eq!(p.ledger.used("fin").vms, 5);
}

#[test]
fn a_crash_between_status_and_label_counts_the_vm_and_copies_the_label_again() {
    let mut ix = cluster(limits(Some(1), None), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 1, 1));
    let p = plan(&ix, Config::default(), t(1));
    // Only the status write lands; the operator stops before the label copy.
    let only_status = Plan {
        labels: Vec::new(),
        ..p
    };
    write_back(&mut ix, &only_status);
    ix.apply_vm_entry(vm("fin", "b", 1, 1, 1));
    let mut fresh = cluster(limits(Some(1), None), &[("h1", 64, 64)]);
    for e in ix.vms() {
        fresh.apply_vm_entry(e.clone());
    }
    let p = run(&mut fresh, 2);
    assert!(p.placed.is_empty(), "a counts: b waits");
    assert_eq!(
        p.labels
            .iter()
            .map(|w| (w.key.name.as_str(), w.node.as_deref()))
            .collect::<Vec<_>>(),
        vec![("a", Some("h1"))]
    );
    assert!(p.vms.iter().all(|w| w.key.name == "b"), "a's status stands");
    assert!(run(&mut fresh, 3).labels.is_empty());
}

#[test]
fn a_halted_vm_counts_vms_and_storage_but_not_vcpus_or_memory() {
    let mut ix = cluster(limits(None, Some(1)), &[("h1", 64, 64)]);
    let mut h = vm("fin", "h", 0, 8, 8);
    h.run_strategy = RunStrategy::Halted;
    ix.apply_vm_entry(h);
    let p = run(&mut ix, 1);
    assert_eq!(p.vms[0].status.scheduled.reason, "ScheduledHalted");
    let u = used(&ix, "fin");
    assert_eq!((u.vms, u.vcpus, u.memory, u.storage), (1, 0, 0, GI));
}

#[test]
fn starting_a_halted_vm_checks_quota_again_and_keeps_it_on_its_host() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    let mut h = vm("fin", "h", 0, 4, 1);
    h.run_strategy = RunStrategy::Halted;
    ix.apply_vm_entry(h);
    ix.apply_vm_entry(vm("fin", "other", 1, 2, 1));
    run(&mut ix, 1);
    let mut started = ix.vm(&key("fin", "h")).unwrap().clone();
    started.run_strategy = RunStrategy::Always;
    ix.apply_vm_entry(started);
    let p = run(&mut ix, 2);
    let w = p.vms.iter().find(|w| w.key == key("fin", "h")).unwrap();
    assert_eq!(w.status.scheduled.reason, "QuotaExceeded");
    assert_eq!(
        p.pending.get("QuotaExceeded"),
        Some(&1),
        "counted as pending"
    );
    assert_eq!(w.status.node_name.as_deref(), Some("h1"));
    assert!(p.labels.is_empty(), "the label copy stays");
    assert_eq!(used(&ix, "fin").vcpus, 2);
    // Room appears: admitted by itself.
    ix.delete_vm(&key("fin", "other"));
    let p = run(&mut ix, 3);
    assert_eq!(p.vms[0].status.scheduled.reason, "Scheduled");
    assert_eq!(used(&ix, "fin").vcpus, 4);
}

#[test]
fn halting_a_vm_releases_its_compute_once_the_release_is_written() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 4, 1));
    run(&mut ix, 1);
    let mut halted = ix.vm(&key("fin", "a")).unwrap().clone();
    halted.run_strategy = RunStrategy::Halted;
    ix.apply_vm_entry(halted);
    ix.apply_vm_entry(vm("fin", "b", 5, 4, 1));
    // The pass that sees the halt still counts it: b waits one pass.
    let p = run(&mut ix, 2);
    assert!(p.placed.is_empty());
    let p = run(&mut ix, 3);
    assert_eq!(p.placed, vec![key("fin", "b")]);
}

#[test]
fn lowering_a_quota_below_usage_keeps_running_vms_and_blocks_new_ones_saying_so() {
    let mut ix = cluster(limits(None, Some(8)), &[("h1", 64, 64)]);
    for i in 0..4 {
        ix.apply_vm_entry(vm("fin", &format!("r{i}"), i, 2, 1));
    }
    run(&mut ix, 1);
    ix.apply_quota_entry(QuotaEntry {
        name: "fin-q".into(),
        tenant: "fin".into(),
        limits: limits(None, Some(4)),
    });
    ix.apply_vm_entry(vm("fin", "new", 10, 1, 1));
    let p = run(&mut ix, 2);
    assert_eq!(p.vms.len(), 1, "running VMs are not touched: {:?}", p.vms);
    assert!(
        p.vms[0]
            .status
            .scheduled
            .message
            .contains("usage is above the lowered limit")
    );
    assert_eq!(used(&ix, "fin").vcpus, 8);
}

#[test]
fn a_parent_quota_bounds_the_sum_of_its_childrens_vms() {
    let mut ix = Index::new();
    ix.apply_tenant_node(node("org", None, &[], 0));
    ix.apply_tenant_node(node("a", Some("org"), &["a"], 1));
    ix.apply_tenant_node(node("b", Some("org"), &["b"], 2));
    ix.apply_quota_entry(QuotaEntry {
        name: "org-q".into(),
        tenant: "org".into(),
        limits: limits(Some(3), None),
    });
    ix.hosts.insert("h1".into(), host(64, 64, 0));
    ix.apply_vm_entry(vm("a", "1", 0, 1, 1));
    ix.apply_vm_entry(vm("b", "2", 1, 1, 1));
    ix.apply_vm_entry(vm("a", "3", 2, 1, 1));
    ix.apply_vm_entry(vm("b", "4", 3, 1, 1));
    let p = run(&mut ix, 1);
    assert_eq!(p.placed.len(), 3);
    assert_eq!(p.ledger.used("org").vms, 3);
    assert_eq!(p.ledger.used("a").vms, 2);
    let w = p.vms.iter().find(|w| w.key == key("b", "4")).unwrap();
    assert!(
        w.status
            .scheduled
            .message
            .starts_with("exceeded quota: org-q, requested: virtualMachines=1")
    );
}

#[test]
fn no_fitting_host_gives_the_per_filter_count_message() {
    let mut ix = cluster(
        Limits::default(),
        &[("a", 64, 1), ("b", 64, 2), ("c", 64, 64)],
    );
    ix.hosts.get_mut("c").unwrap().unschedulable = true;
    ix.apply_vm_entry(vm("fin", "v", 0, 1, 4));
    let p = run(&mut ix, 1);
    let w = &p.vms[0];
    assert_eq!(w.status.scheduled.reason, "Unschedulable");
    assert_eq!(
        w.status.scheduled.message,
        "0/3 hosts available: 2 insufficient memory, 1 unschedulable"
    );
    assert_eq!(
        w.announce.as_ref().map(|a| a.reason),
        Some("FailedScheduling")
    );
}

#[test]
fn an_invalid_spec_stays_pending_with_the_reason() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8)]);
    let mut v = vm("fin", "bad", 0, 1, 1);
    v.demand = Err("spec.memory.size is invalid".into());
    ix.apply_vm_entry(v);
    let p = run(&mut ix, 1);
    assert_eq!(p.vms[0].status.scheduled.reason, "InvalidSpec");
    assert_eq!(p.pending.get("InvalidSpec"), Some(&1));
}

#[test]
fn a_vm_being_deleted_keeps_counting_but_gets_no_decision() {
    let mut ix = cluster(limits(Some(1), None), &[("h1", 8, 8)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 1, 1));
    run(&mut ix, 1);
    let mut gone = ix.vm(&key("fin", "a")).unwrap().clone();
    gone.deleting = true;
    ix.apply_vm_entry(gone);
    ix.apply_vm_entry(vm("fin", "b", 1, 1, 1));
    let p = run(&mut ix, 2);
    assert!(p.placed.is_empty());
    assert!(p.vms.iter().all(|w| w.key.name == "b"));
}

#[test]
fn the_agent_taking_over_ends_the_operators_phase() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 1, 1));
    let p = run(&mut ix, 1);
    assert_eq!(
        p.vms[0].status.phase,
        Some((Phase::Scheduled, "Scheduled".into()))
    );
    let mut e = ix.vm(&key("fin", "a")).unwrap().clone();
    e.agents.insert("h1".into());
    e.phase = Some(Phase::Running);
    ix.apply_vm_entry(e);
    let p = run(&mut ix, 2);
    assert_eq!(p.vms.len(), 1, "one write to release phase");
    assert_eq!(p.vms[0].status.phase, None);
    assert!(run(&mut ix, 3).vms.is_empty());
}

#[test]
fn a_lost_host_is_marked_and_its_vms_get_host_lost_and_phase_unknown() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8), ("h2", 8, 8)]);
    ix.hosts.get_mut("h2").unwrap().unschedulable = true;
    ix.apply_vm_entry(vm("fin", "a", 0, 1, 1));
    run(&mut ix, 1);
    ix.hosts.get_mut("h2").unwrap().heartbeat_seen = Some(t(100));
    let p = run(&mut ix, 40);
    assert!(p.hosts.is_empty(), "40 s is within the grace period");
    let p = run(&mut ix, 41);
    assert_eq!(p.hosts, vec![HostWrite::Lost { host: "h1".into() }]);
    let w = &p.vms[0];
    assert_eq!(w.status.phase, Some((Phase::Unknown, "HostLost".into())));
    let r = w.status.ready.as_ref().unwrap();
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "HostLost")
    );
    assert!(r.message.contains("waiting for it"), "{}", r.message);
    assert_eq!(
        w.status.node_name.as_deref(),
        Some("h1"),
        "a VM with local disks waits for its host"
    );
    assert!(p.labels.is_empty());
}

#[test]
fn a_diskless_restart_vm_moves_off_a_lost_host_and_the_returning_host_does_not_get_it_back() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8)]);
    let mut v = vm("fin", "a", 0, 2, 2);
    v.restart_elsewhere = true;
    ix.apply_vm_entry(v);
    run(&mut ix, 1);
    ix.hosts.insert("h2".into(), host(8, 8, 60));
    let p = run(&mut ix, 60);
    assert_eq!(p.vms[0].status.node_name.as_deref(), Some("h2"));
    assert_eq!(
        p.labels[0].node.as_deref(),
        Some("h2"),
        "then the label copy"
    );
    assert_eq!(
        p.vms[0].announce.as_ref().map(|a| a.reason),
        Some("Rescheduled")
    );
    // h1 comes back: its mark is released, the VM stays with its one owner, h2.
    let mut h1 = ix.hosts["h1"].clone();
    h1.ready = Some(("False".into(), "HostLost".into()));
    h1.heartbeat_seen = Some(t(70));
    ix.hosts.insert("h1".into(), h1);
    let p = run(&mut ix, 71);
    assert_eq!(p.hosts, vec![HostWrite::Returned { host: "h1".into() }]);
    assert!(
        p.vms
            .iter()
            .all(|w| w.status.node_name.as_deref() == Some("h2"))
    );
    assert!(p.labels.is_empty());
    assert_eq!(
        ix.vm(&key("fin", "a")).unwrap().label_node.as_deref(),
        Some("h2")
    );
}

/// A VM placed on h1 whose agent (when `agent`) reported it Running and Ready, then h1 lost.
fn lost_vm(agent: bool) -> Index {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 1, 1));
    run(&mut ix, 1);
    if agent {
        let mut e = ix.vm(&key("fin", "a")).unwrap().clone();
        e.agents.insert("h1".into());
        e.operator_owns_phase = false;
        e.phase = Some(Phase::Running);
        e.ready = Some(ironvisor_crds::common::new_condition(
            "Ready",
            true,
            "Running",
            String::new(),
            None,
            Time(t(2)),
        ));
        ix.apply_vm_entry(e);
        assert!(run(&mut ix, 3).vms.is_empty());
    }
    let p = run(&mut ix, 60);
    assert_eq!(p.hosts, vec![HostWrite::Lost { host: "h1".into() }]);
    let r = ix.vm(&key("fin", "a")).unwrap().ready.clone().unwrap();
    assert_eq!(r.reason, "HostLost");
    let mut h1 = ix.hosts["h1"].clone();
    h1.ready = Some(("False".into(), "HostLost".into()));
    h1.heartbeat_seen = Some(t(70));
    ix.hosts.insert("h1".into(), h1);
    ix
}

fn ready_of(w: &VmWrite) -> Option<(String, String)> {
    let r = w.status.ready.as_ref()?;
    Some((r.status.clone(), r.reason.clone()))
}

#[test]
fn a_returning_host_clears_the_host_lost_mark_of_a_vm_its_agent_never_reported() {
    let mut ix = lost_vm(false);
    let p = run(&mut ix, 71);
    assert_eq!(p.hosts, vec![HostWrite::Returned { host: "h1".into() }]);
    let w = &p.vms[0];
    assert_eq!(w.status.node_name.as_deref(), Some("h1"), "it stays on h1");
    assert_eq!(w.status.phase, Some((Phase::Scheduled, "Scheduled".into())));
    assert_eq!(
        ready_of(w),
        Some(("Unknown".into(), "HostReturned".into())),
        "the operator owns Ready alone: it rewrites it rather than dropping it"
    );
    assert!(run(&mut ix, 72).vms.is_empty(), "then nothing more to say");
}

#[test]
fn a_returning_host_hands_phase_and_ready_back_to_its_agent() {
    let mut ix = lost_vm(true);
    let p = run(&mut ix, 71);
    let w = &p.vms[0];
    assert_eq!(w.status.phase, None, "phase is released to the agent");
    assert_eq!(ready_of(w), Some(("Unknown".into(), "HostReturned".into())));
    // The agent re-applies its status with force: Ready is its own again.
    let mut e = ix.vm(&key("fin", "a")).unwrap().clone();
    e.phase = Some(Phase::Running);
    e.operator_owns_phase = false;
    e.ready = Some(ironvisor_crds::common::new_condition(
        "Ready",
        true,
        "Running",
        String::new(),
        None,
        Time(t(72)),
    ));
    ix.apply_vm_entry(e);
    assert!(run(&mut ix, 73).vms.is_empty(), "the agent's Ready stays");
}

#[test]
fn a_moved_vm_is_not_ready_until_the_new_hosts_agent_reports_it() {
    let mut ix = lost_vm(true);
    ix.hosts.remove("h1");
    let mut v = ix.vm(&key("fin", "a")).unwrap().clone();
    v.restart_elsewhere = true;
    ix.apply_vm_entry(v);
    let mut h1 = host(8, 8, 0);
    h1.ready = Some(("False".into(), "HostLost".into()));
    ix.hosts.insert("h1".into(), h1);
    ix.hosts.insert("h2".into(), host(8, 8, 80));
    let p = run(&mut ix, 80);
    let w = &p.vms[0];
    assert_eq!(w.status.node_name.as_deref(), Some("h2"));
    assert_eq!(ready_of(w), Some(("False".into(), "Rescheduled".into())));
    assert_eq!(w.status.phase, Some((Phase::Scheduled, "Scheduled".into())));
    assert!(run(&mut ix, 81).vms.is_empty(), "the mark holds, unchanged");
    // h1 returns: nothing moves back, the VM's one owner stays h2.
    let mut h1 = ix.hosts["h1"].clone();
    h1.heartbeat_seen = Some(t(90));
    ix.hosts.insert("h1".into(), h1);
    let p = run(&mut ix, 90);
    assert!(
        p.vms
            .iter()
            .all(|w| w.status.node_name.as_deref() == Some("h2")),
        "{:?}",
        p.vms
    );
    assert!(p.labels.is_empty());
    assert_eq!(
        ix.vm(&key("fin", "a")).unwrap().label_node.as_deref(),
        Some("h2")
    );
}

#[test]
fn a_restart_vm_with_nowhere_to_go_waits_and_says_why() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8)]);
    let mut v = vm("fin", "a", 0, 2, 2);
    v.restart_elsewhere = true;
    ix.apply_vm_entry(v);
    run(&mut ix, 1);
    let p = run(&mut ix, 60);
    let r = p.vms[0].status.ready.as_ref().unwrap();
    assert_eq!(
        r.message,
        "host h1 stopped reporting; cannot restart elsewhere: 0/0 hosts available"
    );
}

#[test]
fn spec_node_name_pins_and_anti_affinity_spreads_within_a_pass() {
    let mut ix = cluster(
        Limits::default(),
        &[("h1", 8, 8), ("h2", 8, 8), ("h3", 8, 8)],
    );
    let mut pinned = vm("fin", "p", 0, 1, 1);
    pinned.request.node_name = Some("h3".into());
    ix.apply_vm_entry(pinned);
    for i in 0..3 {
        let mut w = vm("fin", &format!("web{i}"), 1 + i, 1, 1);
        w.request.anti_affinity_group = Some("web".into());
        ix.apply_vm_entry(w);
    }
    let p = run(&mut ix, 1);
    let node_of = |n: &str| {
        p.vms
            .iter()
            .find(|w| w.key.name == n)
            .and_then(|w| w.status.node_name.clone())
            .unwrap()
    };
    assert_eq!(node_of("p"), "h3");
    let webs: BTreeSet<String> = (0..3).map(|i| node_of(&format!("web{i}"))).collect();
    assert_eq!(webs.len(), 3, "three group members on three hosts");
}

fn resize(ix: &mut Index, name: &str, vcpus: i128) {
    let mut e = ix.vm(&key("fin", name)).unwrap().clone();
    if let Ok(d) = e.demand.as_mut() {
        d.vcpus = vcpus;
    }
    ix.apply_vm_entry(e);
}

#[test]
fn a_resize_within_quota_is_admitted_and_recorded_in_the_status() {
    let mut ix = cluster(limits(None, Some(8)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 2, 1));
    let p = run(&mut ix, 1);
    assert_eq!(p.vms[0].status.admitted.map(|a| a.vcpus), Some(2));
    resize(&mut ix, "a", 6);
    let p = run(&mut ix, 2);
    let w = &p.vms[0];
    assert_eq!(
        w.status.node_name.as_deref(),
        Some("h1"),
        "same host, new size recorded"
    );
    assert!(w.reserves, "the growth is counted before the write");
    assert_eq!(w.status.admitted.map(|a| a.vcpus), Some(6));
    assert!(p.labels.is_empty());
    assert_eq!(w.announce.as_ref().map(|a| a.reason), Some("Resized"));
    assert_eq!(used(&ix, "fin").vcpus, 6);
    assert!(run(&mut ix, 3).vms.is_empty());
}

#[test]
fn a_resize_beyond_quota_keeps_the_admitted_size_and_says_so() {
    let mut ix = cluster(limits(None, Some(8)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 2, 1));
    ix.apply_vm_entry(vm("fin", "b", 1, 4, 1));
    run(&mut ix, 1);
    resize(&mut ix, "a", 6);
    let p = run(&mut ix, 2);
    let w = &p.vms[0];
    assert_eq!(w.status.admitted.map(|a| a.vcpus), Some(2));
    assert!(!w.reserves);
    let c = &w.status.scheduled;
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ResizeQuotaExceeded")
    );
    assert_eq!(
        c.message,
        "resize to vcpus=6, memory=1Gi, storage=1Gi not admitted: exceeded quota: fin-q, \
         requested: vcpus=4, used: vcpus=6, limited: vcpus=8; the VM keeps its admitted size \
         vcpus=2, memory=1Gi, storage=1Gi"
    );
    assert_eq!(w.status.vcpus, Some(2));
    // Its admitted compute stays reserved: usage counts it at 2, never above the limit.
    assert_eq!(used(&ix, "fin").vcpus, 6);
    assert!(
        run(&mut ix, 3).vms.is_empty(),
        "stable while nothing changes"
    );
    assert_eq!(p.pending.get("QuotaExceeded"), Some(&1));
    // Room appears (b halts and is released): the resize is admitted by itself.
    let mut b = ix.vm(&key("fin", "b")).unwrap().clone();
    b.run_strategy = RunStrategy::Halted;
    ix.apply_vm_entry(b);
    run(&mut ix, 4);
    let p = run(&mut ix, 5);
    let w = p.vms.iter().find(|w| w.key == key("fin", "a")).unwrap();
    assert_eq!(w.status.admitted.map(|a| a.vcpus), Some(6));
    run(&mut ix, 6);
    assert_eq!(used(&ix, "fin").vcpus, 6);
    let a = ix.vm(&key("fin", "a")).unwrap();
    assert_eq!(
        a.scheduled.as_ref().map(|c| c.reason.as_str()),
        Some("Scheduled")
    );
}

#[test]
fn reverting_a_refused_resize_restores_the_vm_at_once() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 2, 1));
    run(&mut ix, 1);
    resize(&mut ix, "a", 8);
    run(&mut ix, 2);
    resize(&mut ix, "a", 2);
    let p = run(&mut ix, 3);
    assert_eq!(p.vms[0].status.scheduled.reason, "Scheduled");
    assert!(p.labels.is_empty());
    assert_eq!(used(&ix, "fin").vcpus, 2);
}

#[test]
fn halting_a_vm_whose_resize_was_refused_releases_its_compute() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 2, 1));
    run(&mut ix, 1);
    resize(&mut ix, "a", 8);
    run(&mut ix, 2);
    assert_eq!(used(&ix, "fin").vcpus, 2);
    let mut a = ix.vm(&key("fin", "a")).unwrap().clone();
    a.run_strategy = RunStrategy::Halted;
    ix.apply_vm_entry(a);
    let p = run(&mut ix, 3);
    assert_eq!(p.vms[0].status.scheduled.reason, "ScheduledHalted");
    run(&mut ix, 4);
    assert_eq!(used(&ix, "fin").vcpus, 0);
    // Halted, the bigger size is recorded (compute is checked in full when it starts).
    assert_eq!(ix.admitted(&key("fin", "a")).map(|u| u.vcpus), Some(8));
}
