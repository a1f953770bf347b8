//! Namespaces no Tenant owns: nothing new is admitted there (`Scheduled=False NoTenant`),
//! VMs already placed there are reported and keep running, and a default tenant named by
//! the administrator counts them under its quotas instead.

use pretty_assertions::assert_eq;

use super::tests::{cluster, key, limits, t, vm, write_back};
use super::*;
use crate::quota::QuotaEntry;
use crate::quota::tree::tests::node;
use ironvisor_crds::vm::RunStrategy;

fn run_with(ix: &mut Index, cfg: &Config, now: i64) -> Plan {
    let p = plan(ix, cfg.clone(), t(now));
    write_back(ix, &p);
    p
}

fn scheduled(p: &Plan, name: &str) -> (String, String, String) {
    let w = p.vms.iter().find(|w| w.key.name == name).expect("a write");
    let c = &w.status.scheduled;
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn a_vm_in_a_namespace_no_tenant_owns_waits_with_no_tenant_and_says_how_to_fix_it() {
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("stray", "web", 0, 1, 1));
    let p = run_with(&mut ix, &Config::default(), 1);
    let (status, reason, message) = scheduled(&p, "web");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NoTenant"));
    assert!(
        message.starts_with("namespace stray belongs to no Tenant, so no new VM is admitted there: create a Tenant that lists stray in spec.namespaces"),
        "{message}"
    );
    assert!(message.contains("--default-tenant"), "{message}");
    assert!(p.placed.is_empty());
    assert_eq!(p.pending.get(REASON_NO_TENANT), Some(&1));
    let ann = p.vms[0].announce.as_ref().expect("announced");
    assert!(ann.warning);
    assert_eq!(ann.reason, "NoTenant");
    // Said once: the next pass writes and announces nothing new.
    let again = run_with(&mut ix, &Config::default(), 2);
    assert!(again.vms.is_empty(), "{:?}", again.vms);
    assert_eq!(again.pending.get(REASON_NO_TENANT), Some(&1));
}

#[test]
fn a_tenant_claiming_the_namespace_later_gets_the_waiting_vm_admitted() {
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("stray", "web", 0, 1, 1));
    run_with(&mut ix, &Config::default(), 1);
    ix.apply_tenant_node(node("late", None, &["stray"], 5));
    let p = run_with(&mut ix, &Config::default(), 2);
    assert_eq!(p.placed, vec![key("stray", "web")]);
    assert_eq!(p.ledger.used("late").vcpus, 1);
}

#[test]
fn kubernetes_default_namespace_admits_nothing_even_when_a_tenant_lists_it() {
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64)]);
    ix.apply_tenant_node(node("greedy", None, &["default"], 1));
    ix.apply_vm_entry(vm("default", "web", 0, 1, 1));
    let p = run_with(&mut ix, &Config::default(), 1);
    let (_, reason, message) = scheduled(&p, "web");
    assert_eq!(reason, "NoTenant");
    assert!(
        message.starts_with(
            "namespace default belongs to no Tenant (namespace default cannot belong to a tenant:"
        ),
        "{message}"
    );
}

#[test]
fn with_a_default_tenant_such_vms_are_admitted_and_counted_against_its_quota() {
    let cfg = Config {
        default_tenant: Some("legacy".into()),
        ..Config::default()
    };
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64)]);
    ix.apply_tenant_node(node("legacy", None, &[], 1));
    ix.apply_quota_entry(QuotaEntry {
        name: "legacy-q".into(),
        tenant: "legacy".into(),
        limits: limits(None, Some(3)),
    });
    ix.apply_vm_entry(vm("stray", "a", 0, 2, 1));
    ix.apply_vm_entry(vm("default", "b", 1, 2, 1));
    let p = run_with(&mut ix, &cfg, 1);
    assert_eq!(p.placed, vec![key("stray", "a")]);
    assert_eq!(p.ledger.used("legacy").vcpus, 2);
    let (_, reason, message) = scheduled(&p, "b");
    assert_eq!(reason, "QuotaExceeded");
    assert!(
        message.starts_with("exceeded quota: legacy-q,"),
        "{message}"
    );
    assert_eq!(
        p.ledger.used("fin").vcpus,
        0,
        "an owned namespace's tenant is not charged"
    );
}

