//! Writing a backup: every disk's chain, read at a snapshot's layer, becomes one standalone
//! qcow2 image (`qemu-img convert`, which follows the backing files) with its SHA-256, and a
//! `manifest.json` records the VM's spec and the checksums beside them.
//!
//! Crash-safe and restartable: everything is written into the backup's staging directory and
//! renamed into place at the end, after every file is synced. Run again after a crash, an
//! export finds the complete directory and reads its manifest back, or finds a staging
//! directory, removes it and starts over: there is never a half-written backup under a
//! backup's name. Reading the same point in time twice gives the same images.

use super::paths::{MANIFEST, backup_dir, image_name, is_image_name, staging_dir};
use crate::snapshot::files::layer_file;
use crate::storage::qcow2::{Qcow2Error, info};
use ironvisor_crds::backup::BackupDisk;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The backup's uid cannot name a directory.
    #[error("the backup's uid {0:?} is not a plain name")]
    Uid(String),
    /// File system error in the location or the VM's directory.
    #[error("backup file operation failed")]
    Io(#[from] std::io::Error),
    /// qemu-img failed.
    #[error("qemu-img could not copy disk {disk:?}: {message}")]
    Convert {
        /// The disk.
        disk: String,
        /// qemu-img's message.
        message: String,
    },
    /// An image's header could not be read.
    #[error("cannot read the image of disk {0:?}")]
    Info(String, #[source] Qcow2Error),
    /// The manifest could not be written or read.
    #[error("the backup's manifest is unreadable")]
    Manifest(#[from] serde_json::Error),
    /// An image does not match the checksum the backup recorded.
    #[error(
        "the image of disk {disk:?} does not match the backup's checksum (recorded {recorded}, \
         found {found}): it was changed after the backup was written; it is not restored"
    )]
    Checksum {
        /// The disk.
        disk: String,
        /// What the backup's status recorded.
        recorded: String,
        /// What the file hashes to now.
        found: String,
    },
    /// The backup's status names a file this module never makes.
    #[error("the backup's status names {0:?}, which is not an image of a backup")]
    BadFile(String),
}

/// Who the backup is: written into the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestHead {
    /// The backup's namespace.
    pub namespace: String,
    /// The backup's name.
    pub name: String,
    /// The backup's uid (also the directory's name).
    pub uid: String,
    /// The VM's name.
    pub vm_name: String,
    /// The VM's uid.
    pub vm_uid: String,
    /// The snapshot exported.
    pub snapshot_name: String,
    /// The snapshot's consistency (Crash, FileSystem, Offline...).
    #[serde(default)]
    pub consistency: Option<String>,
    /// The VM's spec at the snapshot.
    pub vm_spec: serde_json::Value,
}

/// `manifest.json`: the head and the images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always `ironvisor.io/v1alpha1`.
    pub api_version: String,
    /// Always `VirtualMachineBackupManifest`.
    pub kind: String,
    /// Who the backup is.
    #[serde(flatten)]
    pub head: ManifestHead,
    /// The images, in the VM's disk order.
    pub disks: Vec<BackupDisk>,
}

/// What to read: the layer of a snapshot in a VM's directory.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The VM's directory.
    pub vm_dir: &'a Path,
    /// The snapshot's layer.
    pub layer: &'a str,
    /// The VM's disks, in spec order.
    pub disks: &'a [String],
    /// Most bytes per second to copy (the location's bandwidth limit).
    pub bandwidth: Option<u64>,
}

/// SHA-256 of a file, as lowercase hex (blocking thread; 4 MiB reads).
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The last `(NN.NN/100%)` figure in qemu-img's progress output.
pub fn last_percent(text: &str) -> Option<f64> {
    text.rsplit('(').find_map(|chunk| {
        let (num, rest) = chunk.split_once("/100%")?;
        rest.starts_with(')').then(|| num.trim().parse().ok())?
    })
}

