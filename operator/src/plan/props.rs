//! Property test of the invariant the issue insists on: whatever users do and however late
//! the watch delivers it, the usage recorded in the API never exceeds a quota's hard limit —
//! across operator restarts too.
//!
//! Model: `api` holds the truth (what the API server stores), `index` the operator's lagging
//! view. Every operator write lands in `api` at once and is recorded as an assumption, as the
//! write loop does; user actions land in `api` only; the watch copies a random subset of
//! objects from `api` into `index` between passes. A pass may be cut short (the leader lost its
//! lease mid-pass), and the operator may restart with only what the API holds.

use std::collections::{BTreeMap, BTreeSet};

use ironvisor_crds::vm::RunStrategy;
use jiff::Timestamp;
use proptest::prelude::*;

use super::{Config, Plan, VmWrite, plan};
use crate::index::{HostEntry, Index, VmEntry, VmKey, VmNet};
use crate::placement::{Capacity, Request};
use crate::quota::QuotaEntry;
use crate::quota::tree::tests::node;
use crate::units::{Limits, Units};

const GI: i128 = 1 << 30;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).expect("valid")
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        vcpus: u8,
        halted: bool,
    },
    Delete(u8),
    Toggle(u8),
    Pass,
    /// A pass cut short after `n` writes (the leader lost its lease mid-pass).
    CutPass(u8),
    Sync(Vec<u8>),
    Restart,
    /// A tenant sets the node label (to h1 or h2) on one of its VMs, as an attacker would.
    TenantLabel(u8, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..5, any::<bool>()).prop_map(|(vcpus, halted)| Op::Create { vcpus, halted }),
        1 => any::<u8>().prop_map(Op::Delete),
        2 => any::<u8>().prop_map(Op::Toggle),
        3 => Just(Op::Pass),
        1 => (0u8..4).prop_map(Op::CutPass),
        2 => proptest::collection::vec(any::<u8>(), 0..6).prop_map(Op::Sync),
        1 => Just(Op::Restart),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(i, h1)| Op::TenantLabel(i, h1)),
    ]
}

fn base() -> Index {
    let mut ix = Index::new();
    ix.apply_tenant_node(node("org", None, &[], 0));
    ix.apply_tenant_node(node("a", Some("org"), &["a"], 1));
    ix.apply_tenant_node(node("b", Some("org"), &["b"], 2));
    let l = |vms, vcpus| Limits {
        vms,
        vcpus,
        ..Limits::default()
    };
    ix.apply_quota_entry(QuotaEntry {
        name: "org-q".into(),
        tenant: "org".into(),
        limits: l(Some(8), Some(12)),
    });
    ix.apply_quota_entry(QuotaEntry {
        name: "a-q".into(),
        tenant: "a".into(),
        limits: l(None, Some(7)),
    });
    for h in ["h1", "h2"] {
        ix.hosts_mut().insert(
            h.into(),
            HostEntry {
                has_object: true,
                allocatable: Some(Capacity {
                    vcpus: 6,
                    memory: 64 * GI,
                }),
                ready: Some(("True".into(), "AgentReady".into())),
                heartbeat: Some(t(0)),
                heartbeat_seen: Some(t(0)),
                ..HostEntry::default()
            },
        );
    }
    ix
}

/// Usage as the API alone says it, per tenant and per host.
fn api_usage(api: &BTreeMap<VmKey, VmEntry>) -> (Plan, BTreeMap<String, i128>) {
    let mut fresh = base();
    let mut per_host: BTreeMap<String, i128> = BTreeMap::new();
    for e in api.values() {
        fresh.apply_vm_entry(e.clone());
        if let (Some(n), true, Ok(d)) = (&e.status_node, e.observed_compute_reserved(), &e.demand) {
            *per_host.entry(n.clone()).or_default() += d.vcpus;
        }
    }
    (plan(&fresh, Config::default(), t(1)), per_host)
}