#[test]
fn a_default_tenant_that_does_not_exist_admits_nothing_and_says_so() {
    let cfg = Config {
        default_tenant: Some("ghost".into()),
        ..Config::default()
    };
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("stray", "a", 0, 1, 1));
    let p = run_with(&mut ix, &cfg, 1);
    let (_, reason, message) = scheduled(&p, "a");
    assert_eq!(reason, "NoTenant");
    assert!(
        message.ends_with("the default tenant ghost named by --default-tenant does not exist"),
        "{message}"
    );
}

#[test]
fn a_running_vm_whose_namespace_loses_its_tenant_keeps_running_and_is_reported_once() {
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64)]);
    ix.apply_tenant_node(node("t", None, &["ns"], 1));
    ix.apply_vm_entry(vm("ns", "db", 0, 2, 1));
    let p = run_with(&mut ix, &Config::default(), 1);
    assert_eq!(p.placed, vec![key("ns", "db")]);

    ix.delete_tenant("t");
    let p = run_with(&mut ix, &Config::default(), 2);
    assert_eq!(p.vms.len(), 1);
    let w = &p.vms[0];
    assert_eq!(w.status.node_name.as_deref(), Some("h1"), "still placed");
    assert_eq!(
        (
            w.status.scheduled.status.as_str(),
            w.status.scheduled.reason.as_str()
        ),
        ("True", "Scheduled"),
        "the agent keeps running it"
    );
    let c = w.status.tenant.as_ref().expect("Tenant condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "NoTenant")
    );
    assert!(c.message.contains("keeps running"), "{}", c.message);
    let ann = w.announce.as_ref().expect("a Warning Event");
    assert_eq!((ann.warning, ann.reason), (true, "RunningWithoutTenant"));
    assert!(
        run_with(&mut ix, &Config::default(), 3).vms.is_empty(),
        "reported once"
    );

    // Halted, then started again: the start is a new admission and waits for a tenant.
    let mut e = ix.vm(&key("ns", "db")).unwrap().clone();
    e.run_strategy = RunStrategy::Halted;
    ix.apply_vm_entry(e);
    run_with(&mut ix, &Config::default(), 4);
    let mut e = ix.vm(&key("ns", "db")).unwrap().clone();
    e.run_strategy = RunStrategy::Always;
    ix.apply_vm_entry(e);
    let p = run_with(&mut ix, &Config::default(), 5);
    let (status, reason, _) = scheduled(&p, "db");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NoTenant"));

    // A tenant again: started, and the report is withdrawn.
    ix.apply_tenant_node(node("t2", None, &["ns"], 6));
    let p = run_with(&mut ix, &Config::default(), 6);
    let w = &p.vms[0];
    assert_eq!(w.status.scheduled.reason, "Scheduled");
    assert_eq!(w.status.tenant, None);
}

#[test]
fn growing_a_running_vm_whose_namespace_has_no_tenant_is_refused_and_it_keeps_its_size() {
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64)]);
    ix.apply_tenant_node(node("t", None, &["ns"], 1));
    ix.apply_vm_entry(vm("ns", "db", 0, 2, 1));
    run_with(&mut ix, &Config::default(), 1);
    ix.delete_tenant("t");
    run_with(&mut ix, &Config::default(), 2);
    let mut e = ix.vm(&key("ns", "db")).unwrap().clone();
    if let Ok(d) = e.demand.as_mut() {
        d.vcpus = 8;
    }
    ix.apply_vm_entry(e);
    let p = run_with(&mut ix, &Config::default(), 3);
    let (status, reason, message) = scheduled(&p, "db");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ResizeQuotaExceeded")
    );
    assert!(
        message.starts_with("resize to vcpus=8, memory=1Gi, storage=1Gi not admitted: namespace ns belongs to no Tenant"),
        "{message}"
    );
    assert_eq!(
        p.vms[0].status.admitted.map(|a| a.vcpus),
        Some(2),
        "keeps its size"
    );
    assert_eq!(p.vms[0].status.node_name.as_deref(), Some("h1"));
}
