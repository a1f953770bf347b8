//! The `qemu-img` calls the snapshot code makes on layers no running QEMU has open.
//!
//! New layers are made under a staging name and renamed into place, so a crash never leaves
//! a half-made layer under a layer's name.

use super::files::staging_file;
use crate::storage::qcow2::{Qcow2Error, info};
use std::path::Path;
use tokio::process::Command;

async fn run(cmd: &mut Command) -> Result<(), Qcow2Error> {
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(Qcow2Error::Tool(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// Make `target`, an empty qcow2 overlay of the qcow2 `backing`, of the same virtual size,
/// unless it exists with that backing already. The backing file is not opened for writing
/// (`-u`): a running QEMU holds its lock. Returns whether it was made.
pub async fn ensure_overlay(target: &Path, backing: &Path) -> Result<bool, Qcow2Error> {
    if tokio::fs::try_exists(target).await? {
        let have = info(target).await?;
        if have.backing_filename.as_deref() == backing.to_str() {
            return Ok(false);
        }
        return Err(Qcow2Error::Tool(format!(
            "{} exists with another backing file ({:?}); it is left for the operator to inspect",
            target.display(),
            have.backing_filename
        )));
    }
    let size = info(backing).await?.virtual_size;
    let tmp = staging_file(target);
    let _ = tokio::fs::remove_file(&tmp).await;
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b"])
        .arg(backing)
        .arg(&tmp)
        .arg(size.to_string()))
    .await?;
    tokio::fs::rename(&tmp, target).await?;
    Ok(true)
}

/// Commit `child`'s data down into its backing file (which it keeps: `-d`). Running it
/// again after a crash writes the same data again.
pub async fn commit_into_backing(child: &Path) -> Result<(), Qcow2Error> {
    run(Command::new("qemu-img")
        .args(["commit", "-q", "-d"])
        .arg(child))
    .await
}

/// Make `file` name `backing` as its backing file without copying data: only correct when
/// `backing` reads the same as the old one (after a commit into it).
pub async fn rebase_unsafe(file: &Path, backing: &Path) -> Result<(), Qcow2Error> {
    run(Command::new("qemu-img")
        .args(["rebase", "-q", "-u", "-F", "qcow2", "-b"])
        .arg(backing)
        .arg(file))
    .await
}

/// Bytes a layer occupies on the host.
pub async fn allocated_bytes(file: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(tokio::fs::metadata(file).await?.blocks() * 512)
}
