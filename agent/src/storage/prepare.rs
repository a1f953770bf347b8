//! Prepare everything a VM's domain points at: its directory, disks, kernel and initrd.
//! Cleanup removes the VM's own directory and nothing else.

use super::cache::{DownloadError, ImageCache, ImageState, ImageUse};
use super::{layout, qcow2};
use crate::paths::{PathError, resolve_host_path};
use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::vm::{BootFileSource, DiskSource, VirtualMachineSpec};
use std::path::{Path, PathBuf};

/// Why storage could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A hostPath is refused.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A download failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// qemu-img failed.
    #[error("disk {disk:?}: {source}")]
    Disk {
        /// The disk's name.
        disk: String,
        /// What failed.
        #[source]
        source: qcow2::Qcow2Error,
    },
    /// A size is not a quantity.
    #[error("disk {0:?} has an invalid size")]
    Size(String),
    /// A source has no kind.
    #[error("{0:?} has no usable source")]
    Source(String),
    /// A clone disk has not been made from its source yet.
    #[error("disk {0:?} is a clone whose source is not ready yet")]
    CloneNotMade(String),
    /// File system error.
    #[error("cannot create the VM directory")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    /// Whether retrying cannot help until the spec (or the host's images) change.
    pub fn is_permanent(&self) -> bool {
        match self {
            StorageError::Path(_) | StorageError::Size(_) | StorageError::Source(_) => true,
            StorageError::Download(d) => d.is_permanent(),
            StorageError::Disk { source, .. } => {
                matches!(
                    source,
                    qcow2::Qcow2Error::Unsupported(_) | qcow2::Qcow2Error::TooSmall { .. }
                )
            }
            StorageError::Io(_) | StorageError::CloneNotMade(_) => false,
        }
    }
}

/// Where the host paths come from.
#[derive(Clone)]
pub struct StorageRoots {
    /// `--state-dir`.
    pub state_dir: PathBuf,
    /// `--images-dir`.
    pub images_dir: PathBuf,
    /// The image cache under the state directory.
    pub cache: ImageCache,
}

/// Prepared boot files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Kernel for direct boot.
    pub kernel: Option<PathBuf>,
    /// Initrd for direct boot.
    pub initrd: Option<PathBuf>,
}

impl StorageRoots {
    async fn image(
        &self,
        http: Option<&ironvisor_crds::vm::HttpSource>,
        host_path: Option<&str>,
        what: &str,
        use_: ImageUse,
    ) -> Result<PathBuf, StorageError> {
        match (http, host_path) {
            (Some(h), None) => Ok(self.cache.ensure(&h.url, &h.sha256, use_).await?),
            (None, Some(p)) => Ok(resolve_host_path(&self.images_dir, p)?),
            _ => Err(StorageError::Source(what.to_owned())),
        }
    }

    async fn boot_file(&self, src: &BootFileSource, what: &str) -> Result<PathBuf, StorageError> {
        self.image(
            src.http.as_ref(),
            src.host_path.as_ref().map(|h| h.path.as_str()),
            what,
            ImageUse::BootFile,
        )
        .await
    }

    /// Whether every http image the VM still needs is in the cache; starts the missing
    /// downloads in the background. `Some(progress)` while any is downloading. Every image
    /// the VM names is recorded as wanted, so the cache keeps it while the VM exists.
    pub async fn images_pending(
        &self,
        vm_dir: &Path,
        spec: &VirtualMachineSpec,
    ) -> Result<Option<String>, StorageError> {
        let mut named = Vec::new();
        for disk in &spec.disks {
            if let Some(h) = &disk.source.http {
                let made = tokio::fs::try_exists(layout::disk_file(vm_dir, &disk.name)).await?;
                named.push((disk.name.as_str(), h, ImageUse::Disk(h.format), made));
            }
        }
        if let Some(kb) = &spec.kernel_boot {
            if let Some(h) = &kb.kernel.http {
                named.push(("kernel", h, ImageUse::BootFile, false));
            }
            if let Some(h) = kb.initrd.as_ref().and_then(|i| i.http.as_ref()) {
                named.push(("initrd", h, ImageUse::BootFile, false));
            }
        }
        if let Some(uid) = vm_dir.file_name().and_then(|n| n.to_str()) {
            let wanted: Vec<_> = named
                .iter()
                .map(|(_, h, u, _)| (h.sha256.as_str(), *u))
                .collect();
            self.cache.want(uid, &wanted);
        }
        let mut pending = Vec::new();
        for (what, h, use_, made) in named {
            if made {
                continue;
            }
            if let ImageState::Downloading { received, total } =
                self.cache.poll(&h.url, &h.sha256, use_).await?
            {
                let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
                pending.push(match total {
                    Some(t) => format!("{what}: {:.1} of {:.1} MiB", mib(received), mib(t)),
                    None => format!("{what}: {:.1} MiB", mib(received)),
                });
            }
        }
        Ok((!pending.is_empty()).then(|| format!("downloading {}", pending.join(", "))))
    }

