//! Taking a snapshot: freeze the active layer of every disk and move the VM to new, empty
//! layers on top of them.
//!
//! Running VM: the new layers are made with `qemu-img` first, then libvirt switches every
//! disk to them at one instant (an atomic, external, disk-only snapshot reusing those files),
//! with the guest's filesystems frozen around it when a guest agent answers. Halted VM: the
//! new layers are made and recorded as active; the next boot uses them.
//!
//! Idempotent: run again after a crash at any point, it finds the layers it made and the
//! disks libvirt already moved, and finishes the job instead of making a second one.

use super::domain_disks::{by_source, parse_live_disks, snapshot_xml};
use super::files::layer_file;
use super::qemu_img::ensure_overlay;
use super::state::write_active;
use crate::hypervisor::HvError;
use crate::hypervisor::libvirt::Libvirt;
use crate::storage::qcow2::Qcow2Error;
use ironvisor_crds::snapshot::{Consistency, FreezePolicy};
use std::path::{Path, PathBuf};

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// A layer file could not be made.
    #[error("cannot make the new layer")]
    Layer(#[from] Qcow2Error),
    /// The active-layer record could not be written.
    #[error("cannot record the active layer")]
    Io(#[from] std::io::Error),
    /// libvirt refused.
    #[error("the hypervisor refused the snapshot")]
    Hypervisor(#[from] HvError),
    /// The live XML could not be read.
    #[error("cannot read the domain's disks")]
    Xml(#[from] quick_xml::Error),
    /// A disk is not where the layer tree says it is.
    #[error(
        "disk {disk:?} of the running VM writes to {found:?}, not to its active layer \
         {expected}; the snapshot is not taken"
    )]
    Drift {
        /// The disk.
        disk: String,
        /// The file the tree expects.
        expected: String,
        /// What libvirt reports.
        found: Option<PathBuf>,
    },
    /// A block job (a merge) runs on a disk: the snapshot waits for it, it is not failed.
    #[error(
        "a block job (the merge of a deleted snapshot) runs on disk {0}; the snapshot waits \
         for it to end"
    )]
    BlockJobActive(String),
    /// freeze: Required and no guest agent answered.
    #[error("no QEMU guest agent answered the freeze ({0}); freeze is Required")]
    GuestAgentRequired(String),
}

/// One snapshot to take.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The VM's directory.
    pub vm_dir: &'a Path,
    /// Names of the disks to freeze (the VM's spec disks, not the seed).
    pub disks: &'a [String],
    /// The layer the VM writes to now (it becomes the snapshot's).
    pub active: &'a str,
    /// The id of the new active layer.
    pub new_layer: &'a str,
    /// Whether to freeze the guest's filesystems.
    pub freeze: FreezePolicy,
}

/// Take the snapshot of a halted VM: new layers on top of the active ones, recorded as
/// active. The disks are as the guest left them.
pub async fn take_offline(req: &Request<'_>) -> Result<Consistency, TakeError> {
    for disk in req.disks {
        let top = layer_file(req.vm_dir, disk, req.active);
        ensure_overlay(&layer_file(req.vm_dir, disk, req.new_layer), &top).await?;
    }
    write_active(req.vm_dir, req.new_layer)?;
    Ok(Consistency::Offline)
}

