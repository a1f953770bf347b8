//! The Kubernetes side of backups on this host: write a backup the operator handed to this
//! node (phase InProgress, `status.nodeName` this node, the VM's lock and the snapshot's
//! layer recorded), reporting progress as the copy goes; on deletion remove its files from
//! the location.
//!
//! Watches only this node's backups (field selector on `status.nodeName`). Level-triggered:
//! an agent restarted mid-copy finds the backup InProgress again and [`export`] starts the
//! copy over (or finds it complete); nothing of a failed backup stays in the location.

use super::export::{ExportError, ManifestHead, Source, export, read_manifest, remove};
use super::location::check;
use super::metrics::BackupMetrics;
use crate::snapshot::controller::vm_of_name;
use crate::storage::layout;
use futures::StreamExt;
use ironvisor_crds::backup::{
    BackupLocation, BackupPhase, VirtualMachineBackup, VirtualMachineBackupStatus, backup_reason,
};
use ironvisor_crds::common::{condition_type, new_condition, set_condition};
use ironvisor_crds::labels::{AGENT_FINALIZER, agent_manager};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource as _, ResourceExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the status shows the copy's progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Why a backup reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    /// The snapshot side failed (reading the VM).
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::controller::Error),
    /// The backup's files could not be removed.
    #[error(transparent)]
    Files(#[from] ExportError),
    /// The finalizer helper failed.
    #[error("finalizer step failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What the backup controller needs.
pub struct Context {
    /// The snapshot controller's context (client, node, libvirt, state directory).
    pub snap: Arc<crate::snapshot::controller::Context>,
    /// Events on backups.
    pub recorder: Recorder,
    /// Backup metrics.
    pub metrics: BackupMetrics,
}

impl Context {
    /// A context on top of the snapshot controller's.
    pub fn new(snap: Arc<crate::snapshot::controller::Context>, metrics: BackupMetrics) -> Self {
        let reporter = Reporter {
            controller: agent_manager(&snap.node),
            instance: Some(snap.node.clone()),
        };
        let recorder = Recorder::new(snap.client.clone(), reporter);
        Self {
            snap,
            recorder,
            metrics,
        }
    }

    fn client(&self) -> Client {
        self.snap.client.clone()
    }
}

async fn write(
    ctx: &Context,
    b: &VirtualMachineBackup,
    status: &VirtualMachineBackupStatus,
) -> Result<(), Error> {
    let api =
        Api::<VirtualMachineBackup>::namespaced(ctx.client(), &b.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachineBackup",
        "status": status,
    });
    let params = PatchParams::apply(&agent_manager(&ctx.snap.node)).force();
    api.patch_status(&b.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    b: &VirtualMachineBackup,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Backup".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &b.object_ref(&())).await {
        tracing::warn!(backup = %b.key(), error = %e, "publishing an event failed");
    }
}

fn finished(
    mut s: VirtualMachineBackupStatus,
    ok: bool,
    reason: &str,
    message: String,
) -> VirtualMachineBackupStatus {
    let now = Time(jiff::Timestamp::now());
    s.phase = if ok {
        BackupPhase::Succeeded
    } else {
        BackupPhase::Failed
    };
    if ok {
        s.completion_time = Some(now.clone());
        s.progress = Some("done".into());
    }
    set_condition(
        &mut s.conditions,
        new_condition(condition_type::READY, ok, reason, message, None, now),
    );
    s
}

/// A location's path and bandwidth limit.
type Usable = (PathBuf, Option<u64>);

/// The location's path and limit, when the location exists and this host can use it now.
async fn usable_location(
    ctx: &Context,
    name: &str,
) -> Result<Result<Usable, (&'static str, String)>, Error> {
    let Some(loc) = Api::<BackupLocation>::all(ctx.client())
        .get_opt(name)
        .await?
    else {
        let msg = format!("BackupLocation {name} does not exist");
        return Ok(Err((backup_reason::LOCATION_NOT_FOUND, msg)));
    };
    let found = check(&loc.spec, &ctx.snap.node).await;
    if !found.available() {
        let msg = format!(
            "BackupLocation {name} is not usable on {}: {}",
            ctx.snap.node, found.message
        );
        return Ok(Err((backup_reason::LOCATION_UNAVAILABLE, msg)));
    }
    let limit = loc
        .spec
        .bandwidth_limit
        .as_ref()
        .and_then(|q| ironvisor_crds::quantity::to_bytes(&q.0).ok())
        .and_then(|b| u64::try_from(b).ok());
    Ok(Ok((PathBuf::from(&loc.spec.path), limit)))
}

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