    /// Remove the directory of the VM with this uid ([`remove_vm_dir`]) and let the cache
    /// collect the images it named. Refused while linked clones read its disks
    /// ([`crate::snapshot::pins::BaseInUse`]): the directory then stays, whole.
    pub async fn remove_vm(&self, uid: &str) -> std::io::Result<bool> {
        if let Some(dir) = layout::vm_dir(&self.state_dir, uid) {
            crate::snapshot::pins::ensure_unused(&self.state_dir, &dir).await?;
        }
        let removed = remove_vm_dir(&self.state_dir, uid).await?;
        self.cache.release(uid);
        Ok(removed)
    }

    /// Create the VM directory and every disk that does not exist yet; resolve boot files.
    pub async fn prepare(
        &self,
        vm_dir: &Path,
        spec: &VirtualMachineSpec,
    ) -> Result<Prepared, StorageError> {
        tokio::fs::create_dir_all(vm_dir).await?;
        for disk in &spec.disks {
            let target = layout::disk_file(vm_dir, &disk.name);
            let size = match &disk.size {
                Some(q) => Some(
                    to_bytes(&q.0)
                        .ok()
                        .and_then(|b| u64::try_from(b).ok())
                        .ok_or_else(|| StorageError::Size(disk.name.clone()))?,
                ),
                None => None,
            };
            let wrap = |source| StorageError::Disk {
                disk: disk.name.clone(),
                source,
            };
            if tokio::fs::try_exists(&target).await? {
                continue;
            }
            let DiskSource {
                blank,
                http,
                host_path,
                backup,
                snapshot,
                vm,
            } = &disk.source;
            if backup.is_some() {
                // Restored by crate::backup::restore_disk before storage is prepared.
                return Err(StorageError::Source(disk.name.clone()));
            }
            if snapshot.is_some() || vm.is_some() {
                // Clones are made before the domain is prepared (snapshot::clone), from
                // sources resolved through the API; one not made yet waits for that.
                return Err(StorageError::CloneNotMade(disk.name.clone()));
            }
            if blank.is_some() {
                let size = size.ok_or_else(|| StorageError::Size(disk.name.clone()))?;
                qcow2::ensure_blank(&target, size).await.map_err(wrap)?;
            } else {
                let image = self
                    .image(
                        http.as_ref(),
                        host_path.as_ref().map(|h| h.path.as_str()),
                        &disk.name,
                        ImageUse::Disk(http.as_ref().and_then(|h| h.format)),
                    )
                    .await?;
                qcow2::ensure_overlay(&target, &image, size)
                    .await
                    .map_err(wrap)?;
            }
        }
        let mut prepared = Prepared::default();
        if let Some(kb) = &spec.kernel_boot {
            prepared.kernel = Some(self.boot_file(&kb.kernel, "kernel").await?);
            if let Some(initrd) = &kb.initrd {
                prepared.initrd = Some(self.boot_file(initrd, "initrd").await?);
            }
        }
        Ok(prepared)
    }
}

