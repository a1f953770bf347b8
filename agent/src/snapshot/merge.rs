//! Carrying out a [`Step`] of the layer tree on the files: a merge commits a layer's data
//! down into its parent (libvirt block commit while QEMU has the layers open, `qemu-img`
//! otherwise), a removal deletes a layer nobody reads.
//!
//! A merge leaves the merged layer's files in place: the caller moves the layer's owner in
//! the API first, then removes them ([`remove_layer`]); an agent that dies in between finds
//! an idle leaf and removes it then. Every function here can run again after a crash.

use super::chain::Step;
use super::domain_disks::{LiveDisk, parse_live_disks};
use super::files::layer_file;
use super::qemu_img::{commit_into_backing, rebase_unsafe};
use super::state::write_active;
use crate::hypervisor::HvError;
use crate::hypervisor::libvirt::Libvirt;
use crate::storage::qcow2::{Qcow2Error, info};
use std::path::Path;
use std::time::Duration;

/// How many times (100 ms apart) a finished commit is checked for having left the chain.
const PIVOT_POLLS: usize = 300;

/// Why a step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// qemu-img failed.
    #[error("qemu-img could not merge the layer")]
    Offline(#[from] Qcow2Error),
    /// libvirt failed.
    #[error("the hypervisor could not merge the layer")]
    Online(#[from] HvError),
    /// The live XML could not be read.
    #[error("cannot read the domain's disks")]
    Xml(#[from] quick_xml::Error),
    /// File system error.
    #[error("layer file operation failed")]
    Io(#[from] std::io::Error),
    /// The running VM's disks are not where the tree says.
    #[error("the running VM's disks are not where the layer tree says: {0}")]
    NotInChain(String),
}

/// Where a merge happens.
pub enum Where<'a> {
    /// The VM is halted, or the layers are off its running chain.
    Offline,
    /// The layers are open in this running domain.
    Online(&'a Libvirt, &'a str),
}

/// Commit `child` into `into` for every disk. `child_is_active`: the VM writes to `child`
/// (after the merge it writes to `into`). `grandchildren`: the layers on top of `child`.
pub async fn merge(
    at: Where<'_>,
    vm_dir: &Path,
    disks: &[String],
    step: &Step,
    child_is_active: bool,
    grandchildren: &[String],
) -> Result<(), MergeError> {
    let Step::Merge { child, into } = step else {
        return Ok(());
    };
    match at {
        Where::Offline => {
            for disk in disks {
                let c = layer_file(vm_dir, disk, child);
                let base = layer_file(vm_dir, disk, into);
                commit_into_backing(&c).await?;
                for g in grandchildren {
                    let g = layer_file(vm_dir, disk, g);
                    if info(&g).await?.backing_filename.as_deref() != base.to_str() {
                        rebase_unsafe(&g, &base).await?;
                    }
                }
            }
        }
        Where::Online(lv, domain) => {
            for disk in disks {
                let c = layer_file(vm_dir, disk, child);
                let base = layer_file(vm_dir, disk, into);
                commit_online(lv, domain, &c, &base, child_is_active).await?;
            }
        }
    }
    if child_is_active {
        write_active(vm_dir, into)?;
    }
    Ok(())
}

fn target_of(live: &[LiveDisk], file: &Path) -> Option<(String, bool)> {
    live.iter().find_map(|d| {
        if d.source.as_deref() == Some(file) {
            Some((d.target.clone(), true))
        } else if d.backing.iter().any(|b| b == file) {
            Some((d.target.clone(), false))
        } else {
            None
        }
    })
}

/// One disk's block commit, resumed where a crash left it.
async fn commit_online(
    lv: &Libvirt,
    domain: &str,
    child: &Path,
    base: &Path,
    child_is_active: bool,
) -> Result<(), MergeError> {
    let live = parse_live_disks(&lv.live_xml(domain).await?)?;
    let Some((target, on_top)) = target_of(&live, child) else {
        // Done before a crash: the layer is out of the running chain already.
        if target_of(&live, base).is_some() {
            return Ok(());
        }
        return Err(MergeError::NotInChain(format!(
            "no disk uses {}",
            child.display()
        )));
    };
    if lv.block_job(domain, target.clone()).await?.is_none() {
        let top = (!on_top).then(|| child.display().to_string());
        lv.block_commit(domain, target.clone(), base.display().to_string(), top)
            .await?;
    }
    loop {
        match lv.block_job(domain, target.clone()).await? {
            None => break,
            Some(job) if job.is_active_commit() && job.is_ready() => {
                lv.end_block_job(domain, target.clone(), true).await?;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // libvirt finishes a pivot on its event thread: wait until the layer left the chain.
    for _ in 0..PIVOT_POLLS {
        let live = parse_live_disks(&lv.live_xml(domain).await?)?;
        if target_of(&live, child).is_none() && live.iter().all(|d| d.mirror.is_none()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(MergeError::NotInChain(format!(
        "{} is still in the running chain after the commit{}",
        child.display(),
        if child_is_active { " and pivot" } else { "" }
    )))
}

/// Delete a layer's files (every disk's). Call only once the API no longer names the layer
/// as any snapshot's.
pub async fn remove_layer(vm_dir: &Path, disks: &[String], layer: &str) -> std::io::Result<()> {
    for disk in disks {
        match tokio::fs::remove_file(layer_file(vm_dir, disk, layer)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
