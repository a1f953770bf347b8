//! What this agent holds for VMs that are not (or no longer) placed on its node: domains
//! recorded for this node and directories under its state dir.
//!
//! Nothing is removed on inference. A leftover goes only when the API confirms, by uid, that
//! its VM is gone. A VM that still exists keeps its domain and disks whatever its label says;
//! if the operator placed it on another node, a guest still running here is a second, unmetered
//! copy: it is stopped (powered off, never undefined) and the VM gets a Warning Event. Disks
//! move only in a hand-over the operator orders.
//!
//! Swept when the agent starts and then every resync period, since a VM leaves this agent's
//! watch when its placement moves and no watch event says so.

use super::controller::{Context, Error, publish};
use super::engine::Leftover as Held;
use super::guard::VmObject;
use crate::snapshot::retained::{Removal, holders_of};
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::Arc;

/// The Event reason when a local copy of a VM placed elsewhere is stopped.
pub const STOPPED_LOCAL_COPY: &str = "StoppedLocalCopy";

/// What the API says of a leftover's VM.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No VM by that name, or one with another uid (deleted, maybe recreated): remove.
    Gone,
    /// The VM exists and the operator placed it on another node: stop a running copy here,
    /// keep its domain and disks.
    PlacedElsewhere(String),
    /// The VM exists, placed here or not placed at all (its label changed?): keep all.
    Exists,
    /// The leftover records no owner to ask about: keep it.
    Unknown,
}

/// The VM the API has under a leftover's recorded name: its uid and where its status places it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The VM's uid.
    pub uid: String,
    /// `status.nodeName`, written only by the control plane.
    pub node: Option<String>,
    /// A live migration holds the VM: its domain here may be the one arriving.
    pub migrating: bool,
}

/// The rule. `answer` is `None` when there was no one to ask, `Some(None)` for a 404,
/// `Some(Some(found))` for the VM found under the recorded name.
pub fn verdict(uid: &str, answer: Option<&Option<Found>>, node: &str) -> Verdict {
    match answer {
        None => Verdict::Unknown,
        Some(None) => Verdict::Gone,
        Some(Some(found)) if found.uid != uid => Verdict::Gone,
        Some(Some(found)) if found.migrating => Verdict::Exists,
        Some(Some(Found {
            node: Some(other), ..
        })) if other != node => Verdict::PlacedElsewhere(other.clone()),
        Some(Some(_)) => Verdict::Exists,
    }
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Uids whose leftovers were removed.
    pub removed: Vec<String>,
    /// Uids whose local guest was stopped because the VM runs elsewhere.
    pub stopped: Vec<String>,
}

/// One sweep: list what this agent holds for VMs not in its watch, ask the API about each,
/// act on the verdict.
pub async fn sweep(ctx: &Context) -> Result<Sweep, Error> {
    // Malformed VMs count too: their domains stay until they are deleted.
    let api = Api::<VmObject>::all(ctx.client.clone());
    let vms = api
        .list(&ListParams::default().labels(&ctx.selector()))
        .await?;
    let watched: HashSet<String> = vms
        .items
        .iter()
        .filter_map(|v| v.meta().uid.clone())
        .collect();
    let mut done = Sweep::default();
    for held in ctx.engine.leftovers(&watched).await? {
        let answer = match &held.owner {
            Some((ns, name)) => Some(ask(ctx, ns, name).await?),
            None => None,
        };
        match verdict(&held.uid, answer.as_ref(), &ctx.node) {
            Verdict::Gone => {
                // A Gone verdict implies a recorded owner, hence a namespace to ask in.
                let Some((ns, _)) = &held.owner else {
                    continue;
                };
                let holders = holders_of(&ctx.client, ns, &held.uid, Removal::VmGone).await?;
                if holders.is_empty() {
                    tracing::info!(uid = held.uid, owner = ?held.owner, "removing the leftovers of a VM the API no longer has");
                    ctx.engine.remove_leftover(&held).await?;
                    done.removed.push(held.uid);
                } else {
                    // Retained snapshots or a backup read the layers in its directory: only
                    // the domain goes.
                    tracing::debug!(uid = held.uid, owner = ?held.owner, held_by = holders.describe(), "keeping a deleted VM's directory for what still reads its layers");
                    ctx.engine.remove_leftover_domain(&held).await?;
                }
            }
            Verdict::PlacedElsewhere(other) => {
                if stop_local_copy(ctx, &held, &other).await? {
                    done.stopped.push(held.uid);
                }
            }
            Verdict::Exists => tracing::debug!(
                uid = held.uid, owner = ?held.owner,
                "keeping a VM's domain and disks: it still exists but is not in this agent's watch"
            ),
            Verdict::Unknown => tracing::warn!(
                uid = held.uid,
                "keeping a VM directory that records no owner: cannot confirm with the API that its VM is gone; remove it by hand once sure"
            ),
        }
    }
    Ok(done)
}

