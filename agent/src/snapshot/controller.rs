//! The Kubernetes side of snapshots on this host: take a snapshot the operator handed to
//! this node (phase InProgress, `status.nodeName` this node, the VM's lock taken), and on
//! deletion merge its layer where the tree allows, then let it go.
//!
//! Watches only this node's snapshots (field selector on `status.nodeName`). Everything is
//! read again on each reconcile: the layer files, the API's owners, libvirt's live disks.

use super::chain::Step;
use super::files::{Origin, layer_file, layer_id};
use super::found::read_tree;
use super::merge::{Where, merge, remove_layer};
use super::state::read_active;
use super::take::{Request, take_offline, take_online, thaw_leftover};
use crate::domain_xml::name::domain_name;
use crate::hypervisor::Hypervisor as _;
use crate::hypervisor::libvirt::Libvirt;
use crate::lifecycle::VmState;
use crate::storage::layout;
use futures::StreamExt;
use ironvisor_crds::common::{condition_type, new_condition};
use ironvisor_crds::labels::{AGENT_FINALIZER, agent_manager};
use ironvisor_crds::snapshot::{
    SnapshotDisk, SnapshotPhase, VirtualMachineSnapshot, VirtualMachineSnapshotStatus,
    snapshot_reason,
};
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why a snapshot reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    /// The layer tree could not be read.
    #[error(transparent)]
    Found(#[from] super::found::FoundError),
    /// A merge failed.
    #[error(transparent)]
    Merge(#[from] super::merge::MergeError),
    /// libvirt failed.
    #[error(transparent)]
    Hypervisor(#[from] crate::hypervisor::HvError),
    /// A layer could not be removed.
    #[error("cannot remove a layer")]
    Io(#[from] std::io::Error),
    /// A deleted snapshot cannot go yet (linked clones read its layer, or merges remain):
    /// an error, not an `Ok` requeue, because the finalizer helper removes the finalizer on
    /// any `Ok` from cleanup.
    #[error("the snapshot stays for now: {0}")]
    Stays(&'static str),
    /// The finalizer helper failed.
    #[error("finalizer step failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What the snapshot controller needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// This node.
    pub node: String,
    /// libvirt.
    pub libvirt: Libvirt,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// Snapshot, merge and restore metrics.
    pub metrics: super::metrics::SnapshotMetrics,
    /// One lock per VM around changes of its layer tree.
    pub layers: super::layer_lock::LayerLocks,
}

/// Most merge or removal steps one cleanup takes (a tree has at most 2n + 1 layers).
const MAX_STEPS: usize = 2 * super::chain::MAX_SNAPSHOTS + 2;

/// An error and its causes, for a condition message.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The VM `ns/name`, when it exists with the uid `want`.
pub(crate) async fn vm_of_name(
    ctx: &Context,
    ns: &str,
    name: &str,
    want: Option<String>,
) -> Result<Option<VirtualMachine>, Error> {
    let vms = Api::<VirtualMachine>::namespaced(ctx.client.clone(), ns);
    Ok(vms
        .get_opt(name)
        .await?
        .filter(|vm| vm.metadata.uid.is_some() && vm.metadata.uid == want))
}

/// The VM a snapshot is of, when it still exists with the uid the snapshot recorded.
async fn vm_of(
    ctx: &Context,
    snap: &VirtualMachineSnapshot,
) -> Result<Option<VirtualMachine>, Error> {
    let want = snap.status.as_ref().and_then(|s| s.vm_uid.clone());
    vm_of_name(
        ctx,
        &snap.namespace().unwrap_or_default(),
        &snap.spec.vm_name,
        want,
    )
    .await
}

pub(super) fn disk_names(vm: &VirtualMachine) -> Vec<String> {
    vm.spec.disks.iter().map(|d| d.name.clone()).collect()
}

async fn write_status(
    ctx: &Context,
    snap: &VirtualMachineSnapshot,
    status: &VirtualMachineSnapshotStatus,
) -> Result<(), Error> {
    apply_status(ctx, snap, status).await
}

/// Apply the agent's part of the status of a namespaced Ironvisor object (a snapshot or a
/// restore), with this node's field manager.
pub(super) async fn apply_status<K>(
    ctx: &Context,
    obj: &K,
    status: &impl serde::Serialize,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(&agent_manager(&ctx.node)).force();
    api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

fn finished(
    mut status: VirtualMachineSnapshotStatus,
    ok: bool,
    reason: &str,
    message: String,
) -> VirtualMachineSnapshotStatus {
    let now = Time(jiff::Timestamp::now());
    status.phase = if ok {
        SnapshotPhase::Succeeded
    } else {
        SnapshotPhase::Failed
    };
    status.ready_to_use = ok;
    ironvisor_crds::common::set_condition(
        &mut status.conditions,
        new_condition(condition_type::READY, ok, reason, message, None, now),
    );
    status
}

/// How soon a snapshot waiting for a block job on its VM's disks is tried again.
const BLOCK_JOB_RECHECK: Duration = Duration::from_secs(2);

/// Still in progress, waiting (Ready false with reason WaitingForBlockJob).
fn waiting(
    mut status: VirtualMachineSnapshotStatus,
    message: String,
) -> VirtualMachineSnapshotStatus {
    let now = Time(jiff::Timestamp::now());
    status.phase = SnapshotPhase::InProgress;
    status.ready_to_use = false;
    ironvisor_crds::common::set_condition(
        &mut status.conditions,
        new_condition(
            condition_type::READY,
            false,
            snapshot_reason::WAITING_FOR_BLOCK_JOB,
            message,
            None,
            now,
        ),
    );
    status
}

/// Take the snapshot this node was handed.
async fn take(snap: Arc<VirtualMachineSnapshot>, ctx: &Context) -> Result<Action, Error> {
    let Some(status) = snap.status.clone() else {
        return Ok(Action::await_change());
    };
    if status.phase != SnapshotPhase::InProgress || !status.disks.is_empty() {
        return Ok(Action::await_change());
    }
    let uid = snap.uid().unwrap_or_default();
    let (Some(vm), Some(new_layer)) = (vm_of(ctx, &snap).await?, layer_id(Origin::Snapshot, &uid))
    else {
        let msg = format!("VM {} is gone; nothing was taken", snap.spec.vm_name);
        write_status(
            ctx,
            &snap,
            &finished(status, false, snapshot_reason::VM_NOT_FOUND, msg),
        )
        .await?;
        ctx.metrics.failed("vm_not_found");
        return Ok(Action::await_change());
    };
    let vm_uid = vm.metadata.uid.clone().unwrap_or_default();
    let Some(vm_dir) = layout::vm_dir(&ctx.state_dir, &vm_uid) else {
        return Ok(Action::await_change());
    };
    // Held until the status names the frozen layer: a settle meanwhile would see that layer
    // owned by nobody and merge it away.
    let _tree = ctx.layers.lock(&vm_uid).await;
    let disks = disk_names(&vm);
    let ns = vm.namespace().unwrap_or_default();
    let domain = domain_name(&ns, &vm.name_any());
    // A layer already active that this snapshot made: taken before a crash.
    let active_now = read_active(&vm_dir);
    let frozen = if active_now == new_layer {
        let tree = read_tree(&vm_dir, disks.first().map_or("", |d| d), &BTreeMap::new()).await?;
        tree.layers()
            .get(&new_layer)
            .and_then(|l| l.parent.clone())
            .unwrap_or(active_now.clone())
    } else {
        active_now.clone()
    };
    let req = Request {
        vm_dir: &vm_dir,
        disks: &disks,
        active: &frozen,
        new_layer: &new_layer,
        freeze: snap.spec.freeze,
    };
    let running = matches!(
        ctx.libvirt.observe(&domain).await?.map(|o| o.state),
        Some(VmState::Running | VmState::Paused)
    );
    let started = std::time::Instant::now();
    let result = if running {
        thaw_leftover(&ctx.libvirt, &domain).await;
        take_online(&ctx.libvirt, &domain, &req).await
    } else {
        take_offline(&req).await
    };
    if let Err(super::take::TakeError::BlockJobActive(disk)) = &result {
        // A deleted snapshot's merge runs on that disk: undo what was made, wait, retry.
        if read_active(&vm_dir) != new_layer {
            remove_layer(&vm_dir, &disks, &new_layer).await?;
        }
        tracing::info!(snapshot = %snap.key(), disk, "a block job runs on the disk; the snapshot waits");
        let msg = format!(
            "a block job (the merge of a deleted snapshot) runs on disk {disk}; the snapshot \
             is taken once it ends"
        );
        write_status(ctx, &snap, &waiting(status, msg)).await?;
        return Ok(Action::requeue(BLOCK_JOB_RECHECK));
    }
    ctx.metrics.taken(&result, started.elapsed());
    let status = match result {
        Ok(consistency) => {
            let mut s = status;
            s.consistency = Some(consistency);
            s.creation_time = Some(Time(jiff::Timestamp::now()));
            s.disks = vm
                .spec
                .disks
                .iter()
                .map(|d| SnapshotDisk {
                    name: d.name.clone(),
                    layer: frozen.clone(),
                    size: d.size.clone().unwrap_or_default(),
                    allocated_bytes: std::fs::metadata(layer_file(&vm_dir, &d.name, &frozen))
                        .ok()
                        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) as i64 * 512),
                })
                .collect();
            ctx.metrics.ready(&s.disks);
            let msg = format!("disks frozen in layer {frozen}");
            finished(s, true, snapshot_reason::SUCCEEDED, msg)
        }
        Err(e) => {
            // Nothing of a failed snapshot stays: its new layers are on no chain.
            if read_active(&vm_dir) != new_layer {
                remove_layer(&vm_dir, &disks, &new_layer).await?;
            }
            let reason = match e {
                super::take::TakeError::GuestAgentRequired(_) => {
                    snapshot_reason::GUEST_AGENT_REQUIRED
                }
                _ => snapshot_reason::FAILED,
            };
            finished(status, false, reason, error_text(&e))
        }
    };
    write_status(ctx, &snap, &status).await?;
    Ok(Action::await_change())
}

/// How soon a deleted snapshot that linked clones still read is looked at again.
const PINNED_RECHECK: Duration = Duration::from_secs(5);

/// Give up a deleted snapshot's layer: merge or remove what the tree allows. A snapshot
/// whose layer linked clones read (directly or below theirs) stays until they are gone: its
/// layer cannot go, and its storage stays counted meanwhile.
async fn cleanup(snap: Arc<VirtualMachineSnapshot>, ctx: &Context) -> Result<Action, Error> {
    if crate::backup::exporting(&ctx.client, &snap).await? {
        // A backup reads this snapshot's layer: merging it now would change what it copies.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let Some(vm) = vm_of(ctx, &snap).await? else {
        // The VM and its directory are gone (or going, with all their layers).
        return Ok(Action::await_change());
    };
    let layer = snap
        .status
        .as_ref()
        .and_then(|s| s.disks.first())
        .map(|d| d.layer.clone());
    if let (Some(layer), Some(dir), Some(first)) = (
        layer,
        layout::vm_dir(&ctx.state_dir, &vm.uid().unwrap_or_default()),
        disk_names(&vm).first(),
    ) {
        let tree = pinned_tree(ctx, &dir, first, &BTreeMap::new()).await?;
        if tree.is_frozen(&layer) {
            tracing::info!(snapshot = %snap.key(), %layer, "linked clones read this snapshot's layer; it stays until they are deleted");
            return Err(Error::Stays("linked clones read its layer"));
        }
    }
    if settle(ctx, &vm, snap.uid().as_deref()).await? {
        Ok(Action::await_change())
    } else {
        Err(Error::Stays("its layer is not merged or removed yet"))
    }
}

/// Merge or remove every layer of `vm` that no snapshot (but `except`, being deleted) owns
/// and the tree allows; true once nothing is left to do.
pub(super) async fn settle(
    ctx: &Context,
    vm: &VirtualMachine,
    except: Option<&str>,
) -> Result<bool, Error> {
    let vm_uid = vm.metadata.uid.clone().unwrap_or_default();
    let Some(vm_dir) = layout::vm_dir(&ctx.state_dir, &vm_uid) else {
        return Ok(true);
    };
    let _tree = ctx.layers.lock(&vm_uid).await;
    let disks = disk_names(vm);
    let Some(first) = disks.first() else {
        return Ok(true);
    };
    let ns = vm.namespace().unwrap_or_default();
    let api = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns);
    let domain = domain_name(&ns, &vm.name_any());
    for _ in 0..MAX_STEPS {
        // The owners the API knows now: every other snapshot of this VM.
        let others: Vec<VirtualMachineSnapshot> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|s| s.uid().as_deref() != except)
            .filter(|s| s.status.as_ref().and_then(|st| st.vm_uid.as_deref()) == Some(&vm_uid))
            .collect();
        let layer_of = |s: &VirtualMachineSnapshot| {
            s.status
                .as_ref()
                .and_then(|st| st.disks.first())
                .map(|d| d.layer.clone())
        };
        let owners: BTreeMap<String, String> = others
            .iter()
            .filter_map(|s| Some((layer_of(s)?, s.uid()?)))
            .collect();
        let tree = pinned_tree(ctx, &vm_dir, first, &owners).await?;
        let Some(step) = tree.next_step() else {
            return Ok(true);
        };
        match &step {
            Step::Remove { layer } => remove_layer(&vm_dir, &disks, layer).await?,
            Step::Merge { child, into } => {
                let running = matches!(
                    ctx.libvirt.observe(&domain).await?.map(|o| o.state),
                    Some(VmState::Running | VmState::Paused)
                );
                let at = if running && tree.is_online(&step) {
                    Where::Online(&ctx.libvirt, &domain)
                } else {
                    Where::Offline
                };
                let grandchildren = tree.children(child);
                let active = tree.active() == child;
                let started = std::time::Instant::now();
                let merged = merge(at, &vm_dir, &disks, &step, active, &grandchildren).await;
                ctx.metrics.merged(&merged, started.elapsed());
                merged?;
                // The child's owner now reads its point in time from `into`.
                if let Some(owner) = others.iter().find(|s| layer_of(s).as_ref() == Some(child)) {
                    let mut st = owner.status.clone().unwrap_or_default();
                    for d in &mut st.disks {
                        d.layer = into.clone();
                    }
                    write_status(ctx, owner, &st).await?;
                }
                remove_layer(&vm_dir, &disks, child).await?;
            }
        }
    }
    Ok(false)
}

/// The layer tree of `vm_dir` with the layers linked clones read pinned.
async fn pinned_tree(
    ctx: &Context,
    vm_dir: &std::path::Path,
    disk: &str,
    owners: &BTreeMap<String, String>,
) -> Result<super::chain::Tree, Error> {
    let mut tree = read_tree(vm_dir, disk, owners).await?;
    for pin in super::pins::live_pins(&ctx.state_dir, vm_dir).await? {
        tree.pin(&pin.layer);
    }
    Ok(tree)
}

/// One reconcile of one snapshot of this node.
pub async fn reconcile(
    snap: Arc<VirtualMachineSnapshot>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let on_this_node = snap.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&ctx.node);
    if !on_this_node {
        return Ok(Action::await_change());
    }
    let ns = snap.namespace().unwrap_or_default();
    let api = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, AGENT_FINALIZER, snap, |event| async {
        match event {
            Finalizer::Apply(s) => take(s, &ctx).await,
            Finalizer::Cleanup(s) => cleanup(s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// When `error` is a deleted snapshot that stays for now (its finalizer kept): why, and how
/// soon it is looked at again (a wait, not a failure: no warning, no backoff).
pub fn stays(error: &Error) -> Option<(&'static str, Duration)> {
    match error {
        Error::Finalizer(e) => match e.as_ref() {
            kube::runtime::finalizer::Error::CleanupFailed(Error::Stays(why)) => {
                Some((why, PINNED_RECHECK))
            }
            _ => None,
        },
        _ => None,
    }
}

fn error_policy(snap: Arc<VirtualMachineSnapshot>, error: &Error, _ctx: Arc<Context>) -> Action {
    if let Some((why, recheck)) = stays(error) {
        tracing::debug!(snapshot = %snap.key(), why, "a deleted snapshot stays for now");
        return Action::requeue(recheck);
    }
    tracing::warn!(snapshot = %snap.key(), error = %error_text(error), "snapshot reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Run the snapshot controller of this node until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api = Api::<VirtualMachineSnapshot>::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("status.nodeName={}", ctx.node));
    Controller::new(api, cfg)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "snapshot reconcile not done");
            }
        })
        .await;
}
