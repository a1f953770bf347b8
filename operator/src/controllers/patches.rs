//! Server-side-apply bodies for everything the operator writes. Pure: values in, JSON out.
//!
//! Each body names only the fields the operator owns (field manager `ironvisor-operator`);
//! leaving a field out of a later body releases it. Never a spec field.

use ironvisor_crds::common::{Condition, condition_status, condition_type};
use ironvisor_crds::labels;
use ironvisor_crds::vm::AdmittedHostPort;
use serde_json::{Value, json};

use crate::hosts::HOST_LOST;
use crate::index::{LEGACY_ADMITTED_ANNOTATION, VmKey};
use crate::plan::{LabelWrite, VmStatus};

const API_VERSION: &str = "ironvisor.io/v1alpha1";

/// A JSON merge patch that sets the `ironvisor.io/node` label copy (or removes it, `None`)
/// and removes the legacy admitted annotation when asked. A merge patch rather than an
/// apply: it overrides whoever set the label last (an apply cannot remove a field another
/// manager owns). The uid makes it fail on a recreated namesake (uid is immutable).
pub fn vm_label(w: &LabelWrite) -> Value {
    let mut meta = json!({
        "uid": w.uid,
        "labels": { labels::NODE: w.node },
    });
    if w.drop_annotation {
        meta["annotations"] = json!({ LEGACY_ADMITTED_ANNOTATION: null });
    }
    json!({ "metadata": meta })
}

/// The operator's part of a VM's status.
pub fn vm_status(key: &VmKey, s: &VmStatus) -> Value {
    let mut status = serde_json::Map::new();
    if let Some(n) = &s.node_name {
        status.insert("nodeName".into(), json!(n));
    }
    if let Some(v) = s.vcpus {
        status.insert("vcpus".into(), json!(v));
    }
    if let Some(a) = &s.admitted {
        let mut admitted = a.to_admitted();
        admitted.host_ports = s.host_ports.as_ref().map(|ps| {
            ps.iter()
                .map(|&(protocol, port)| AdmittedHostPort { protocol, port })
                .collect()
        });
        status.insert("admitted".into(), json!(admitted));
    }
    let mut conditions = vec![json!(s.scheduled)];
    if let Some(r) = &s.ready {
        conditions.push(json!(r));
    }
    if let Some(t) = &s.tenant {
        conditions.push(json!(t));
    }
    status.insert("conditions".into(), Value::Array(conditions));
    if let Some((phase, printable)) = &s.phase {
        status.insert("phase".into(), json!(phase.as_str()));
        status.insert("printableStatus".into(), json!(printable));
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": { "name": key.name, "namespace": key.namespace },
        "status": status,
    })
}

/// A lost host: Ready=False, reason HostLost (forced over the agent's condition).
pub fn hypervisor_lost(host: &str, now: jiff::Timestamp, grace_s: u64) -> Value {
    let cond = Condition {
        type_: condition_type::READY.into(),
        status: condition_status::FALSE.into(),
        reason: HOST_LOST.into(),
        message: format!("no heartbeat for more than {grace_s}s"),
        observed_generation: None,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
    };
    json!({
        "apiVersion": API_VERSION,
        "kind": "Hypervisor",
        "metadata": { "name": host },
        "status": { "conditions": [cond] },
    })
}

/// A returning host: the operator gives up the fields it forced (an empty apply).
pub fn hypervisor_released(host: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Hypervisor",
        "metadata": { "name": host },
        "status": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::vm::Phase;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn key() -> VmKey {
        VmKey {
            namespace: "fin".into(),
            name: "db".into(),
        }
    }

    fn cond() -> Condition {
        Condition {
            type_: "Scheduled".into(),
            status: "False".into(),
            reason: "QuotaExceeded".into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::from_second(0).unwrap()),
        }
    }

    fn label(node: Option<&str>, drop_annotation: bool) -> Value {
        vm_label(&LabelWrite {
            key: key(),
            uid: "u1".into(),
            node: node.map(str::to_owned),
            drop_annotation,
        })
    }

    #[test]
    fn the_label_body_carries_only_the_label_and_the_uid_precondition() {
        let v = label(Some("h1"), false);
        assert_eq!(v["metadata"]["labels"]["ironvisor.io/node"], "h1");
        assert_eq!(v["metadata"]["uid"], "u1");
        assert!(v["metadata"].get("annotations").is_none());
        assert!(v.get("spec").is_none() && v.get("status").is_none());
    }

    #[test]
    fn a_label_without_a_placement_and_the_legacy_annotation_are_removed_with_nulls() {
        let v = label(None, true);
        assert_eq!(v["metadata"]["labels"], json!({"ironvisor.io/node": null}));
        assert_eq!(
            v["metadata"]["annotations"],
            json!({"ironvisor.io/admitted": null})
        );
    }

    #[test]
    fn a_pending_status_names_phase_and_reason_and_no_node() {
        let s = VmStatus {
            node_name: None,
            vcpus: Some(4),
            admitted: None,
            host_ports: None,
            scheduled: cond(),
            phase: Some((Phase::Pending, "QuotaExceeded".into())),
            ready: None,
            tenant: None,
        };
        let v = vm_status(&key(), &s);
        assert_eq!(v["status"]["phase"], "Pending");
        assert_eq!(v["status"]["printableStatus"], "QuotaExceeded");
        assert_eq!(v["status"]["vcpus"], 4);
        assert!(v["status"].get("nodeName").is_none());
        assert!(v["status"].get("admitted").is_none());
        assert_eq!(v["status"]["conditions"][0]["reason"], "QuotaExceeded");
        assert!(v.get("spec").is_none());
    }

    #[test]
    fn once_the_agent_owns_the_phase_the_operator_body_leaves_it_out() {
        let s = VmStatus {
            node_name: Some("h1".into()),
            vcpus: Some(1),
            admitted: Some(crate::units::Units {
                vms: 1,
                vcpus: 1,
                memory: 1 << 30,
                storage: 0,
            }),
            host_ports: Some(vec![(ironvisor_crds::vm::Protocol::TCP, 2222)]),
            scheduled: cond(),
            phase: None,
            ready: None,
            tenant: None,
        };
        let v = vm_status(&key(), &s);
        assert!(v["status"].get("phase").is_none());
        assert!(v["status"].get("printableStatus").is_none());
        assert_eq!(
            v["status"]["admitted"],
            json!({"vcpus": 1, "memory": "1Gi", "storage": "0",
                   "hostPorts": [{"protocol": "TCP", "port": 2222}]})
        );
        assert_eq!(v["status"]["conditions"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_lost_host_body_sets_ready_false_host_lost() {
        let v = hypervisor_lost("h1", jiff::Timestamp::from_second(5).unwrap(), 40);
        assert_eq!(v["status"]["conditions"][0]["reason"], "HostLost");
        assert_eq!(v["status"]["conditions"][0]["status"], "False");
        assert_eq!(hypervisor_released("h1")["status"], json!({}));
    }
}
