//! Backups on this host: whether each `BackupLocation` is mounted and writable here
//! ([`location`]), exporting a snapshot's layers as standalone, checksummed images into a
//! location ([`export`], driven by [`controller`]), and restoring a VM's disk from a backup
//! on any host ([`restore_disk`]).
//!
//! Every file this module writes or removes in a location is under
//! `<location path>/ironvisor-backups/<backup uid>` ([`paths`]): never a path made from a
//! name a tenant chose. A restore copies an image only after its SHA-256 matches the one the
//! backup's status recorded when it was written.

pub mod controller;
pub mod export;
pub mod location;
pub mod metrics;
pub mod paths;
pub mod restore_disk;

use ironvisor_crds::backup::{BackupPhase, VirtualMachineBackup};
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// Whether a backup still being written reads `snap`'s layer (its deletion then waits).
pub async fn exporting(
    client: &Client,
    snap: &VirtualMachineSnapshot,
) -> Result<bool, kube::Error> {
    let ns = snap.namespace().unwrap_or_default();
    let backups = Api::<VirtualMachineBackup>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    Ok(backups.items.iter().any(|b| {
        b.status.as_ref().is_some_and(|s| {
            s.phase == BackupPhase::InProgress
                && s.snapshot_name.as_deref() == Some(snap.name_any().as_str())
        })
    }))
}