/// Remove the directory of the VM with this uid: its disks, seed and console log. Refuses
/// anything that is not exactly `<state-dir>/vms/<uid>`.
pub async fn remove_vm_dir(state_dir: &Path, uid: &str) -> std::io::Result<bool> {
    let Some(dir) = layout::vm_dir(state_dir, uid) else {
        return Ok(false);
    };
    match tokio::fs::symlink_metadata(&dir).await {
        Ok(m) if m.is_dir() => {
            tokio::fs::remove_dir_all(&dir).await?;
            Ok(true)
        }
        // A symlink (or file) in place of a VM directory is removed itself, never followed.
        Ok(_) => {
            tokio::fs::remove_file(&dir).await?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The uids that have a directory under the state directory.
pub async fn list_vm_dirs(state_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rd = match tokio::fs::read_dir(state_dir.join(layout::VMS_DIR)).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    while let Some(e) = rd.next_entry().await? {
        if let Some(name) = e.file_name().to_str()
            && layout::vm_dir(state_dir, name).is_some()
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> VirtualMachineSpec {
        serde_json::from_value(json).unwrap()
    }

    fn roots(tmp: &Path) -> StorageRoots {
        let state = tmp.join("state");
        let images = tmp.join("images");
        std::fs::create_dir_all(&images).unwrap();
        StorageRoots {
            cache: ImageCache::new(&state),
            state_dir: state,
            images_dir: images,
        }
    }

    #[tokio::test]
    async fn blank_and_host_path_disks_are_prepared_and_the_image_is_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let image = r.images_dir.join("base.raw");
        std::fs::write(&image, vec![1u8; 1 << 20]).unwrap();
        std::fs::write(r.images_dir.join("vmlinuz"), b"kernel").unwrap();
        let s = spec(serde_json::json!({
            "memory": {"size": "64Mi"},
            "disks": [
                {"name": "root", "source": {"hostPath": {"path": image.to_str().unwrap()}}},
                {"name": "data", "size": "16Mi", "source": {"blank": {}}}
            ],
            "kernelBoot": {"kernel": {"hostPath": {"path": r.images_dir.join("vmlinuz").to_str().unwrap()}}}
        }));
        let vm_dir = layout::vm_dir(&r.state_dir, "uid-1").unwrap();
        let p = r.prepare(&vm_dir, &s).await.unwrap();
        assert!(p.kernel.unwrap().ends_with("vmlinuz"));
        assert_eq!(
            qcow2::info(&layout::disk_file(&vm_dir, "data"))
                .await
                .unwrap()
                .virtual_size,
            16 << 20
        );
        assert!(layout::disk_file(&vm_dir, "root").exists());
        assert_eq!(std::fs::read(&image).unwrap(), vec![1u8; 1 << 20]);
        assert_eq!(
            list_vm_dirs(&r.state_dir).await.unwrap(),
            vec!["uid-1".to_owned()]
        );
    }

    #[tokio::test]
    async fn a_host_path_outside_the_images_directory_is_a_permanent_error() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let s = spec(serde_json::json!({
            "memory": {"size": "64Mi"},
            "disks": [{"name": "root", "source": {"hostPath": {"path": "/etc/passwd"}}}]
        }));
        let err = r
            .prepare(&tmp.path().join("state/vms/u"), &s)
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
    }

    #[tokio::test]
    async fn cleanup_removes_only_the_vm_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let image = r.images_dir.join("keep.raw");
        std::fs::write(&image, b"keep").unwrap();
        let a = layout::vm_dir(&r.state_dir, "a").unwrap();
        let b = layout::vm_dir(&r.state_dir, "b").unwrap();
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("disk-x.qcow2"), b"x").unwrap();
        assert!(remove_vm_dir(&r.state_dir, "a").await.unwrap());
        assert!(!a.exists() && b.exists() && image.exists());
        assert!(!remove_vm_dir(&r.state_dir, "..").await.unwrap());
        assert!(!remove_vm_dir(&r.state_dir, "a").await.unwrap());
        assert!(r.state_dir.exists());
    }

    #[tokio::test]
    async fn a_symlinked_vm_directory_is_unlinked_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        std::fs::create_dir_all(r.state_dir.join(layout::VMS_DIR)).unwrap();
        std::os::unix::fs::symlink(&r.images_dir, r.state_dir.join("vms/evil")).unwrap();
        std::fs::write(r.images_dir.join("precious"), b"p").unwrap();
        assert!(remove_vm_dir(&r.state_dir, "evil").await.unwrap());
        assert!(r.images_dir.join("precious").exists());
    }
}
