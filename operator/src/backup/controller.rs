//! Hands backups to the VM's host. For a backup of a VM it first takes a snapshot of it
//! (named after the backup's uid, labelled with it, owned by the backup); for a backup of a
//! snapshot it uses that one. Once the snapshot is ready, it checks the location exists and
//! the VM's host reports it available, checks the storage quota, takes the VM's operation
//! lock for the backup and records what the agent needs (phase InProgress). When the backup
//! has finished it gives the lock back and deletes the snapshot it took. Only the leader
//! writes; this never touches files.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::backup::{
    BACKUP_UID_LABEL, BackupLocation, BackupPhase, VirtualMachineBackup,
    VirtualMachineBackupStatus, backup_reason,
};
use ironvisor_crds::quantity::format_bytes;
use ironvisor_crds::snapshot::{SnapshotPhase, VirtualMachineSnapshot, VirtualMachineSnapshotSpec};
use ironvisor_crds::vm::{OperationKind, VirtualMachine};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource as _, ResourceExt};

use crate::oplock::{self, Acquired, Holder};
use crate::snapshot::controller::{Ctx, Error, storage_ledger};
use crate::snapshot::quota::{SnapshotRefusal, admit_snapshot};
use crate::status_write::{self, set_ready};

/// How soon a waiting backup is looked at again.
const WAIT: Duration = Duration::from_secs(3);

fn holder(b: &VirtualMachineBackup) -> Holder {
    Holder {
        kind: OperationKind::Backup,
        name: b.name_any(),
        uid: b.uid().unwrap_or_default(),
    }
}

/// The name of the snapshot the operator takes for a backup of a VM: from the backup's uid,
/// so a later backup of the same name never adopts it.
pub fn snapshot_for(backup_uid: &str) -> String {
    format!("backup-{backup_uid}")
}

async fn write(
    ctx: &Ctx,
    b: &VirtualMachineBackup,
    mut s: VirtualMachineBackupStatus,
    phase: BackupPhase,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    s.phase = phase;
    set_ready(
        &mut s.conditions,
        phase == BackupPhase::Succeeded,
        reason,
        message,
        None,
    );
    status_write::apply(&ctx.client, b, &s).await?;
    Ok(())
}

/// What the backup waits for, or why it cannot go on.
enum Outcome {
    /// Wait (phase stays Pending) with this reason and message.
    Wait(&'static str, String),
    /// Refuse (phase Failed).
    Fail(&'static str, String),
}

/// The ready snapshot to export: the named one, or the one taken for this backup (made now
/// when missing).
async fn ready_snapshot(
    ctx: &Ctx,
    b: &VirtualMachineBackup,
) -> Result<Result<VirtualMachineSnapshot, Outcome>, Error> {
    let ns = b.namespace().unwrap_or_default();
    let api = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns);
    let uid = b.uid().unwrap_or_default();
    let name = match (&b.spec.snapshot_name, &b.spec.vm_name) {
        (Some(s), _) => s.clone(),
        (None, Some(vm)) => {
            let name = snapshot_for(&uid);
            if api.get_opt(&name).await?.is_none() {
                let snap = VirtualMachineSnapshot {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some([(BACKUP_UID_LABEL.to_owned(), uid.clone())].into()),
                        owner_references: b.controller_owner_ref(&()).map(|r| vec![r]),
                        ..ObjectMeta::default()
                    },
                    spec: VirtualMachineSnapshotSpec {
                        vm_name: vm.clone(),
                        retain_policy: Default::default(),
                        freeze: Default::default(),
                    },
                    status: None,
                };
                api.create(&PostParams::default(), &snap).await?;
                let msg = format!("taking snapshot {name} of VM {vm} for the backup");
                return Ok(Err(Outcome::Wait(backup_reason::SNAPSHOT_PENDING, msg)));
            }
            name
        }
        (None, None) => {
            let msg = "set vmName or snapshotName".to_owned();
            return Ok(Err(Outcome::Fail(backup_reason::SNAPSHOT_NOT_READY, msg)));
        }
    };
    let Some(snap) = api.get_opt(&name).await? else {
        let msg = format!("snapshot {name} does not exist");
        return Ok(Err(Outcome::Fail(backup_reason::SNAPSHOT_NOT_READY, msg)));
    };
    let st = snap.status.clone().unwrap_or_default();
    match st.phase {
        SnapshotPhase::Succeeded if snap.metadata.deletion_timestamp.is_none() => Ok(Ok(snap)),
        SnapshotPhase::Pending | SnapshotPhase::InProgress => {
            let msg = format!("waiting for snapshot {name} to be taken");
            Ok(Err(Outcome::Wait(backup_reason::SNAPSHOT_PENDING, msg)))
        }
        _ => {
            let why = st
                .conditions
                .first()
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let msg = format!("snapshot {name} is not usable ({:?}): {why}", st.phase);
            Ok(Err(Outcome::Fail(backup_reason::SNAPSHOT_NOT_READY, msg)))
        }
    }
}

