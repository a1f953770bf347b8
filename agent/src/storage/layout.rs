//! Where a VM's files live under `--state-dir`: one directory per VM uid, nothing shared.
//!
//! Pure path arithmetic. The uid comes from the API server; it is checked to be a plain
//! file name so a hostile value can never point outside the state directory.

use std::path::{Path, PathBuf};

/// Name of the seed disk in the domain.
pub const SEED_DISK_NAME: &str = "cloudinit";
/// Sub-directory of the state directory holding VM directories.
pub const VMS_DIR: &str = "vms";
/// Sub-directory of the state directory holding downloaded images, keyed by sha256.
pub const CACHE_DIR: &str = "images";

/// Directory of the VM with this uid, or `None` when the uid is not a safe file name.
pub fn vm_dir(state_dir: &Path, uid: &str) -> Option<PathBuf> {
    let safe = !uid.is_empty()
        && uid.len() <= 128
        && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !uid.starts_with('-');
    safe.then(|| state_dir.join(VMS_DIR).join(uid))
}

/// The qcow2 file of a disk (disk names are DNS labels, validated by the API).
pub fn disk_file(vm_dir: &Path, disk: &str) -> PathBuf {
    vm_dir.join(format!("disk-{}.qcow2", sanitise(disk)))
}

/// The NoCloud seed image.
pub fn seed_file(vm_dir: &Path) -> PathBuf {
    vm_dir.join("seed.iso")
}

/// When the agent sent the guest an ACPI shutdown (RFC 3339), while it waits for the
/// grace period.
pub fn shutdown_marker(vm_dir: &Path) -> PathBuf {
    vm_dir.join("shutdown-requested")
}

/// The VM's namespace and name (`namespace/name`), written when its directory is prepared:
/// it lets a restarted agent ask the API whether a directory's VM still exists before it
/// removes anything.
pub fn owner_file(vm_dir: &Path) -> PathBuf {
    vm_dir.join("owner")
}

/// The serial console log.
pub fn console_log(vm_dir: &Path) -> PathBuf {
    vm_dir.join("console.log")
}

/// A downloaded image in the host cache.
pub fn cached_image(state_dir: &Path, sha256: &str) -> PathBuf {
    state_dir
        .join(CACHE_DIR)
        .join(format!("{}.img", sanitise(&sha256.to_ascii_lowercase())))
}

/// A disk's base image in the host cache: the standalone qcow2 the agent converted the
/// download with this sha256 into, opened as the declared `format` (`None`: as its header
/// reads). The same bytes opened as another format are another image, so the format is
/// part of the name.
pub fn cached_disk_image(state_dir: &Path, sha256: &str, format: Option<&str>) -> PathBuf {
    let sha = sanitise(&sha256.to_ascii_lowercase());
    let name = match format {
        None => format!("{sha}.qcow2"),
        Some(f) => format!("{sha}-{}.qcow2", sanitise(f)),
    };
    state_dir.join(CACHE_DIR).join(name)
}

/// Keep `[a-z0-9-]` only: names reach here validated, this is belt and braces.
fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_maps_to_its_own_directory() {
        let d = vm_dir(Path::new("/s"), "6c1f0a1e-1111-4000-8000-000000000001").unwrap();
        assert_eq!(d, Path::new("/s/vms/6c1f0a1e-1111-4000-8000-000000000001"));
    }

    #[test]
    fn hostile_uids_get_no_directory() {
        for uid in ["", "..", "../x", "a/b", "/abs", "-rf", "a b", "x\0y"] {
            assert_eq!(vm_dir(Path::new("/s"), uid), None, "{uid:?}");
        }
    }

    #[test]
    fn disk_files_stay_inside_the_vm_directory() {
        let f = disk_file(Path::new("/s/vms/u"), "../../etc");
        assert_eq!(f.parent(), Some(Path::new("/s/vms/u")));
    }

    #[test]
    fn one_download_opened_as_two_formats_is_two_cache_entries() {
        let s = Path::new("/s");
        let sha = "ab".repeat(32);
        let auto = cached_disk_image(s, &sha, None);
        let raw = cached_disk_image(s, &sha, Some("raw"));
        let qcow2 = cached_disk_image(s, &sha, Some("qcow2"));
        assert!(auto != raw && raw != qcow2 && auto != qcow2);
        assert_eq!(raw.parent(), auto.parent());
        assert!(raw.to_str().unwrap().ends_with("-raw.qcow2"));
    }
}
