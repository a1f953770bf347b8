//! Clone disks: a disk whose source is a snapshot's disk or a template VM's disk becomes a
//! linked clone (a qcow2 overlay whose backing file is the source layer, pinned so it is
//! never written or removed while the clone exists) or a full copy (`qemu-img convert` of
//! the source's chain into a standalone qcow2).
//!
//! Tenant input names a snapshot or VM only, in the clone's own namespace; the file is
//! derived here from API fields only the control plane writes (a snapshot's node, VM uid and
//! layer; a template's uid and recorded active layer), each checked to be a plain name, and
//! the source directory's recorded owner must be in the clone's namespace. Never a path
//! from the spec. A made clone disk is never made again: it holds the guest's data.

use super::files::layer_file;
use super::pins::{drop_pin, write_pin};
use super::state::read_active;
use crate::storage::layout;
use crate::storage::qcow2::{Qcow2Error, info};
use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::snapshot::{SnapshotPhase, VirtualMachineSnapshot};
use ironvisor_crds::vm::{CloneMode, CloneOf, Disk, VirtualMachine};
use kube::{Api, Client, ResourceExt};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Why a clone disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// The source exists but cannot be cloned yet (snapshot not taken yet): retried.
    #[error("disk {disk:?}: {why}")]
    NotReady {
        /// The clone's disk.
        disk: String,
        /// What is awaited.
        why: String,
    },
    /// The source can never be cloned as asked: waits for a spec change.
    #[error("disk {disk:?}: {why}")]
    Refused {
        /// The clone's disk.
        disk: String,
        /// Why.
        why: String,
    },
    /// The API server failed.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    /// qemu-img failed.
    #[error("cannot make the clone disk")]
    Disk(#[from] Qcow2Error),
    /// File system error.
    #[error("clone file operation failed")]
    Io(#[from] std::io::Error),
    /// libvirt could not say whether the source still runs.
    #[error("cannot tell whether the clone's source runs")]
    Hypervisor(#[from] crate::hypervisor::HvError),
}

impl CloneError {
    /// Whether only a change of the spec (or the source) can help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            CloneError::Refused { .. } | CloneError::Disk(Qcow2Error::TooSmall { .. })
        )
    }
}

/// A clone disk's source, resolved to a file on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The clone's disk.
    pub disk: String,
    /// The source VM's directory.
    pub base_dir: PathBuf,
    /// The source layer's id.
    pub layer: String,
    /// The source layer's file (what a linked clone's overlay names as backing file).
    pub file: PathBuf,
    /// Linked or full.
    pub mode: CloneMode,
    /// The clone disk's declared size in bytes.
    pub size: u64,
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Where the source of `disk` (a clone disk of a VM in `ns`) is on this host.
pub async fn resolve(
    client: &Client,
    state_dir: &Path,
    node: &str,
    ns: &str,
    disk: &Disk,
) -> Result<Option<Source>, CloneError> {
    let Some(of) = disk.clone_of() else {
        return Ok(None);
    };
    let refused = |why: String| CloneError::Refused {
        disk: disk.name.clone(),
        why,
    };
    let size = disk
        .size
        .as_ref()
        .and_then(|q| to_bytes(&q.0).ok())
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| refused("a clone disk must declare its size".into()))?;
    let (vm_uid, layer, source_disk, placed) = match of {
        CloneOf::Snapshot { name, disk: sd, .. } => {
            let api = Api::<VirtualMachineSnapshot>::namespaced(client.clone(), ns);
            let snap = api
                .get_opt(name)
                .await?
                .ok_or_else(|| refused(format!("no snapshot {name:?} in namespace {ns}")))?;
            let st = snap.status.clone().unwrap_or_default();
            if st.phase != SnapshotPhase::Succeeded || !st.ready_to_use {
                return Err(CloneError::NotReady {
                    disk: disk.name.clone(),
                    why: format!("snapshot {name:?} is not ready to use yet"),
                });
            }
            if snap.metadata.deletion_timestamp.is_some() {
                return Err(refused(format!("snapshot {name:?} is being deleted")));
            }
            let layer = st
                .disks
                .iter()
                .find(|d| d.name == sd)
                .map(|d| d.layer.clone())
                .ok_or_else(|| refused(format!("snapshot {name:?} has no disk {sd:?}")))?;
            (st.vm_uid.unwrap_or_default(), layer, sd, st.node_name)
        }
        CloneOf::Template { name, disk: sd, .. } => {
            let api = Api::<VirtualMachine>::namespaced(client.clone(), ns);
            let tpl = api
                .get_opt(name)
                .await?
                .ok_or_else(|| refused(format!("no VM {name:?} in namespace {ns}")))?;
            if !tpl.spec.template {
                return Err(refused(format!(
                    "VM {name:?} is not a template (spec.template: true); clone a snapshot of it instead"
                )));
            }
            if tpl.metadata.deletion_timestamp.is_some() {
                return Err(refused(format!("template {name:?} is being deleted")));
            }
            if !tpl.spec.disks.iter().any(|d| d.name == sd) {
                return Err(refused(format!("template {name:?} has no disk {sd:?}")));
            }
            let uid = tpl.uid().unwrap_or_default();
            let placed = tpl.status.and_then(|s| s.node_name);
            let layer = match layout::vm_dir(state_dir, &uid) {
                Some(dir) => read_active(&dir),
                None => String::new(),
            };
            (uid, layer, sd, placed)
        }
    };
    if placed.as_deref() != Some(node) {
        return Err(CloneError::NotReady {
            disk: disk.name.clone(),
            why: format!(
                "the source's disks are on host {}, not this one; a clone is placed on its \
                 source's host",
                placed.as_deref().unwrap_or("(none yet)")
            ),
        });
    }
    let base_dir = layout::vm_dir(state_dir, &vm_uid)
        .filter(|_| is_label(&layer))
        .ok_or_else(|| refused("the source's recorded layer is not a plain name".into()))?;
    // Belt and braces: the source directory must be a VM of the clone's own namespace.
    let owner = tokio::fs::read_to_string(layout::owner_file(&base_dir))
        .await
        .unwrap_or_default();
    if owner.trim().split_once('/').map(|(n, _)| n) != Some(ns) {
        return Err(CloneError::NotReady {
            disk: disk.name.clone(),
            why: "the source's disks are not prepared on this host yet".into(),
        });
    }
    let file = layer_file(&base_dir, source_disk, &layer);
    if !tokio::fs::try_exists(&file).await? {
        return Err(CloneError::NotReady {
            disk: disk.name.clone(),
            why: format!("the source disk {source_disk:?} is not made yet"),
        });
    }
    Ok(Some(Source {
        disk: disk.name.clone(),
        base_dir,
        layer,
        file,
        mode: of.mode(),
        size,
    }))
}

