//! qcow2 files through `qemu-img`: blank disks and copy-on-write overlays.
//!
//! Files are created under a temporary name and renamed into place, so a crash never leaves
//! a half-made disk that a later reconcile would take for a good one. An existing disk is
//! never recreated: it holds the guest's data.

use std::path::Path;
use tokio::process::Command;

/// Why a disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// File system error.
    #[error("disk file operation failed")]
    Io(#[from] std::io::Error),
    /// qemu-img failed.
    #[error("qemu-img failed: {0}")]
    Tool(String),
    /// The image is larger than the disk's declared size (which is what the quota counts).
    #[error(
        "the image's virtual size is {image} bytes, larger than the disk's declared size of \
         {requested} bytes; declare a size of at least {image} bytes"
    )]
    TooSmall {
        /// Requested bytes.
        requested: u64,
        /// Virtual size of the image.
        image: u64,
    },
    /// qemu-img's answer could not be read.
    #[error("cannot read qemu-img info output")]
    Info(#[from] serde_json::Error),
    /// The image is not one QEMU may be given: only raw, or qcow2 with no data file and no
    /// backing file (anything else can make QEMU open other files of the host).
    #[error(
        "the image is not accepted: {0}; only raw, or qcow2 without a data file or backing file"
    )]
    Unsupported(String),
}

/// What `qemu-img info` says about an image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ImageInfo {
    /// Format (raw, qcow2, vmdk, ...).
    pub format: String,
    /// Size the guest sees.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// Backing file, if any.
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    /// Format-specific data (a qcow2's external data file is there).
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<serde_json::Value>,
}

impl ImageInfo {
    /// The external data file a qcow2 names, if any.
    pub fn data_file(&self) -> Option<&str> {
        self.format_specific
            .as_ref()?
            .get("data")?
            .get("data-file")?
            .as_str()
    }
}

/// What QEMU would open for `path`, by QEMU's own view (`qemu-img info --backing-chain`),
/// accepted only when it is a single raw or qcow2 file with no data file and no backing:
/// a VMDK's extents, a qcow2's data file or backing file could name any file on the host.
pub async fn accepted_image(path: &Path) -> Result<ImageInfo, Qcow2Error> {
    let out = run(Command::new("qemu-img")
        .args(["info", "--backing-chain", "--output=json", "-U"])
        .arg(path))
    .await?;
    let chain: Vec<ImageInfo> = serde_json::from_slice(&out)?;
    check_chain(chain)
}

/// The verdict of [`accepted_image`] over qemu-img's answer.
pub fn check_chain(mut chain: Vec<ImageInfo>) -> Result<ImageInfo, Qcow2Error> {
    if chain.len() != 1 {
        return Err(Qcow2Error::Unsupported(format!(
            "QEMU would open a chain of {} images",
            chain.len()
        )));
    }
    let image = chain.remove(0);
    if !matches!(image.format.as_str(), "raw" | "qcow2") {
        return Err(Qcow2Error::Unsupported(format!(
            "its format is {}",
            image.format
        )));
    }
    if let Some(b) = &image.backing_filename {
        return Err(Qcow2Error::Unsupported(format!(
            "it has a backing file ({b})"
        )));
    }
    if let Some(d) = image.data_file() {
        return Err(Qcow2Error::Unsupported(format!(
            "it has an external data file ({d})"
        )));
    }
    Ok(image)
}

async fn run(cmd: &mut Command) -> Result<Vec<u8>, Qcow2Error> {
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(Qcow2Error::Tool(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(out.stdout)
}

/// Inspect an image. Its format is probed, so the result is only trusted together with the
/// check that there is no backing file.
pub async fn info(path: &Path) -> Result<ImageInfo, Qcow2Error> {
    let out = run(Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path))
    .await?;
    Ok(serde_json::from_slice(&out)?)
}

fn staging_name(target: &Path) -> std::path::PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp"))
}

/// Create a blank qcow2 disk of `size` bytes at `target` unless it exists. Returns whether
/// it was created.
pub async fn ensure_blank(target: &Path, size: u64) -> Result<bool, Qcow2Error> {
    if tokio::fs::try_exists(target).await? {
        return Ok(false);
    }
    let tmp = staging_name(target);
    let _ = tokio::fs::remove_file(&tmp).await;
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&tmp)
        .arg(size.to_string()))
    .await?;
    tokio::fs::rename(&tmp, target).await?;
    Ok(true)
}

