//! A VirtualMachine the agent cannot parse (stored under an older or looser schema, or
//! written around validation). It must never break the watch or the other VMs: it gets
//! `Ready=False` with reason `InvalidObject` and a message naming the field, a Warning
//! Event once, and its domain is left as it is until the VM is fixed or deleted. Deleting it
//! still releases the domain and, unless the API names retained snapshots or backups being
//! written of it (by uid, [`super::release`]), its directory, and removes the finalizer.

use super::controller::{Context, Error, publish};
use super::guard::{Malformed, VmObject};
use super::status::{Failure, StatusInput, agent_status};
use crate::domain_xml::Owner;
use crate::lifecycle::VmState;
use ironvisor_crds::common::{condition_type, find_condition};
use ironvisor_crds::labels::{AGENT_FINALIZER, agent_manager};
use ironvisor_crds::vm::VirtualMachineStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource};

/// The Ready reason of a malformed VM.
pub const REASON: &str = "InvalidObject";

fn identity(m: &Malformed, ctx_node: &str) -> Result<Owner, Error> {
    let md = &m.metadata;
    Ok(Owner {
        uid: md.uid.clone().ok_or(Error::Identity("uid"))?,
        namespace: md.namespace.clone().ok_or(Error::Identity("namespace"))?,
        name: md.name.clone().ok_or(Error::Identity("name"))?,
        generation: md.generation.unwrap_or(0),
        node: ctx_node.to_owned(),
    })
}

/// The status to write for a malformed VM, and whether it deserves an Event (the first
/// time, or when what is wrong changed). Pure.
pub fn status_for(m: &Malformed, now: Time) -> (VirtualMachineStatus, bool, Failure) {
    // The agent's own previous fields (domain UUID, startedAt, interfaces) are kept where
    // the stored status still parses.
    let prev: VirtualMachineStatus = m
        .status
        .clone()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let failure = Failure::permanent(
        REASON,
        format!(
            "the agent cannot read this VirtualMachine ({}); its domain is left as it is until the object is fixed",
            m.message()
        ),
    );
    let seen = find_condition(&prev.conditions, condition_type::READY)
        .is_some_and(|c| c.reason == REASON && c.message == failure.message);
    let status = agent_status(&StatusInput {
        prev: &prev,
        generation: m.metadata.generation,
        state: VmState::Failed,
        domain_uuid: prev.domain_uuid.clone(),
        started_now: false,
        auto_restart: false,
        restart_handled: None,
        restart_required: false,
        interfaces: prev.interfaces.clone(),
        failure: Some(failure.clone()),
        images: None,
        now,
    });
    (status, !seen, failure)
}

/// Reconcile a malformed VM.
pub async fn reconcile(m: &Malformed, obj: &VmObject, ctx: &Context) -> Result<Action, Error> {
    let owner = identity(m, &ctx.node)?;
    let api = Api::<VmObject>::namespaced(ctx.client.clone(), &owner.namespace);
    let finalizers = m.metadata.finalizers.clone().unwrap_or_default();
    if m.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == AGENT_FINALIZER) {
            // Retained snapshots and backups being written are asked for by uid: a VM the
            // agent cannot read loses its domain, never layers something still reads.
            let kept = super::release::release(ctx, &owner, &obj.object_ref(&())).await?;
            // The resourceVersion makes the list replacement fail on a concurrent change
            // (a retry then sees the new list), as kube's finalizer helper's JSON patch test.
            let rest: Vec<&String> = finalizers
                .iter()
                .filter(|f| *f != AGENT_FINALIZER)
                .collect();
            let patch = serde_json::json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": m.metadata.resource_version,
            }});
            api.patch(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(vm = %format!("{}/{}", owner.namespace, owner.name), disks_kept = kept, "malformed VM deleted");
        }
        return Ok(Action::await_change());
    }
    let (status, announce, failure) = status_for(m, Time(jiff::Timestamp::now()));
    tracing::warn!(vm = %format!("{}/{}", owner.namespace, owner.name), error = %m.message(), "cannot read the VirtualMachine");
    let patch = serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "status": status,
    });
    let params = PatchParams::apply(&agent_manager(&ctx.node)).force();
    api.patch_status(&owner.name, &params, &Patch::Apply(&patch))
        .await?;
    if announce {
        publish(ctx, &obj.object_ref(&()), true, "Failed", failure.message).await;
    }
    Ok(Action::requeue(ctx.resync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(status: Option<serde_json::Value>) -> Malformed {
        let raw = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "n", "uid": "u-1", "generation": 3},
            "spec": {"memory": {"size": "64Mi"}, "cpu": {"cores": "two"}},
            "status": status,
        });
        VmObject::from_value(raw)
            .expect("metadata")
            .0
            .expect_err("malformed")
    }

    #[test]
    fn a_malformed_vm_is_failed_with_the_field_in_its_ready_condition_and_announced_once() {
        let m = malformed(Some(
            serde_json::json!({"domainUUID": "d-1", "phase": "Running"}),
        ));
        let (s, announce, _) = status_for(&m, Time(jiff::Timestamp::from_second(100).unwrap()));
        assert!(announce);
        assert_eq!(s.phase, Some(ironvisor_crds::vm::Phase::Failed));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(
            s.domain_uuid.as_deref(),
            Some("d-1"),
            "the domain is still known"
        );
        let ready = find_condition(&s.conditions, condition_type::READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON)
        );
        assert!(
            ready.message.contains("spec.cpu.cores"),
            "{}",
            ready.message
        );

        let again = malformed(Some(serde_json::to_value(&s).expect("status")));
        let (_, announce, _) = status_for(&again, Time(jiff::Timestamp::from_second(200).unwrap()));
        assert!(!announce, "the same problem is announced once");
    }

    #[test]
    fn a_malformed_status_does_not_prevent_the_report() {
        let m = malformed(Some(serde_json::json!({"phase": 7})));
        let (s, _, _) = status_for(&m, Time(jiff::Timestamp::from_second(100).unwrap()));
        assert_eq!(s.phase, Some(ironvisor_crds::vm::Phase::Failed));
    }
}
