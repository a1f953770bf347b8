//! Tenants edit their VMs' metadata as they like: the node label and the old
//! `ironvisor.io/admitted` annotation are neither placement nor admitted size. These passes
//! show such edits change nothing the operator decides, and the label copy is put back.

use pretty_assertions::assert_eq;

use super::tests::{GI, cluster, host, key, limits, run, used, vm};
use super::*;
use crate::units::Limits;
use ironvisor_crds::vm::VirtualMachine;

fn labels_of(p: &Plan) -> Vec<(&str, Option<&str>)> {
    p.labels
        .iter()
        .map(|w| (w.key.name.as_str(), w.node.as_deref()))
        .collect()
}

/// A cluster with quota `vcpus=2` on tenant `fin`, a Ready host h1 and a cordoned host h2.
fn cordoned_cluster() -> Index {
    let mut ix = cluster(limits(None, Some(2)), &[("h1", 64, 64)]);
    let mut h2 = host(64, 64, 0);
    h2.unschedulable = true;
    ix.hosts.insert("h2".into(), h2);
    ix
}

#[test]
fn a_tenant_set_label_over_quota_stays_pending_with_quota_exceeded_and_the_label_is_removed() {
    let mut ix = cordoned_cluster();
    let mut attack = vm("fin", "big", 0, 64, 1);
    attack.label_node = Some("h2".into());
    ix.apply_vm_entry(attack);
    let p = run(&mut ix, 1);
    let w = &p.vms[0];
    assert_eq!(
        (
            w.status.scheduled.status.as_str(),
            w.status.scheduled.reason.as_str()
        ),
        ("False", "QuotaExceeded")
    );
    assert_eq!(w.status.node_name, None);
    assert_eq!(w.status.admitted, None);
    assert!(p.placed.is_empty());
    assert_eq!(labels_of(&p), vec![("big", None)], "the label is removed");
    assert_eq!(used(&ix, "fin").vcpus, 0, "nothing is counted");
    assert_eq!(ix.vm(&key("fin", "big")).unwrap().label_node, None);
    assert!(run(&mut ix, 2).labels.is_empty(), "and stays removed");
}

#[test]
fn a_tenant_labelled_vm_that_fits_is_admitted_as_any_other_and_never_on_a_cordoned_host() {
    let mut ix = cordoned_cluster();
    let mut v = vm("fin", "small", 0, 2, 1);
    v.label_node = Some("h2".into());
    ix.apply_vm_entry(v);
    let p = run(&mut ix, 1);
    assert_eq!(p.placed, vec![key("fin", "small")]);
    assert_eq!(p.vms[0].status.node_name.as_deref(), Some("h1"));
    assert_eq!(labels_of(&p), vec![("small", Some("h1"))]);
    assert_eq!(used(&ix, "fin").vcpus, 2);
}

#[test]
fn a_label_edited_to_another_node_or_removed_is_rewritten_from_the_status() {
    let mut ix = cluster(Limits::default(), &[("h1", 8, 8), ("h2", 8, 8)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 2, 1));
    let placed = run(&mut ix, 1).vms[0].status.node_name.clone();
    let other = if placed.as_deref() == Some("h1") {
        "h2"
    } else {
        "h1"
    };
    for edit in [Some(other.to_owned()), None] {
        let mut e = ix.vm(&key("fin", "a")).unwrap().clone();
        e.label_node = edit;
        ix.apply_vm_entry(e);
        let p = run(&mut ix, 2);
        assert!(p.vms.is_empty(), "no decision changes: {:?}", p.vms);
        assert_eq!(labels_of(&p), vec![("a", placed.as_deref())]);
        assert_eq!(ix.vm(&key("fin", "a")).unwrap().label_node, placed);
    }
    assert_eq!(used(&ix, "fin").vcpus, 2);
}

fn object(annotation: &str, spec_vcpus: u32, admitted: serde_json::Value) -> VirtualMachine {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "db", "namespace": "fin", "uid": "u1", "resourceVersion": "5",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"ironvisor.io/node": "h1"},
            "annotations": {"ironvisor.io/admitted": annotation}},
        "spec": {"memory": {"size": "1Gi"}, "cpu": {"cores": spec_vcpus}},
        "status": {"nodeName": "h1", "vcpus": 2, "admitted": admitted,
            "conditions": [{"type": "Scheduled", "status": "True", "reason": "Scheduled",
                "message": "placed on host h1", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }))
    .expect("valid VM")
}

#[test]
fn an_admitted_annotation_edited_to_a_bigger_size_changes_nothing_and_is_removed() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    // Admitted at 2 vCPUs; the tenant grows the spec to 8 and claims 8 were admitted.
    let claim = "vcpus=8,memory=1073741824,storage=0";
    let admitted = serde_json::json!({"vcpus": 2, "memory": "1Gi", "storage": "0"});
    ix.apply_vm(&object(claim, 8, admitted));
    let p = run(&mut ix, 1);
    let c = &p.vms[0].status.scheduled;
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ResizeQuotaExceeded")
    );
    assert_eq!(p.vms[0].status.admitted.map(|a| a.vcpus), Some(2));
    assert_eq!(used(&ix, "fin").vcpus, 2, "counted at the admitted size");
    let w = &p.labels[0];
    assert!(w.drop_annotation && w.node.as_deref() == Some("h1"));
}

#[test]
fn a_vm_placed_by_an_older_operator_counts_at_its_status_vcpus_and_gets_status_admitted() {
    let mut ix = cluster(limits(None, Some(4)), &[("h1", 64, 64)]);
    // No status.admitted: the old annotation (8) is not believed; status.vcpus (2) is.
    ix.apply_vm(&object(
        "vcpus=8,memory=1073741824,storage=0",
        2,
        serde_json::Value::Null,
    ));
    assert_eq!(used(&ix, "fin").vcpus, 2);
    let p = run(&mut ix, 1);
    let a = p.vms[0].status.admitted.expect("recorded from now on");
    assert_eq!((a.vcpus, a.memory), (2, GI));
    assert_eq!(p.vms[0].status.scheduled.reason, "Scheduled");
    assert!(p.placed.is_empty(), "it stays where it is");
    assert_eq!(labels_of(&p), vec![("db", Some("h1"))]);
    assert!(p.labels[0].drop_annotation);
    assert!(run(&mut ix, 2).vms.is_empty(), "then steady");
}
