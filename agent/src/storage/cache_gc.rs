//! The image cache's size limit (`--image-cache-max-bytes`) and its garbage collection.
//!
//! This module owns deciding which cached images may go: only those no VM disk on this host
//! is backed by (read from the disks' own headers, the agent's view that survives a
//! restart) and that the caller does not keep (images a VM asked for recently: its overlay
//! may not exist yet, or it boots a kernel from the cache). Among those, the least recently
//! used go first. It never touches a VM directory, and never removes a file that is not a
//! complete cache entry (partial downloads belong to their download).

use super::layout;
use super::qcow2_header::backing_file_name;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::AsyncReadExt;

/// Default limit on the cache's bytes on disk.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 << 30;
/// Bytes of a VM disk's header read to find its backing file (the agent's overlays keep
/// the name in their first cluster, 64 KiB by default).
const OVERLAY_HEAD_BYTES: u64 = 64 << 10;

/// The cache cannot take an image without removing one that is in use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the host's image cache is full: {used} of its {max} bytes are held by images VMs on this \
     host use, and this image needs {need} more; it is retried as VMs release images (an \
     admin may raise --image-cache-max-bytes)"
)]
pub struct CacheFull {
    /// Bytes on disk after collecting what could be collected.
    pub used: u64,
    /// Bytes the new image needs.
    pub need: u64,
    /// The limit.
    pub max: u64,
}

/// Why room could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Everything left is in use.
    #[error(transparent)]
    Full(#[from] CacheFull),
    /// The cache or a VM directory could not be read, or an image not removed.
    #[error("cannot collect the image cache")]
    Io(#[from] std::io::Error),
}

/// A complete cache entry.
#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// Bytes on disk of a file (allocated blocks: a sparse image counts what it holds).
fn on_disk(m: &std::fs::Metadata) -> u64 {
    m.blocks().saturating_mul(512)
}

/// The complete entries, and the bytes of everything in the cache directory (partial
/// downloads and conversions included: they hold disk space too).
async fn scan(state_dir: &Path) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut rd = match tokio::fs::read_dir(state_dir.join(layout::CACHE_DIR)).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(e) => return Err(e),
    };
    let (mut entries, mut total) = (Vec::new(), 0u64);
    while let Some(e) = rd.next_entry().await? {
        let m = e.metadata().await?;
        if !m.is_file() {
            continue;
        }
        total = total.saturating_add(on_disk(&m));
        if !e.file_name().to_string_lossy().starts_with('.') {
            entries.push(Entry {
                path: e.path(),
                bytes: on_disk(&m),
                used: m.modified()?,
            });
        }
    }
    Ok((entries, total))
}

/// The files every VM disk on this host is backed by (read from each disk's header).
pub async fn referenced(state_dir: &Path) -> std::io::Result<HashSet<PathBuf>> {
    let mut out = HashSet::new();
    for uid in super::prepare::list_vm_dirs(state_dir).await? {
        let Some(dir) = layout::vm_dir(state_dir, &uid) else {
            continue;
        };
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        while let Some(e) = rd.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("disk-") || name.starts_with(".disk-")) {
                continue;
            }
            let mut head = Vec::new();
            let f = tokio::fs::File::open(e.path()).await?;
            f.take(OVERLAY_HEAD_BYTES).read_to_end(&mut head).await?;
            if let Some(b) = backing_file_name(&head) {
                out.insert(PathBuf::from(b));
            }
        }
    }
    Ok(out)
}

/// Remove unreferenced entries, least recently used first, until `need` more bytes fit
/// under `max`. Entries in `keep` or backing a VM disk stay. Returns what was removed.
pub async fn make_room(
    state_dir: &Path,
    need: u64,
    max: u64,
    keep: &HashSet<PathBuf>,
) -> Result<Vec<PathBuf>, GcError> {
    let (mut entries, mut used) = scan(state_dir).await?;
    if used.saturating_add(need) <= max {
        return Ok(vec![]);
    }
    let in_use = referenced(state_dir).await?;
    entries.retain(|e| !keep.contains(&e.path) && !in_use.contains(&e.path));
    entries.sort_by_key(|e| e.used);
    let mut removed = Vec::new();
    for e in entries {
        if used.saturating_add(need) <= max {
            break;
        }
        match tokio::fs::remove_file(&e.path).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        tracing::info!(image = %e.path.display(), bytes = e.bytes, "unused image removed from the cache");
        used = used.saturating_sub(e.bytes);
        removed.push(e.path);
    }
    if used.saturating_add(need) > max {
        return Err(CacheFull { used, need, max }.into());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::qcow2;
    use std::time::Duration;

    /// A cache entry of `mib` MiB of data, last used `age_s` seconds ago.
    fn entry(state: &Path, name: &str, mib: usize, age_s: u64) -> PathBuf {
        let p = state.join(layout::CACHE_DIR).join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![1u8; mib << 20]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
        p
    }

    #[tokio::test]
    async fn the_least_recently_used_unreferenced_images_go_first() {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path();
        let old = entry(s, "old.qcow2", 2, 300);
        let newer = entry(s, "newer.qcow2", 2, 100);
        let kept = entry(s, "kept.img", 2, 900);
        let keep = HashSet::from([kept.clone()]);
        // 6 MiB held, 5 MiB allowed, 1 MiB needed: the oldest unkept one goes.
        let removed = make_room(s, 1 << 20, 5 << 20, &keep).await.unwrap();
        assert_eq!(removed, vec![old.clone()]);
        assert!(!old.exists() && newer.exists() && kept.exists());
        assert!(make_room(s, 0, 5 << 20, &keep).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_image_a_vm_disk_is_backed_by_is_never_collected() {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path();
        let base = entry(s, "base.qcow2", 2, 1000);
        let spare = entry(s, "spare.qcow2", 1, 10);
        let vm = layout::vm_dir(s, "uid-1").unwrap();
        std::fs::create_dir_all(&vm).unwrap();
        qcow2::ensure_overlay(&layout::disk_file(&vm, "root"), &base, None)
            .await
            .unwrap();
        assert!(referenced(s).await.unwrap().contains(&base));
        let err = make_room(s, 4 << 20, 5 << 20, &HashSet::new())
            .await
            .unwrap_err();
        let GcError::Full(full) = err else {
            panic!("{err}")
        };
        assert_eq!((full.need, full.max), (4 << 20, 5 << 20));
        assert!(full.used >= 2 << 20, "{full}");
        assert!(base.exists(), "in use");
        assert!(!spare.exists(), "collected while trying");
    }

    #[tokio::test]
    async fn partial_files_count_but_are_never_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path();
        let partial = entry(s, ".partial-abc", 3, 1000);
        let err = make_room(s, 3 << 20, 5 << 20, &HashSet::new())
            .await
            .unwrap_err();
        assert!(matches!(err, GcError::Full(_)), "{err}");
        assert!(partial.exists());
    }
}