/// Take the snapshot of a running domain: every disk moves to its new layer at one instant.
pub async fn take_online(
    lv: &Libvirt,
    domain: &str,
    req: &Request<'_>,
) -> Result<Consistency, TakeError> {
    let live = parse_live_disks(&lv.live_xml(domain).await?)?;
    let mut moves = Vec::new();
    let mut moved = 0;
    for disk in req.disks {
        let top = layer_file(req.vm_dir, disk, req.active);
        let new = layer_file(req.vm_dir, disk, req.new_layer);
        if by_source(&live, &new).is_some() {
            moved += 1;
            continue;
        }
        let Some(d) = by_source(&live, &top) else {
            return Err(TakeError::Drift {
                disk: disk.clone(),
                expected: top.display().to_string(),
                found: None,
            });
        };
        if lv.block_job(domain, d.target.clone()).await?.is_some() {
            // libvirt refuses a snapshot of a disk in a block job; nothing is made yet.
            return Err(TakeError::BlockJobActive(d.target.clone()));
        }
        ensure_overlay(&new, &top).await?;
        moves.push((d.target.clone(), new));
    }
    let consistency = if moves.is_empty() {
        // Taken before a crash: libvirt moved every disk already.
        Consistency::Crash
    } else if moved > 0 {
        return Err(TakeError::Drift {
            disk: req.disks.join(","),
            expected: "all disks on one side of the snapshot".into(),
            found: None,
        });
    } else {
        let name = format!("ironvisor-{}", req.new_layer);
        freeze_and_snapshot(lv, domain, snapshot_xml(&name, &live, &moves), req.freeze).await?
    };
    write_active(req.vm_dir, req.new_layer)?;
    Ok(consistency)
}

/// Freeze (by policy), snapshot, and thaw whatever happened.
async fn freeze_and_snapshot(
    lv: &Libvirt,
    domain: &str,
    xml: String,
    policy: FreezePolicy,
) -> Result<Consistency, TakeError> {
    let frozen = match policy {
        FreezePolicy::Never => false,
        FreezePolicy::Auto => match lv.freeze(domain).await {
            Ok(_) => true,
            Err(e) => {
                tracing::info!(domain, error = %e, "no guest agent froze the filesystems; crash-consistent snapshot");
                false
            }
        },
        FreezePolicy::Required => match lv.freeze(domain).await {
            Ok(_) => true,
            Err(e) => return Err(TakeError::GuestAgentRequired(e.to_string())),
        },
    };
    let result = lv.disk_snapshot(domain, xml, false).await;
    if frozen && let Err(e) = lv.thaw(domain).await {
        tracing::warn!(domain, error = %e, "thawing the guest's filesystems failed");
    }
    if let Err(e) = result {
        // A merge started between the check and the snapshot: wait, as for one seen first.
        return Err(match block_job_disk(&error_chain(&e)) {
            Some(disk) => TakeError::BlockJobActive(disk),
            None => TakeError::Hypervisor(e),
        });
    }
    Ok(if frozen {
        Consistency::FileSystem
    } else {
        Consistency::Crash
    })
}

/// An error and its causes as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The disk named in libvirt's refusal of a snapshot because of a block job ("disk 'vda'
/// already in active block job"), if that is what `message` says.
pub fn block_job_disk(message: &str) -> Option<String> {
    let at = message.find("already in active block job")?;
    let before = &message[..at];
    let disk = before
        .rsplit_once("disk '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map_or("unknown", |(d, _)| d);
    Some(disk.to_owned())
}

/// After an agent restart: thaw a guest a killed agent may have left frozen (a no-op for
/// a guest that is not frozen, an error without a guest agent, which is ignored).
pub async fn thaw_leftover(lv: &Libvirt, domain: &str) {
    if let Ok(n) = lv.thaw(domain).await
        && n > 0
    {
        tracing::warn!(domain, filesystems = n, "thawed filesystems left frozen");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirts_block_job_refusal_names_the_disk() {
        let m = "the hypervisor refused the snapshot: libvirt call failed: internal error: \
                 disk 'vda' already in active block job";
        assert_eq!(block_job_disk(m).as_deref(), Some("vda"));
        assert_eq!(
            block_job_disk("operation failed: already in active block job").as_deref(),
            Some("unknown")
        );
    }

    #[test]
    fn other_refusals_are_not_block_jobs() {
        assert_eq!(block_job_disk("disk 'vda' not found"), None);
        assert_eq!(block_job_disk(""), None);
    }
}