/// Everything checked; returns the status to hand over, or what to wait for or refuse.
async fn prepare(
    ctx: &Ctx,
    b: &VirtualMachineBackup,
    status: VirtualMachineBackupStatus,
) -> Result<Result<(VirtualMachineBackupStatus, String), Outcome>, Error> {
    let snap = match ready_snapshot(ctx, b).await? {
        Ok(s) => s,
        Err(o) => return Ok(Err(o)),
    };
    let ns = b.namespace().unwrap_or_default();
    let st = snap.status.clone().unwrap_or_default();
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&snap.spec.vm_name)
        .await?
        .filter(|v| v.metadata.uid.is_some() && v.metadata.uid == st.vm_uid);
    let Some((vm, node)) = vm.and_then(|v| {
        let n = v.status.as_ref()?.node_name.clone()?;
        Some((v, n))
    }) else {
        let msg = format!(
            "VM {} of snapshot {} is gone or not placed",
            snap.spec.vm_name,
            snap.name_any()
        );
        return Ok(Err(Outcome::Fail(backup_reason::VM_NOT_FOUND, msg)));
    };
    let Some(loc) = Api::<BackupLocation>::all(ctx.client.clone())
        .get_opt(&b.spec.location)
        .await?
    else {
        let msg = format!(
            "BackupLocation {} does not exist (an administrator creates it)",
            b.spec.location
        );
        return Ok(Err(Outcome::Wait(backup_reason::LOCATION_NOT_FOUND, msg)));
    };
    if !loc.available_on(&node) {
        let msg = format!(
            "BackupLocation {} is not available on {node}, the VM's host (see kubectl get backuplocation {} -o yaml)",
            b.spec.location, b.spec.location
        );
        return Ok(Err(Outcome::Wait(backup_reason::LOCATION_UNAVAILABLE, msg)));
    }
    let Some(spec) = st.vm_spec.clone() else {
        let msg = format!("snapshot {} recorded no VM spec", snap.name_any());
        return Ok(Err(Outcome::Fail(backup_reason::SNAPSHOT_NOT_READY, msg)));
    };
    let ledger = storage_ledger(ctx, &b.uid().unwrap_or_default()).await?;
    let demand = match admit_snapshot(&ledger, &ns, &spec) {
        Ok(d) => d,
        Err(SnapshotRefusal::Exceeded(e)) => {
            let msg = format!(
                "{e} (backups count the declared size of every disk of the VM, as disks do)"
            );
            return Ok(Err(Outcome::Fail(backup_reason::QUOTA_EXCEEDED, msg)));
        }
        Err(other) => return Ok(Err(Outcome::Fail(backup_reason::FAILED, other.to_string()))),
    };
    let mut s = status;
    s.node_name = Some(node.clone());
    s.vm_name = Some(vm.name_any());
    s.vm_uid = vm.metadata.uid.clone();
    s.snapshot_name = Some(snap.name_any());
    s.layer = st.disks.first().map(|d| d.layer.clone());
    s.consistency = st.consistency;
    s.vm_spec = Some(spec);
    s.size = Some(Quantity(format_bytes(demand.storage)));
    Ok(Ok((s, node)))
}

