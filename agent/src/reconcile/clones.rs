//! Before a VM's domain is prepared: make its clone disks from their sources
//! ([`crate::snapshot::clone`]), publishing an Event for each made, awaited or refused, and
//! the progress of a full copy in `status.cloneProgress` (under its own field manager, so
//! the lifecycle status writes never drop it, and removed once the copy is made); and move a
//! former template off the layer its linked clones read ([`crate::snapshot::unfreeze`]).

use super::controller::{Context, Error, publish};
use super::engine::EngineError;
use crate::domain_xml::name::domain_name;
use crate::lifecycle::VmState;
use crate::snapshot::clone::{CloneError, make, resolve};
use crate::snapshot::unfreeze::move_off_pinned;
use crate::storage::layout;
use ironvisor_crds::labels::agent_manager;
use ironvisor_crds::vm::{CloneMode, CloneOf, VirtualMachine};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use std::time::{Duration, Instant};

/// How soon a clone whose source is not ready is looked at again.
const NOT_READY_RECHECK: Duration = Duration::from_secs(3);
/// How soon a refused clone is looked at again (a spec change wakes it at once).
const REFUSED_RECHECK: Duration = Duration::from_secs(60);

fn manager(node: &str) -> String {
    format!("{}-clone", agent_manager(node))
}

async fn write_progress(ctx: &Context, vm: &VirtualMachine, disk: Option<(&str, u8)>) {
    let api =
        Api::<VirtualMachine>::namespaced(ctx.client.clone(), &vm.namespace().unwrap_or_default());
    let status = match disk {
        Some((d, p)) => serde_json::json!({"cloneProgress": {"disk": d, "percent": p}}),
        None => serde_json::json!({}),
    };
    let patch = serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "status": status,
    });
    let params = PatchParams::apply(&manager(&ctx.node)).force();
    if let Err(e) = api
        .patch_status(&vm.name_any(), &params, &Patch::Apply(&patch))
        .await
    {
        tracing::debug!(vm = %vm.key(), error = %e, "clone progress not written");
    }
}