/// Run [`export`] while the status shows its progress every [`PROGRESS_EVERY`].
async fn export_with_progress(
    ctx: &Context,
    b: &VirtualMachineBackup,
    status: &VirtualMachineBackupStatus,
    src: Source<'_>,
    location: &Path,
    head: ManifestHead,
) -> Result<Vec<ironvisor_crds::backup::BackupDisk>, ExportError> {
    let (tx, mut rx) = tokio::sync::watch::channel(String::from("starting"));
    let work = export(src, location, head, &tx);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => {
                if rx.has_changed().unwrap_or(false) {
                    let mut s = status.clone();
                    s.progress = Some(rx.borrow_and_update().clone());
                    if let Err(e) = write(ctx, b, &s).await {
                        tracing::debug!(backup = %b.key(), error = %e, "progress not written");
                    }
                }
            }
        }
    }
}

/// Write the backup this node was handed.
async fn take(b: Arc<VirtualMachineBackup>, ctx: &Context) -> Result<Action, Error> {
    let Some(mut status) = b.status.clone() else {
        return Ok(Action::await_change());
    };
    if status.phase != BackupPhase::InProgress || !status.disks.is_empty() {
        return Ok(Action::await_change());
    }
    let ns = b.namespace().unwrap_or_default();
    // The cache may not show this agent's own last write yet (a reconcile queued by the
    // progress writes runs after the one that finished): read the backup fresh, so a backup
    // is started, counted and announced once.
    let api = Api::<VirtualMachineBackup>::namespaced(ctx.client(), &ns);
    let Some(fresh) = api.get_opt(&b.name_any()).await? else {
        return Ok(Action::await_change());
    };
    match fresh.status {
        Some(s) if s.phase == BackupPhase::InProgress && s.disks.is_empty() => status = s,
        _ => return Ok(Action::await_change()),
    }
    let uid = b.uid().unwrap_or_default();
    let (location, bandwidth) = match usable_location(ctx, &b.spec.location).await? {
        Ok(p) => p,
        Err((reason, msg)) => return fail(ctx, &b, status, (reason, None), msg).await,
    };
    let vm_name = status.vm_name.clone().unwrap_or_default();
    let vm = vm_of_name(&ctx.snap, &ns, &vm_name, status.vm_uid.clone()).await?;
    let (Some(vm), Some(layer), Some(spec)) = (vm, status.layer.clone(), status.vm_spec.clone())
    else {
        let msg = format!("VM {vm_name} or its snapshot is gone; nothing was written");
        return fail(ctx, &b, status, (backup_reason::VM_NOT_FOUND, None), msg).await;
    };
    let Some(vm_dir) = layout::vm_dir(
        &ctx.snap.state_dir,
        vm.metadata.uid.as_deref().unwrap_or(""),
    ) else {
        return Ok(Action::await_change());
    };
    if status.start_time.is_none() {
        status.start_time = Some(Time(jiff::Timestamp::now()));
        status.progress = Some("starting".into());
        write(ctx, &b, &status).await?;
        publish(
            ctx,
            &b,
            false,
            "BackupStarted",
            format!("writing the disks of VM {vm_name} into {}", b.spec.location),
        )
        .await;
    }
    if let Some(done) = read_manifest(&location, &uid).await? {
        // Written by an agent killed after the rename: report it, without counting it here.
        let bytes: i64 = done.disks.iter().map(|d| d.bytes).sum();
        let msg = format!(
            "{} disk image(s), {bytes} bytes, checksummed, in {}",
            done.disks.len(),
            b.spec.location
        );
        status.disks = done.disks;
        status.bytes = Some(bytes);
        let status = finished(status, true, backup_reason::SUCCEEDED, msg);
        write(ctx, &b, &status).await?;
        return Ok(Action::await_change());
    }
    let disks: Vec<String> = spec.disks.iter().map(|d| d.name.clone()).collect();
    let head = ManifestHead {
        namespace: ns,
        name: b.name_any(),
        uid: uid.clone(),
        vm_name: vm_name.clone(),
        vm_uid: vm.metadata.uid.clone().unwrap_or_default(),
        snapshot_name: status.snapshot_name.clone().unwrap_or_default(),
        consistency: status.consistency.map(|c| format!("{c:?}")),
        vm_spec: serde_json::to_value(&spec).unwrap_or_default(),
    };
    let src = Source {
        vm_dir: &vm_dir,
        layer: &layer,
        disks: &disks,
        bandwidth,
    };
    let started = Instant::now();
    match export_with_progress(ctx, &b, &status, src, &location, head).await {
        Ok(images) => {
            let bytes: i64 = images.iter().map(|d| d.bytes).sum();
            ctx.metrics.succeeded(
                started.elapsed().as_secs_f64(),
                u64::try_from(bytes).unwrap_or(0),
            );
            let msg = format!(
                "{} disk image(s), {bytes} bytes, checksummed, in {}",
                images.len(),
                b.spec.location
            );
            status.disks = images;
            status.bytes = Some(bytes);
            publish(ctx, &b, false, "BackupSucceeded", msg.clone()).await;
            write(
                ctx,
                &b,
                &finished(status, true, backup_reason::SUCCEEDED, msg),
            )
            .await?;
            Ok(Action::await_change())
        }
        Err(e) => {
            let msg = error_text(&e);
            remove(&location, &uid).await?;
            fail(ctx, &b, status, (backup_reason::FAILED, Some(&e)), msg).await
        }
    }
}

