//! Restoring a VM's disk from a backup (`source.backup`), on whatever host the VM is placed:
//! the backup's image is copied from the location into the VM's directory, the copy's
//! SHA-256 is checked against the one the backup's status recorded when it was written
//! (the copy, not the original, so the file cannot change between check and use), checked
//! to be a standalone qcow2, grown to the disk's declared size and renamed into place.
//!
//! Only a backup in the VM's own namespace can be named (the source has no namespace), and
//! the image's path is made from the backup's uid and a file name this agent makes, never
//! from a string a tenant wrote. A disk that exists is never restored again: it holds the
//! guest's data.

use super::export::sha256_file;
use super::location::check;
use super::paths::{backup_dir, is_image_name};
use crate::storage::layout;
use crate::storage::qcow2::{Qcow2Error, accepted_image};
use ironvisor_crds::backup::{BackupLocation, BackupPhase, VirtualMachineBackup};
use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::vm::{BackupSource, Disk, VirtualMachine};
use kube::{Api, Client, ResourceExt};
use std::path::Path;
use tokio::process::Command;

/// Why a disk could not be restored from a backup.
#[derive(Debug, thiserror::Error)]
pub enum RestoreDiskError {
    /// The API server refused or failed a call.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    /// The backup is missing or not written yet (waits).
    #[error("backup {0} does not exist in the VM's namespace or has not succeeded yet")]
    NotReady(String),
    /// The backup has no such disk.
    #[error("backup {backup} has no disk {disk:?}")]
    NoSuchDisk {
        /// The backup.
        backup: String,
        /// The disk asked for.
        disk: String,
    },
    /// The location is missing or not usable on this host (waits).
    #[error("backup location {0} is not usable on this host: {1}")]
    Location(String, String),
    /// The copy's checksum differs from the recorded one.
    #[error(
        "the image of disk {disk:?} in backup {backup} does not match the checksum recorded \
         when it was written (recorded {recorded}, found {found}): it was changed in the \
         location; the disk is not restored"
    )]
    Checksum {
        /// The backup.
        backup: String,
        /// The disk.
        disk: String,
        /// Recorded.
        recorded: String,
        /// Found.
        found: String,
    },
    /// The status names a file this agent never makes, or an unreadable backup directory.
    #[error("backup {0} names files that are not a backup's images")]
    BadBackup(String),
    /// The disk's declared size cannot hold the image.
    #[error(
        "disk {disk:?} declares {declared} bytes; the backup's image is {image} bytes: declare a size of at least {image}"
    )]
    TooSmall {
        /// The disk.
        disk: String,
        /// Declared bytes.
        declared: u64,
        /// The image's virtual size.
        image: u64,
    },
    /// The copy is not a standalone qcow2, or qemu-img failed.
    #[error("the restored image of disk {0:?} is not usable")]
    Image(String, #[source] Qcow2Error),
    /// File system error.
    #[error("copying the backup's image failed")]
    Io(#[from] std::io::Error),
}

impl RestoreDiskError {
    /// Whether nothing will change without a new spec or a new backup.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            RestoreDiskError::Kube(_)
                | RestoreDiskError::NotReady(_)
                | RestoreDiskError::Location(..)
                | RestoreDiskError::Io(_)
        )
    }

    /// The metric result (see [`super::metrics::RESTORE_RESULTS`]).
    pub fn result(&self) -> &'static str {
        match self {
            RestoreDiskError::Checksum { .. } => "checksum_mismatch",
            _ => "failed",
        }
    }
}

/// Restore every disk of `vm` whose source is a backup and which does not exist yet.
/// Returns the names of the disks restored now.
pub async fn ensure(
    client: &Client,
    state_dir: &Path,
    node: &str,
    vm: &VirtualMachine,
) -> Result<Vec<String>, RestoreDiskError> {
    let Some(vm_dir) = layout::vm_dir(state_dir, vm.metadata.uid.as_deref().unwrap_or("")) else {
        return Ok(Vec::new());
    };
    let mut restored = Vec::new();
    for disk in &vm.spec.disks {
        let Some(src) = &disk.source.backup else {
            continue;
        };
        let target = layout::disk_file(&vm_dir, &disk.name);
        if tokio::fs::try_exists(&target).await? {
            continue;
        }
        tokio::fs::create_dir_all(&vm_dir).await?;
        let ns = vm.namespace().unwrap_or_default();
        restore_one(client, node, &ns, disk, src, &target).await?;
        restored.push(disk.name.clone());
    }
    Ok(restored)
}