/// Make every clone disk of `vm` that is not made yet. `Some(action)` when the reconcile
/// must stop here (a source not ready, or refused).
pub(super) async fn ensure(
    ctx: &Context,
    vm: &VirtualMachine,
) -> Result<Option<Action>, CloneError> {
    if !vm.spec.disks.iter().any(|d| d.clone_of().is_some()) {
        return Ok(None);
    }
    let uid = vm.uid().unwrap_or_default();
    let state_dir = &ctx.engine.storage.state_dir;
    let Some(vm_dir) = layout::vm_dir(state_dir, &uid) else {
        return Ok(None);
    };
    let ns = vm.namespace().unwrap_or_default();
    let reference = vm.object_ref(&());
    for disk in &vm.spec.disks {
        if disk.clone_of().is_none()
            || tokio::fs::try_exists(layout::disk_file(&vm_dir, &disk.name)).await?
        {
            continue;
        }
        let src = match resolve(&ctx.client, state_dir, &ctx.node, &ns, disk).await {
            Ok(Some(src)) => src,
            Ok(None) => continue,
            Err(e) => return waiting(ctx, &reference, e).await,
        };
        if let Some(CloneOf::Template { name, .. }) = disk.clone_of()
            && runs(ctx, &domain_name(&ns, name)).await?
        {
            // A template is halted as it becomes one; until its guest is off, its disk moves.
            let why = format!("template {name:?} is still being stopped");
            let e = CloneError::NotReady {
                disk: disk.name.clone(),
                why,
            };
            return waiting(ctx, &reference, e).await;
        }
        let started = Instant::now();
        let (tx, mut rx) = tokio::sync::watch::channel(0u8);
        let copy = make(&vm_dir, &uid, &src, &tx);
        tokio::pin!(copy);
        let made = loop {
            tokio::select! {
                r = &mut copy => break r,
                Ok(()) = rx.changed() => {
                    let p = *rx.borrow_and_update();
                    write_progress(ctx, vm, Some((&disk.name, p))).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mode = src.mode;
        ctx.engine
            .metrics
            .clone_made(mode, made.is_ok(), started.elapsed());
        if mode == CloneMode::Full {
            write_progress(ctx, vm, None).await;
        }
        match made {
            Ok(true) => {
                let note = format!(
                    "disk {}: {} of layer {} made in {:.1?}",
                    disk.name,
                    match mode {
                        CloneMode::Linked => "linked clone",
                        CloneMode::Full => "full copy",
                    },
                    src.layer,
                    started.elapsed()
                );
                publish(ctx, &reference, false, "CloneMade", note).await;
            }
            Ok(false) => {}
            Err(e) => return waiting(ctx, &reference, e).await,
        }
    }
    Ok(None)
}

/// Whether the domain `name` runs (or is paused) on this host.
async fn runs(ctx: &Context, name: &str) -> Result<bool, crate::hypervisor::HvError> {
    Ok(ctx
        .engine
        .hv
        .observe(name)
        .await?
        .is_some_and(|o| matches!(o.state, VmState::Running | VmState::Paused)))
}

async fn waiting(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    e: CloneError,
) -> Result<Option<Action>, CloneError> {
    match &e {
        CloneError::NotReady { .. } => {
            publish(ctx, reference, false, "CloneWaiting", e.to_string()).await;
            Ok(Some(Action::requeue(NOT_READY_RECHECK)))
        }
        _ if e.is_permanent() => {
            let note = super::failure::chain(&e);
            publish(ctx, reference, true, "CloneRefused", note).await;
            Ok(Some(Action::requeue(REFUSED_RECHECK)))
        }
        _ => Err(e),
    }
}

/// A VM that is not a template (any more) whose active layer linked clones read moves to a
/// new, empty layer before its domain is defined or started, with an Event. Never while its
/// guest runs (a template is halted; a running guest here would mean the layer is written
/// already, which only a hand-made domain can do): that is logged and left.
pub(super) async fn leave_clone_base(ctx: &Context, vm: &VirtualMachine) -> Result<(), Error> {
    if vm.spec.template {
        return Ok(());
    }
    let state_dir = &ctx.engine.storage.state_dir;
    let Some(dir) = layout::vm_dir(state_dir, &vm.uid().unwrap_or_default()) else {
        return Ok(());
    };
    let domain = domain_name(&vm.namespace().unwrap_or_default(), &vm.name_any());
    if runs(ctx, &domain).await.map_err(EngineError::from)? {
        tracing::warn!(vm = %vm.key(), "a running VM's active layer is a linked clone's base; left as it is");
        return Ok(());
    }
    let disks: Vec<String> = vm.spec.disks.iter().map(|d| d.name.clone()).collect();
    if let Some((frozen, new)) = move_off_pinned(state_dir, &dir, &disks).await? {
        let note = format!(
            "no longer a template: its disks now write to the new layer {new}; its linked \
             clones keep reading layer {frozen}, which stays frozen until they are gone"
        );
        publish(ctx, &vm.object_ref(&()), false, "LeftCloneBase", note).await;
    }
    Ok(())
}

/// How soon a deleted VM whose disks linked clones read is looked at again.
pub(super) const BASE_IN_USE_RECHECK: Duration = Duration::from_secs(5);

/// A deleted VM whose disks are the base of linked clones keeps its directory (and its
/// finalizer) until they are gone: true to wait, with a warning Event.
pub(super) async fn wait_for_clones(ctx: &Context, vm: &VirtualMachine) -> bool {
    let state_dir = &ctx.engine.storage.state_dir;
    let Some(dir) = layout::vm_dir(state_dir, &vm.uid().unwrap_or_default()) else {
        return false;
    };
    let Err(err) = crate::snapshot::pins::ensure_unused(state_dir, &dir).await else {
        return false;
    };
    let note = format!("deletion waits: {}", super::failure::chain(&err));
    publish(ctx, &vm.object_ref(&()), true, "BaseInUse", note).await;
    true
}
