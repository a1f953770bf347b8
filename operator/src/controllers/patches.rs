//! Server-side-apply bodies for everything the operator writes. Pure: values in, JSON out.
//!
//! Each body names only the fields the operator owns (field manager `ironvisor-operator`);
//! leaving a field out of a later body releases it. Never a spec field.

use ironvisor_crds::common::{Condition, condition_status, condition_type};
use ironvisor_crds::labels;
use serde_json::{Value, json};

use crate::hosts::HOST_LOST;
use crate::index::{ADMITTED_ANNOTATION, VmKey};
use crate::plan::VmStatus;
use crate::units::Units;

const API_VERSION: &str = "ironvisor.io/v1alpha1";

/// The `ironvisor.io/node` label of a VM, with the admitted size annotation when known (one
/// apply owns both: leaving one out would release it). The uid makes it fail on a recreated
/// namesake.
pub fn vm_label(key: &VmKey, uid: &str, node: &str, admitted: Option<&Units>) -> Value {
    let mut v = json!({
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "uid": uid,
            "labels": { labels::NODE: node },
        },
    });
    if let Some(a) = admitted {
        v["metadata"]["annotations"] = json!({ ADMITTED_ANNOTATION: a.to_annotation() });
    }
    v
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
    let mut conditions = vec![json!(s.scheduled)];
    if let Some(r) = &s.ready {
        conditions.push(json!(r));
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

    #[test]
    fn the_label_body_carries_only_the_label_and_the_uid_precondition() {
        let v = vm_label(&key(), "u1", "h1", None);
        assert_eq!(v["metadata"]["labels"]["ironvisor.io/node"], "h1");
        assert_eq!(v["metadata"]["uid"], "u1");
        assert!(v.get("spec").is_none() && v.get("status").is_none());
    }

    #[test]
    fn a_pending_status_names_phase_and_reason_and_no_node() {
        let s = VmStatus {
            node_name: None,
            vcpus: Some(4),
            scheduled: cond(),
            phase: Some((Phase::Pending, "QuotaExceeded".into())),
            ready: None,
        };
        let v = vm_status(&key(), &s);
        assert_eq!(v["status"]["phase"], "Pending");
        assert_eq!(v["status"]["printableStatus"], "QuotaExceeded");
        assert_eq!(v["status"]["vcpus"], 4);
        assert!(v["status"].get("nodeName").is_none());
        assert_eq!(v["status"]["conditions"][0]["reason"], "QuotaExceeded");
        assert!(v.get("spec").is_none());
    }

    #[test]
    fn once_the_agent_owns_the_phase_the_operator_body_leaves_it_out() {
        let s = VmStatus {
            node_name: Some("h1".into()),
            vcpus: Some(1),
            scheduled: cond(),
            phase: None,
            ready: None,
        };
        let v = vm_status(&key(), &s);
        assert!(v["status"].get("phase").is_none());
        assert!(v["status"].get("printableStatus").is_none());
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
