//! Where a backup's files live in a location: pure path arithmetic, no I/O.
//!
//! `<location>/ironvisor-backups/<uid>/` holds `disk-<n>.qcow2` (the VM's n-th disk, counted
//! from 0) and `manifest.json`. It is written as `.<uid>.partial/` and renamed into place
//! once every image is written, checksummed and synced: a directory under the uid's name is
//! always complete. Only uids from the API server (checked to be plain names) make paths.

use ironvisor_crds::backup::BACKUPS_DIR;
use std::path::{Path, PathBuf};

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";

/// Whether `uid` may name a directory: lowercase letters, digits and dashes only.
fn plain(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && !uid.starts_with('-')
        && uid
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The directory of all backups in a location mounted at `location`.
pub fn backups_root(location: &Path) -> PathBuf {
    location.join(BACKUPS_DIR)
}

/// The complete backup with this uid, or `None` for a uid that is not a plain name.
pub fn backup_dir(location: &Path, uid: &str) -> Option<PathBuf> {
    plain(uid).then(|| backups_root(location).join(uid))
}

/// Where the backup with this uid is written before it is complete.
pub fn staging_dir(location: &Path, uid: &str) -> Option<PathBuf> {
    plain(uid).then(|| backups_root(location).join(format!(".{uid}.partial")))
}

/// The image file name of the VM's disk number `index`.
pub fn image_name(index: usize) -> String {
    format!("disk-{index}.qcow2")
}

/// Whether `name` is an image file name this module makes (a status naming anything else
/// is not trusted).
pub fn is_image_name(name: &str) -> bool {
    name.strip_prefix("disk-")
        .and_then(|r| r.strip_suffix(".qcow2"))
        .is_some_and(|n| !n.is_empty() && n.len() <= 3 && n.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0e5c7c1a-2b1d-4a53-9a7e-5a1c3c1b2d10";

    #[test]
    fn a_backup_lives_under_its_uid_and_is_staged_beside_it() {
        let loc = Path::new("/mnt/backups");
        assert_eq!(
            backup_dir(loc, UID).unwrap(),
            Path::new("/mnt/backups/ironvisor-backups").join(UID)
        );
        assert_eq!(
            staging_dir(loc, UID).unwrap(),
            Path::new("/mnt/backups/ironvisor-backups").join(format!(".{UID}.partial"))
        );
    }

    #[test]
    fn hostile_uids_make_no_path() {
        let loc = Path::new("/mnt/backups");
        for uid in [
            "",
            "..",
            "../etc",
            "a/b",
            "A",
            "x.y",
            "-rf",
            &"a".repeat(65),
        ] {
            assert_eq!(backup_dir(loc, uid), None, "{uid:?}");
            assert_eq!(staging_dir(loc, uid), None, "{uid:?}");
        }
    }

    #[test]
    fn only_numbered_images_are_image_names() {
        assert_eq!(image_name(0), "disk-0.qcow2");
        assert!(is_image_name("disk-12.qcow2"));
        for n in [
            "disk-.qcow2",
            "disk-a.qcow2",
            "../disk-0.qcow2",
            "disk-0.qcow2/x",
            "manifest.json",
            "disk-1234.qcow2",
        ] {
            assert!(!is_image_name(n), "{n}");
        }
    }
}
