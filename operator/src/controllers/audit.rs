//! Publishes the VMs' audit trail ([`crate::audit`]): an Event on the VM and a line in the
//! operator's log for each creation, spec change and deletion request, recorded in the VM's
//! status (field manager [`AUDIT_MANAGER`]) so each is announced once, across restarts and
//! failovers. Only the leader writes.
//!
//! VMs are read as plain JSON: a VM whose spec does not parse is audited too.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::VirtualMachine;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::audit;
use crate::error::Category;
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// The metrics' controller label.
pub const CONTROLLER: &str = "audit";
/// The field manager of `status.audited`.
pub const AUDIT_MANAGER: &str = "ironvisor-operator-audit";

/// What the audit controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Only the leader writes.
    pub leadership: Leadership,
    /// Publishes the Events.
    pub recorder: Recorder,
}

/// Why an audit step failed (retried).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The API server refused or failed a call.
    #[error("recording the audit trail of {0} failed: {1}")]
    Api(String, #[source] kube::Error),
}

fn resource() -> ApiResource {
    ApiResource::erase::<VirtualMachine>(&())
}

async fn reconcile(vm: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, AuditError> {
    if !ctx.leadership.is_leader() {
        // Woken again when this replica leads.
        return Ok(Action::await_change());
    }
    let object = serde_json::to_value(vm.as_ref()).unwrap_or_default();
    let Some(entry) = audit::next(&object) else {
        return Ok(Action::await_change());
    };
    let ns = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let key = format!("{ns}/{name}");
    tracing::info!(
        target: "ironvisor::audit",
        vm = key, uid = vm.uid().unwrap_or_default(), action = entry.reason, "{}", entry.note
    );
    // Announced first, then recorded: a failure in between announces twice rather than not at all.
    let event = Event {
        type_: EventType::Normal,
        reason: entry.reason.into(),
        note: Some(entry.note.clone()),
        action: "Audit".into(),
        secondary: None,
    };
    if let Err(e) = ctx
        .recorder
        .publish(&event, &vm.object_ref(&resource()))
        .await
    {
        tracing::warn!(vm = key, error = %e, "audit event not recorded; retrying");
        return Err(AuditError::Api(key, e));
    }
    let patch = json!({
        "apiVersion": resource().api_version,
        "kind": resource().kind,
        "status": {"audited": entry.mark},
    });
    Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &resource())
        .patch_status(
            &name,
            &PatchParams::apply(AUDIT_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| AuditError::Api(key, e))?;
    Ok(Action::await_change())
}

fn error_policy(_vm: Arc<DynamicObject>, e: &AuditError, ctx: Arc<Ctx>) -> Action {
    let AuditError::Api(_, inner) = e;
    let category = match inner {
        kube::Error::Api(s) if s.code == 409 => Category::Conflict,
        _ => Category::Api,
    };
    ctx.metrics.error(CONTROLLER, category);
    tracing::warn!(error = %e, "audit step failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Run until the process ends; every VM is looked at again whenever this replica becomes
/// the leader.
pub async fn run(ctx: Ctx) {
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource());
    let leads = ctx.leadership.terms();
    Controller::new_with(api, watcher::Config::default(), resource())
        .reconcile_all_on(leads)
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|_| futures::future::ready(()))
        .await;
}