/// A backup not handed to a host yet.
async fn start(b: &VirtualMachineBackup, ctx: &Ctx) -> Result<Action, Error> {
    let status = b.status.clone().unwrap_or_default();
    let (ready, node) = match prepare(ctx, b, status.clone()).await? {
        Ok(r) => r,
        Err(Outcome::Wait(reason, msg)) => {
            write(ctx, b, status, BackupPhase::Pending, reason, msg).await?;
            return Ok(Action::requeue(WAIT));
        }
        Err(Outcome::Fail(reason, msg)) => {
            write(ctx, b, status, BackupPhase::Failed, reason, msg).await?;
            return Ok(Action::await_change());
        }
    };
    let ns = b.namespace().unwrap_or_default();
    let vm = ready.vm_name.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    match oplock::acquire(&ctx.client, &ns, &vm, &holder(b), now).await? {
        Acquired::Busy(op) => {
            let msg = oplock::busy_message(&format!("{ns}/{vm}"), &op);
            write(
                ctx,
                b,
                status,
                BackupPhase::Pending,
                backup_reason::VM_BUSY,
                msg,
            )
            .await?;
            Ok(Action::requeue(WAIT))
        }
        Acquired::Held | Acquired::TookOver(_) => {
            let msg = format!("the agent of {node} is writing the backup");
            let reason = backup_reason::IN_PROGRESS;
            write(ctx, b, ready, BackupPhase::InProgress, reason, msg).await?;
            Ok(Action::await_change())
        }
    }
}

/// After the backup: the lock back, and the snapshot taken for it deleted (only that one:
/// named after this backup's uid and labelled with it).
async fn finish(b: &VirtualMachineBackup, ctx: &Ctx) -> Result<(), Error> {
    let ns = b.namespace().unwrap_or_default();
    if let Some(vm) = b
        .status
        .as_ref()
        .and_then(|s| s.vm_name.clone())
        .or(b.spec.vm_name.clone())
    {
        oplock::release(&ctx.client, &ns, &vm, &holder(b)).await?;
    }
    if b.spec.vm_name.is_none() {
        return Ok(());
    }
    let uid = b.uid().unwrap_or_default();
    let api = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns);
    let ours = api.get_opt(&snapshot_for(&uid)).await?.filter(|s| {
        s.labels().get(BACKUP_UID_LABEL) == Some(&uid) && s.metadata.deletion_timestamp.is_none()
    });
    if let Some(s) = ours {
        api.delete(&s.name_any(), &DeleteParams::default()).await?;
    }
    Ok(())
}

async fn reconcile(b: Arc<VirtualMachineBackup>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let phase = b.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase.is_terminal() || b.metadata.deletion_timestamp.is_some() {
        finish(&b, &ctx).await?;
        return Ok(Action::await_change());
    }
    match phase {
        BackupPhase::Pending => start(&b, &ctx).await,
        _ => Ok(Action::await_change()),
    }
}

fn error_policy(b: Arc<VirtualMachineBackup>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(backup = %b.key(), error = %e, "backup step failed; retrying");
    Action::requeue(WAIT)
}

/// Run until the process ends; every backup is looked at again when this replica leads.
pub async fn run(ctx: Ctx) {
    let api = Api::<VirtualMachineBackup>::all(ctx.client.clone());
    let leads = ctx.leadership.terms();
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(leads)
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_of_a_backup_is_named_after_its_uid_not_its_name() {
        assert_eq!(snapshot_for("1234-abcd"), "backup-1234-abcd");
    }
}