/// The metric label of a failure ([`super::metrics::FAILURE_REASONS`]).
fn failure_label(reason: &str, export: Option<&ExportError>) -> &'static str {
    match (reason, export) {
        (backup_reason::LOCATION_NOT_FOUND, _) => "location_not_found",
        (backup_reason::LOCATION_UNAVAILABLE, _) => "location_unavailable",
        (backup_reason::VM_NOT_FOUND, _) => "vm_not_found",
        (_, Some(ExportError::Io(_))) => "io",
        _ => "copy_failed",
    }
}

async fn fail(
    ctx: &Context,
    b: &VirtualMachineBackup,
    status: VirtualMachineBackupStatus,
    (reason, export): (&str, Option<&ExportError>),
    msg: String,
) -> Result<Action, Error> {
    ctx.metrics.failed(failure_label(reason, export));
    publish(ctx, b, true, "BackupFailed", msg.clone()).await;
    write(ctx, b, &finished(status, false, reason, msg)).await?;
    Ok(Action::await_change())
}

/// Remove a deleted backup's files from its location.
async fn cleanup(b: Arc<VirtualMachineBackup>, ctx: &Context) -> Result<Action, Error> {
    let uid = b.uid().unwrap_or_default();
    match Api::<BackupLocation>::all(ctx.client())
        .get_opt(&b.spec.location)
        .await?
    {
        Some(loc) => remove(Path::new(&loc.spec.path), &uid).await?,
        None => {
            tracing::warn!(backup = %b.key(), location = b.spec.location, "the backup's location is gone; its files, if any, are left where it was")
        }
    }
    Ok(Action::await_change())
}

/// One reconcile of one backup of this node.
pub async fn reconcile(b: Arc<VirtualMachineBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let on_this_node =
        b.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&ctx.snap.node);
    if !on_this_node {
        return Ok(Action::await_change());
    }
    let api =
        Api::<VirtualMachineBackup>::namespaced(ctx.client(), &b.namespace().unwrap_or_default());
    finalizer(&api, AGENT_FINALIZER, b, |event| async {
        match event {
            Finalizer::Apply(b) => take(b, &ctx).await,
            Finalizer::Cleanup(b) => cleanup(b, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(b: Arc<VirtualMachineBackup>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(backup = %b.key(), error = %error_text(error), "backup reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Run the backup controller of this node until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let api = Api::<VirtualMachineBackup>::all(ctx.client());
    let cfg = watcher::Config::default().fields(&format!("status.nodeName={}", ctx.snap.node));
    Controller::new(api, cfg)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "backup reconcile not done");
            }
        })
        .await;
}