async fn ask(ctx: &Context, ns: &str, name: &str) -> Result<Option<Found>, Error> {
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?;
    Ok(vm.and_then(|v| {
        Some(Found {
            uid: v.metadata.uid.clone()?,
            migrating: super::controller::migrating(&v),
            node: v.status.and_then(|s| s.node_name),
        })
    }))
}

/// Power off the guest of a VM the operator placed on `other`, if it runs here; the domain
/// and disks stay. Says whether a guest was stopped.
async fn stop_local_copy(ctx: &Context, held: &Held, other: &str) -> Result<bool, Error> {
    if !ctx.engine.stop_leftover(held).await? {
        return Ok(false);
    }
    let Some((ns, name)) = &held.owner else {
        return Ok(true);
    };
    tracing::warn!(
        vm = format!("{ns}/{name}"),
        uid = held.uid,
        placed_on = other,
        "stopped a local copy of a VM placed on another node; its domain and disks are kept"
    );
    let reference = ObjectReference {
        api_version: Some(VirtualMachine::api_version(&()).into_owned()),
        kind: Some(VirtualMachine::kind(&()).into_owned()),
        namespace: Some(ns.clone()),
        name: Some(name.clone()),
        uid: Some(held.uid.clone()),
        ..Default::default()
    };
    let note = format!(
        "the guest still running on {} was powered off: the VM is placed on {other}; its \
         domain and disks stay on {} until the VM is deleted",
        ctx.node, ctx.node
    );
    publish(ctx, &reference, true, STOPPED_LOCAL_COPY, note).await;
    Ok(true)
}

/// A VM still in this agent's watch (its label not yet rewritten) whose status places it on
/// another node: stop its guest here, as a sweep would.
pub async fn stop_if_placed_elsewhere(vm: &VirtualMachine, ctx: &Context) -> Result<(), Error> {
    let Some(other) = vm
        .status
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| *n != ctx.node)
    else {
        return Ok(());
    };
    let (Some(uid), Some(ns)) = (vm.metadata.uid.clone(), vm.namespace()) else {
        return Ok(());
    };
    let name = vm.name_any();
    let domain = ctx
        .engine
        .hv
        .observe(&crate::domain_xml::name::domain_name(&ns, &name))
        .await
        .map_err(super::engine::EngineError::from)?;
    let held = Held {
        uid,
        owner: Some((ns, name)),
        domain,
    };
    stop_local_copy(ctx, &held, other).await.map(|_| ())
}

/// Sweep every resync period until the task is dropped; failures are logged and retried at
/// the next period, never fatal.
pub async fn sweep_periodically(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(ctx.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep(&ctx).await {
            Ok(s) if !s.removed.is_empty() || !s.stopped.is_empty() => {
                tracing::info!(removed = ?s.removed, stopped = ?s.stopped, "leftovers swept")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %super::failure::chain(&e),
                "could not look for leftovers; nothing was removed, trying again at the next resync"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Found, Verdict, verdict};

    fn found(uid: &str, node: Option<&str>) -> Option<Found> {
        Some(Found {
            uid: uid.into(),
            node: node.map(Into::into),
            migrating: false,
        })
    }

    #[test]
    fn the_domain_of_a_vm_being_migrated_here_is_kept_running() {
        let arriving = Some(Found {
            uid: "u1".into(),
            node: Some("h1".into()),
            migrating: true,
        });
        assert_eq!(verdict("u1", Some(&arriving), "h2"), Verdict::Exists);
    }

    #[test]
    fn a_leftover_goes_only_when_the_api_confirms_by_uid_that_its_vm_is_gone() {
        assert_eq!(verdict("u1", Some(&None), "h1"), Verdict::Gone, "404");
        assert_eq!(
            verdict("u1", Some(&found("u2", Some("h1"))), "h1"),
            Verdict::Gone,
            "a namesake with another uid"
        );
        assert_eq!(
            verdict("u1", Some(&found("u1", Some("h1"))), "h1"),
            Verdict::Exists,
            "placed here, out of the watch (its label was changed): keep and keep running"
        );
        assert_eq!(
            verdict("u1", Some(&found("u1", None)), "h1"),
            Verdict::Exists,
            "not placed anywhere: keep"
        );
        assert_eq!(verdict("u1", None, "h1"), Verdict::Unknown);
    }

    #[test]
    fn a_vm_placed_on_another_node_has_its_local_copy_stopped_not_removed() {
        assert_eq!(
            verdict("u1", Some(&found("u1", Some("h2"))), "h1"),
            Verdict::PlacedElsewhere("h2".into())
        );
    }
}