/// Create a qcow2 overlay at `target` on top of `image` (never written), grown to `size`
/// when given, unless it exists. Returns whether it was created.
pub async fn ensure_overlay(
    target: &Path,
    image: &Path,
    size: Option<u64>,
) -> Result<bool, Qcow2Error> {
    if tokio::fs::try_exists(target).await? {
        return Ok(false);
    }
    let base = accepted_image(image).await?;
    if let Some(requested) = size
        && requested < base.virtual_size
    {
        return Err(Qcow2Error::TooSmall {
            requested,
            image: base.virtual_size,
        });
    }
    let tmp = staging_name(target);
    let _ = tokio::fs::remove_file(&tmp).await;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", &base.format, "-b"])
        .arg(image)
        .arg(&tmp);
    if let Some(s) = size {
        cmd.arg(s.to_string());
    }
    run(&mut cmd).await?;
    tokio::fs::rename(&tmp, target).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blank_disk_has_the_requested_size_and_is_never_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk-a.qcow2");
        assert!(ensure_blank(&disk, 64 << 20).await.unwrap());
        let i = info(&disk).await.unwrap();
        assert_eq!((i.format.as_str(), i.virtual_size), ("qcow2", 64 << 20));
        let before = std::fs::metadata(&disk).unwrap().modified().unwrap();
        assert!(!ensure_blank(&disk, 128 << 20).await.unwrap());
        assert_eq!(
            std::fs::metadata(&disk).unwrap().modified().unwrap(),
            before
        );
    }

    #[tokio::test]
    async fn an_overlay_grows_to_the_requested_size_and_leaves_the_image_alone() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("base.raw");
        std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
        let disk = dir.path().join("disk-root.qcow2");
        assert!(ensure_overlay(&disk, &image, Some(8 << 20)).await.unwrap());
        let i = info(&disk).await.unwrap();
        assert_eq!(i.virtual_size, 8 << 20);
        assert_eq!(i.backing_filename.as_deref(), image.to_str());
        assert_eq!(std::fs::read(&image).unwrap(), vec![7u8; 1 << 20]);
    }

    #[tokio::test]
    async fn an_overlay_smaller_than_its_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("base.raw");
        std::fs::write(&image, vec![0u8; 2 << 20]).unwrap();
        let err = ensure_overlay(&dir.path().join("d.qcow2"), &image, Some(1 << 20))
            .await
            .unwrap_err();
        assert!(matches!(err, Qcow2Error::TooSmall { .. }), "{err}");
    }

    #[tokio::test]
    async fn an_image_with_its_own_backing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.raw");
        std::fs::write(&secret, b"host secret").unwrap();
        let crafted = dir.path().join("crafted.qcow2");
        ensure_overlay(&crafted, &secret, None).await.unwrap();
        let err = ensure_overlay(&dir.path().join("d.qcow2"), &crafted, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Qcow2Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("backing file"), "{err}");
    }

    #[tokio::test]
    async fn a_qcow2_with_an_external_data_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("other-vm-disk.raw");
        std::fs::write(&secret, vec![9u8; 1 << 20]).unwrap();
        let crafted = dir.path().join("crafted.qcow2");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-o"])
            .arg(format!("data_file={}", secret.display()))
            .arg(&crafted)
            .arg("1M"))
        .await
        .unwrap();
        let err = ensure_overlay(&dir.path().join("d.qcow2"), &crafted, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("external data file"), "{err}");
        assert!(!dir.path().join("d.qcow2").exists());
    }

    #[tokio::test]
    async fn a_vmdk_whose_flat_extent_points_at_a_host_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let descriptor = dir.path().join("crafted.vmdk");
        std::fs::write(
            &descriptor,
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/hostname\" 0\n",
        )
        .unwrap();
        let err = ensure_overlay(&dir.path().join("d.qcow2"), &descriptor, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Qcow2Error::Unsupported(_)), "{err}");
    }
}