fn land(api: &mut BTreeMap<VmKey, VmEntry>, w: &VmWrite) {
    let Some(e) = api.get_mut(&w.key) else { return };
    e.status_node = w.status.node_name.clone();
    e.status_vcpus = w.status.vcpus;
    e.admitted = w.status.admitted;
    e.admitted_ports = w.status.host_ports.clone();
    e.scheduled = Some(w.status.scheduled.clone());
    e.operator_owns_phase = w.status.phase.is_some();
    if let Some((p, s)) = &w.status.phase {
        e.phase = Some(*p);
        e.printable = Some(s.clone());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn usage_in_the_api_never_exceeds_a_quota_or_a_host_whatever_the_watch_lag(ops in proptest::collection::vec(op(), 1..80)) {
        let mut api: BTreeMap<VmKey, VmEntry> = BTreeMap::new();
        let mut index = base();
        let mut n = 0i64;
        for op in ops {
            match op {
                Op::Create { vcpus, halted } => {
                    n += 1;
                    let ns = if n % 3 == 0 { "b" } else { "a" };
                    let key = VmKey { namespace: ns.into(), name: format!("v{n}") };
                    let e = VmEntry {
                        key: key.clone(),
                        uid: format!("u{n}"),
                        created: t(n),
                        deleting: false,
                        demand: Ok(Units { vms: 1, vcpus: i128::from(vcpus), memory: GI, storage: 0 }),
                        run_strategy: if halted { RunStrategy::Halted } else { RunStrategy::Always },
                        request: Request { namespace: ns.into(), ..Request::default() },
                        restart_elsewhere: false,
                        label_node: None, legacy_annotation: false, status_node: None,
                        status_vcpus: None, admitted: None, admitted_ports: None, phase: None,
                        printable: None, scheduled: None, ready: None, tenant: None,
                        agents: BTreeSet::new(), operator_owns_phase: false,
                        net: VmNet::default(), template: false, clones: Vec::new(),
                        operation: None,
                    };
                    api.insert(key, e);
                }
                Op::Delete(i) => {
                    if let Some(k) = api.keys().nth(usize::from(i) % api.len().max(1)).cloned() {
                        api.remove(&k);
                    }
                }
                Op::Toggle(i) => {
                    let len = api.len().max(1);
                    if let Some(e) = api.values_mut().nth(usize::from(i) % len) {
                        e.run_strategy = if e.run_strategy == RunStrategy::Halted { RunStrategy::Always } else { RunStrategy::Halted };
                    }
                }
                Op::Pass | Op::CutPass(_) => {
                    let p = plan(&index, Config::default(), t(1));
                    let limit = match op { Op::CutPass(n) => usize::from(n), _ => usize::MAX };
                    for w in p.vms.iter().take(limit) {
                        if api.get(&w.key).is_none_or(|e| e.uid != w.uid) {
                            continue; // the uid precondition fails: deleted meanwhile
                        }
                        land(&mut api, w);
                        if let Some(a) = &w.assume {
                            index.assume(w.key.clone(), a.clone());
                        }
                    }
                }
                Op::Sync(picks) => {
                    let keys: Vec<VmKey> = api.keys().cloned().collect();
                    for i in picks {
                        if let Some(k) = keys.get(usize::from(i) % keys.len().max(1)) {
                            index.apply_vm_entry(api[k].clone());
                        }
                    }
                    let gone: Vec<VmKey> = index.vms().map(|v| v.key.clone()).filter(|k| !api.contains_key(k)).collect();
                    for k in gone {
                        index.delete_vm(&k);
                    }
                }
                Op::TenantLabel(i, h1) => {
                    let len = api.len().max(1);
                    if let Some(e) = api.values_mut().nth(usize::from(i) % len) {
                        e.label_node = Some(if h1 { "h1" } else { "h2" }.into());
                    }
                }
                Op::Restart => {
                    index = base();
                    for e in api.values() {
                        index.apply_vm_entry(e.clone());
                    }
                }
            }
            let (truth, per_host) = api_usage(&api);
            let org = truth.ledger.used("org");
            prop_assert!(org.vms <= 8, "org VMs {}", org.vms);
            prop_assert!(org.vcpus <= 12, "org vCPUs {}", org.vcpus);
            prop_assert!(truth.ledger.used("a").vcpus <= 7, "a vCPUs {}", truth.ledger.used("a").vcpus);
            for (h, v) in per_host {
                prop_assert!(v <= 6, "host {h} has {v} vCPUs");
            }
        }
    }
}