async fn restore_one(
    client: &Client,
    node: &str,
    ns: &str,
    disk: &Disk,
    src: &BackupSource,
    target: &Path,
) -> Result<(), RestoreDiskError> {
    let backup = Api::<VirtualMachineBackup>::namespaced(client.clone(), ns)
        .get_opt(&src.name)
        .await?
        .filter(|b| {
            b.status
                .as_ref()
                .is_some_and(|s| s.phase == BackupPhase::Succeeded)
        })
        .ok_or_else(|| RestoreDiskError::NotReady(src.name.clone()))?;
    let recorded = backup
        .status
        .as_ref()
        .and_then(|s| s.disks.iter().find(|d| d.name == src.disk))
        .cloned()
        .ok_or_else(|| RestoreDiskError::NoSuchDisk {
            backup: src.name.clone(),
            disk: src.disk.clone(),
        })?;
    let loc_name = backup.spec.location.clone();
    let Some(loc) = Api::<BackupLocation>::all(client.clone())
        .get_opt(&loc_name)
        .await?
    else {
        return Err(RestoreDiskError::Location(
            loc_name,
            "it does not exist".into(),
        ));
    };
    let found = check(&loc.spec, node).await;
    if !found.available() {
        return Err(RestoreDiskError::Location(loc_name, found.message));
    }
    let bad = || RestoreDiskError::BadBackup(src.name.clone());
    if !is_image_name(&recorded.file) {
        return Err(bad());
    }
    let dir =
        backup_dir(Path::new(&loc.spec.path), &backup.uid().unwrap_or_default()).ok_or_else(bad)?;
    let staging = crate::snapshot::files::staging_file(target);
    let _ = tokio::fs::remove_file(&staging).await;
    tokio::fs::copy(dir.join(&recorded.file), &staging).await?;
    let result = check_and_grow(disk, &staging, &recorded, &src.name).await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&staging).await;
        return Err(e);
    }
    tokio::fs::rename(&staging, target).await?;
    Ok(())
}

/// The copy's checksum, format and size; grown to the declared size.
async fn check_and_grow(
    disk: &Disk,
    copy: &Path,
    recorded: &ironvisor_crds::backup::BackupDisk,
    backup: &str,
) -> Result<(), RestoreDiskError> {
    let found = sha256_file(copy).await?;
    if !found.eq_ignore_ascii_case(&recorded.sha256) {
        return Err(RestoreDiskError::Checksum {
            backup: backup.to_owned(),
            disk: disk.name.clone(),
            recorded: recorded.sha256.clone(),
            found,
        });
    }
    let image = accepted_image(copy)
        .await
        .map_err(|e| RestoreDiskError::Image(disk.name.clone(), e))?;
    if image.format != "qcow2" {
        let e = Qcow2Error::Unsupported(format!("format {}", image.format));
        return Err(RestoreDiskError::Image(disk.name.clone(), e));
    }
    let declared = disk
        .size
        .as_ref()
        .and_then(|q| to_bytes(&q.0).ok())
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(image.virtual_size);
    if declared < image.virtual_size {
        return Err(RestoreDiskError::TooSmall {
            disk: disk.name.clone(),
            declared,
            image: image.virtual_size,
        });
    }
    if declared > image.virtual_size {
        let out = Command::new("qemu-img")
            .args(["resize", "-q", "-f", "qcow2"])
            .arg(copy)
            .arg(declared.to_string())
            .output()
            .await?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(RestoreDiskError::Image(
                disk.name.clone(),
                Qcow2Error::Tool(msg),
            ));
        }
    }
    Ok(())
}

/// How soon a restore that waits (backup not written yet, location not mounted) is tried
/// again.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How soon a restore that cannot succeed without a change is tried again.
const REFUSED: std::time::Duration = std::time::Duration::from_secs(300);

/// For the VM controller: restore the VM's disks from backups before anything else is
/// prepared. `None` when every such disk exists; otherwise how soon to look again, with an
/// Event on the VM saying what happened.
pub async fn restore_for(
    vm: &VirtualMachine,
    ctx: &crate::reconcile::controller::Context,
) -> Option<std::time::Duration> {
    use kube::Resource as _;
    if vm.spec.disks.iter().all(|d| d.source.backup.is_none()) {
        return None;
    }
    let state_dir = &ctx.engine.storage.state_dir;
    let reference = vm.object_ref(&());
    let publish = crate::reconcile::controller::publish;
    match ensure(&ctx.client, state_dir, &ctx.node, vm).await {
        Ok(restored) if restored.is_empty() => None,
        Ok(restored) => {
            for _ in &restored {
                if let Some(m) = &ctx.backup_metrics {
                    m.restore("restored");
                }
            }
            let note = format!(
                "disk(s) {} restored from backup, checksums verified",
                restored.join(", ")
            );
            publish(ctx, &reference, false, "RestoredFromBackup", note).await;
            None
        }
        Err(e) => {
            let mut note = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                note.push_str(": ");
                note.push_str(&c.to_string());
                cur = c.source();
            }
            tracing::warn!(vm = %vm.key(), error = note, "restoring a disk from a backup failed");
            let (reason, wait) = match &e {
                RestoreDiskError::Checksum { .. } => ("BackupChecksumMismatch", REFUSED),
                e if e.is_permanent() => ("BackupRestoreFailed", REFUSED),
                _ => ("WaitingForBackup", WAIT),
            };
            if e.is_permanent()
                && let Some(m) = &ctx.backup_metrics
            {
                m.restore(e.result());
            }
            publish(ctx, &reference, e.is_permanent(), reason, note).await;
            Some(wait)
        }
    }
}