/// Copy `src`'s whole chain into a standalone qcow2 `dst`, reporting the percentage done.
async fn convert(
    src: &Path,
    dst: &Path,
    disk: &str,
    bandwidth: Option<u64>,
    mut progress: impl FnMut(f64),
) -> Result<(), ExportError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-p", "-f", "qcow2", "-O", "qcow2"]);
    if let Some(rate) = bandwidth {
        cmd.arg("-r").arg(rate.to_string());
    }
    let mut child = cmd
        .arg(src)
        .arg(dst)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut err = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("no stderr"))?;
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let mut buf = [0u8; 512];
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if let Some(p) = last_percent(&String::from_utf8_lossy(&buf[..n])) {
            progress(p);
        }
    }
    let status = child.wait().await?;
    let message = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(ExportError::Convert {
            disk: disk.to_owned(),
            message: message.trim().to_owned(),
        });
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The manifest of the complete backup `uid` in `location`, when there is one of that uid.
pub async fn read_manifest(location: &Path, uid: &str) -> Result<Option<Manifest>, ExportError> {
    let dir = backup_dir(location, uid).ok_or_else(|| ExportError::Uid(uid.to_owned()))?;
    match tokio::fs::read(dir.join(MANIFEST)).await {
        Ok(bytes) => {
            let m: Manifest = serde_json::from_slice(&bytes)?;
            Ok((m.head.uid == uid).then_some(m))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write the backup `head.uid` of `src` into `location`; `progress` gets a line such as
/// `disk 1/2 (data): 43%` as the copy goes. Returns the images.
pub async fn export(
    src: Source<'_>,
    location: &Path,
    head: ManifestHead,
    progress: &tokio::sync::watch::Sender<String>,
) -> Result<Vec<BackupDisk>, ExportError> {
    let uid = head.uid.clone();
    if let Some(done) = read_manifest(location, &uid).await? {
        return Ok(done.disks);
    }
    let staging = staging_dir(location, &uid).ok_or_else(|| ExportError::Uid(uid.clone()))?;
    match tokio::fs::remove_dir_all(&staging).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    tokio::fs::create_dir_all(&staging).await?;
    let mut disks = Vec::new();
    let n = src.disks.len();
    for (i, disk) in src.disks.iter().enumerate() {
        let file = image_name(i);
        let dst = staging.join(&file);
        let layer = layer_file(src.vm_dir, disk, src.layer);
        convert(&layer, &dst, disk, src.bandwidth, |p| {
            progress.send_replace(format!("disk {}/{n} ({disk}): {p:.0}%", i + 1));
        })
        .await?;
        let virtual_size = info(&dst)
            .await
            .map_err(|e| ExportError::Info(disk.clone(), e))?
            .virtual_size;
        let bytes = tokio::fs::metadata(&dst).await?.len();
        progress.send_replace(format!("disk {}/{n} ({disk}): checksum", i + 1));
        let sha256 = sha256_file(&dst).await?;
        std::fs::File::open(&dst)?.sync_all()?;
        disks.push(BackupDisk {
            name: disk.clone(),
            file,
            sha256,
            virtual_size: i64::try_from(virtual_size).unwrap_or(i64::MAX),
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
        });
    }
    let manifest = Manifest {
        api_version: "ironvisor.io/v1alpha1".into(),
        kind: "VirtualMachineBackupManifest".into(),
        head,
        disks: disks.clone(),
    };
    let path = staging.join(MANIFEST);
    tokio::fs::write(&path, serde_json::to_vec_pretty(&manifest)?).await?;
    std::fs::File::open(&path)?.sync_all()?;
    sync_dir(&staging)?;
    let done = backup_dir(location, &uid).ok_or_else(|| ExportError::Uid(uid.clone()))?;
    tokio::fs::rename(&staging, &done).await?;
    if let Some(parent) = done.parent() {
        sync_dir(parent)?;
    }
    Ok(disks)
}

/// Remove every file of the backup `uid` (complete or staged) from `location`.
pub async fn remove(location: &Path, uid: &str) -> Result<(), ExportError> {
    let dirs = [backup_dir(location, uid), staging_dir(location, uid)];
    for dir in dirs.into_iter().flatten() {
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// The image of `disk` in the complete backup `uid`, once its SHA-256 matches the recorded one.
pub async fn verified_image(
    location: &Path,
    uid: &str,
    disk: &BackupDisk,
) -> Result<PathBuf, ExportError> {
    if !is_image_name(&disk.file) {
        return Err(ExportError::BadFile(disk.file.clone()));
    }
    let dir = backup_dir(location, uid).ok_or_else(|| ExportError::Uid(uid.to_owned()))?;
    let path = dir.join(&disk.file);
    let found = sha256_file(&path).await?;
    if !found.eq_ignore_ascii_case(&disk.sha256) {
        return Err(ExportError::Checksum {
            disk: disk.name.clone(),
            recorded: disk.sha256.clone(),
            found,
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::chain::ROOT;
    use crate::snapshot::qemu_img::ensure_overlay;

    const UID: &str = "b1a2c3d4-0000-4000-8000-00000000beef";

    fn head() -> ManifestHead {
        ManifestHead {
            namespace: "team-a".into(),
            name: "nightly".into(),
            uid: UID.into(),
            vm_name: "web".into(),
            vm_uid: "vm-uid".into(),
            snapshot_name: "s".into(),
            consistency: Some("Crash".into()),
            vm_spec: serde_json::json!({"memory": {"size": "64Mi"}}),
        }
    }

    fn qemu_io(file: &Path, cmd: &str) -> bool {
        std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", cmd])
            .arg(file)
            .output()
            .unwrap()
            .status
            .success()
    }

    #[test]
    fn qemu_img_progress_lines_give_the_last_percentage() {
        assert_eq!(
            last_percent("    (0.00/100%)\r    (43.50/100%)\r"),
            Some(43.5)
        );
        assert_eq!(last_percent("(100.00/100%)\n"), Some(100.0));
        assert_eq!(last_percent("no progress (here)"), None);
    }

    /// A two-layer chain read at the lower layer: the image holds that layer's data and not
    /// the upper one's, stands alone, and its checksum is recorded and verified.
    #[tokio::test]
    async fn a_snapshot_layer_is_exported_standalone_with_its_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let vm = tmp.path().join("vm");
        let loc = tmp.path().join("loc");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::create_dir_all(&loc).unwrap();
        let base = layer_file(&vm, "data", ROOT);
        crate::storage::qcow2::ensure_blank(&base, 4 << 20)
            .await
            .unwrap();
        assert!(qemu_io(&base, "write -P 0x41 0 64k"));
        let top = layer_file(&vm, "data", "s-1");
        ensure_overlay(&top, &base).await.unwrap();
        assert!(qemu_io(&top, "write -P 0x42 0 64k"));
        let (tx, rx) = tokio::sync::watch::channel(String::new());
        let disks = ["data".to_owned()];
        let src = Source {
            vm_dir: &vm,
            layer: ROOT,
            disks: &disks,
            bandwidth: None,
        };
        let out = export(src, &loc, head(), &tx).await.unwrap();
        assert!(
            rx.borrow().starts_with("disk 1/1 (data)"),
            "{}",
            *rx.borrow()
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].file, "disk-0.qcow2");
        assert_eq!(out[0].virtual_size, 4 << 20);
        let image = verified_image(&loc, UID, &out[0]).await.unwrap();
        assert!(info(&image).await.unwrap().backing_filename.is_none());
        assert!(qemu_io(&image, "read -P 0x41 0 64k"));
        // Run again (as after a crash past the rename): the manifest is read back.
        let again = export(src, &loc, head(), &tx).await.unwrap();
        assert_eq!(again, out);
        let m = read_manifest(&loc, UID).await.unwrap().unwrap();
        assert_eq!(m.head, head());
        assert!(!staging_dir(&loc, UID).unwrap().exists());
    }

    #[tokio::test]
    async fn a_half_written_staging_directory_is_thrown_away_and_written_again() {
        let tmp = tempfile::tempdir().unwrap();
        let vm = tmp.path().join("vm");
        let loc = tmp.path().join("loc");
        std::fs::create_dir_all(&vm).unwrap();
        let base = layer_file(&vm, "data", ROOT);
        crate::storage::qcow2::ensure_blank(&base, 1 << 20)
            .await
            .unwrap();
        let staging = staging_dir(&loc, UID).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("disk-0.qcow2"), b"torn").unwrap();
        let (tx, _rx) = tokio::sync::watch::channel(String::new());
        let disks = ["data".to_owned()];
        let src = Source {
            vm_dir: &vm,
            layer: ROOT,
            disks: &disks,
            bandwidth: None,
        };
        let out = export(src, &loc, head(), &tx).await.unwrap();
        verified_image(&loc, UID, &out[0]).await.unwrap();
        assert!(!staging.exists());
        remove(&loc, UID).await.unwrap();
        assert!(!backup_dir(&loc, UID).unwrap().exists());
    }

    #[tokio::test]
    async fn a_changed_image_or_a_foreign_file_name_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let vm = tmp.path().join("vm");
        let loc = tmp.path().join("loc");
        std::fs::create_dir_all(&vm).unwrap();
        let base = layer_file(&vm, "data", ROOT);
        crate::storage::qcow2::ensure_blank(&base, 1 << 20)
            .await
            .unwrap();
        let (tx, _rx) = tokio::sync::watch::channel(String::new());
        let disks = ["data".to_owned()];
        let src = Source {
            vm_dir: &vm,
            layer: ROOT,
            disks: &disks,
            bandwidth: None,
        };
        let out = export(src, &loc, head(), &tx).await.unwrap();
        let image = backup_dir(&loc, UID).unwrap().join(&out[0].file);
        assert!(qemu_io(&image, "write -P 0x66 0 4k"));
        let e = verified_image(&loc, UID, &out[0]).await.unwrap_err();
        assert!(matches!(e, ExportError::Checksum { .. }), "{e}");
        let mut foreign = out[0].clone();
        foreign.file = "../../etc/shadow".into();
        let e = verified_image(&loc, UID, &foreign).await.unwrap_err();
        assert!(matches!(e, ExportError::BadFile(_)), "{e}");
    }
}