/// Make the clone disk `src.disk` of the VM `clone_uid` in `vm_dir`, unless it exists.
/// `progress` receives the percent copied of a full copy.
pub async fn make(
    vm_dir: &Path,
    clone_uid: &str,
    src: &Source,
    progress: &tokio::sync::watch::Sender<u8>,
) -> Result<bool, CloneError> {
    let target = layout::disk_file(vm_dir, &src.disk);
    if tokio::fs::try_exists(&target).await? {
        return Ok(false);
    }
    tokio::fs::create_dir_all(vm_dir).await?;
    let base = info(&src.file).await?;
    if src.size < base.virtual_size {
        return Err(Qcow2Error::TooSmall {
            requested: src.size,
            image: base.virtual_size,
        }
        .into());
    }
    let tmp = super::files::staging_file(&target);
    let _ = tokio::fs::remove_file(&tmp).await;
    match src.mode {
        CloneMode::Linked => {
            // The pin first: an overlay must never exist on an unpinned base.
            write_pin(&src.base_dir, clone_uid, &src.disk, &src.layer, false).await?;
            run(Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b"])
                .arg(&src.file)
                .arg(&tmp)
                .arg(src.size.to_string()))
            .await?;
        }
        CloneMode::Full => {
            write_pin(&src.base_dir, clone_uid, &src.disk, &src.layer, true).await?;
            convert(&src.file, &tmp, progress).await?;
            if src.size > base.virtual_size {
                run(Command::new("qemu-img")
                    .args(["resize", "-q", "-f", "qcow2"])
                    .arg(&tmp)
                    .arg(src.size.to_string()))
                .await?;
            }
        }
    }
    tokio::fs::rename(&tmp, &target).await?;
    if src.mode == CloneMode::Full {
        drop_pin(&src.base_dir, clone_uid, &src.disk, true).await?;
    }
    Ok(true)
}

async fn run(cmd: &mut Command) -> Result<(), Qcow2Error> {
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(Qcow2Error::Tool(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// `qemu-img convert -p` of `from`'s whole chain into the standalone qcow2 `to`, reporting
/// the percent done as qemu-img prints it (`    (12.34/100%)\r`).
async fn convert(
    from: &Path,
    to: &Path,
    progress: &tokio::sync::watch::Sender<u8>,
) -> Result<(), Qcow2Error> {
    let mut child = Command::new("qemu-img")
        .args(["convert", "-p", "-f", "qcow2", "-O", "qcow2"])
        .arg(from)
        .arg(to)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| Qcow2Error::Tool("qemu-img convert has no output to read".into()))?;
    let mut buf = [0u8; 256];
    let mut line = String::new();
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        line.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(p) = last_percent(&line) {
            progress.send_replace(p);
        }
        if let Some(i) = line.rfind('\r') {
            line.drain(..=i);
        }
    }
    let done = child.wait_with_output().await?;
    if !done.status.success() {
        return Err(Qcow2Error::Tool(
            String::from_utf8_lossy(&done.stderr).trim().to_owned(),
        ));
    }
    progress.send_replace(100);
    Ok(())
}

/// The last whole percent in qemu-img's progress output.
fn last_percent(s: &str) -> Option<u8> {
    s.rsplit('(').find_map(|part| {
        let num = part.split_once("/100%")?.0.trim();
        let v: f64 = num.parse().ok()?;
        (0.0..=100.0).contains(&v).then_some(v as u8)
    })
}

#[cfg(test)]
#[path = "clone_tests.rs"]
mod tests;
