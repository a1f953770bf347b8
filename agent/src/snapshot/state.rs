//! Which layer a VM writes to, kept in its directory so the next boot uses it.
//!
//! libvirt moves a running guest to a new layer itself (and reports it in the live XML); a
//! halted VM's next definition comes from the spec, so the agent records the active layer in
//! `active-layer` and the domain plan points every disk at that layer's file. The file is
//! replaced atomically; without it the VM writes to its original disk files.

use super::chain::ROOT;
use super::files::layer_file;
use crate::domain_xml::DomainPlan;
use crate::storage::layout::SEED_DISK_NAME;
use std::path::{Path, PathBuf};

fn marker(vm_dir: &Path) -> PathBuf {
    vm_dir.join("active-layer")
}

fn is_layer_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The active layer of the VM in `vm_dir`; the root when none is recorded (or the record
/// is not a layer id, which only a hand edit can cause).
pub fn read_active(vm_dir: &Path) -> String {
    match std::fs::read_to_string(marker(vm_dir)) {
        Ok(s) if is_layer_id(s.trim()) => s.trim().to_owned(),
        _ => ROOT.to_owned(),
    }
}

/// Record `id` as the active layer (atomically: a crash leaves the old or the new value).
pub fn write_active(vm_dir: &Path, id: &str) -> std::io::Result<()> {
    let tmp = vm_dir.join(".active-layer.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, marker(vm_dir))
}

/// Point every disk of `plan` (not the seed) at the active layer's file.
pub fn point_at_active_layer(plan: &mut DomainPlan, vm_dir: &Path) {
    let active = read_active(vm_dir);
    for d in plan.disks.iter_mut().filter(|d| d.name != SEED_DISK_NAME) {
        d.path = layer_file(vm_dir, &d.name, &active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_layer_survives_a_rewrite_and_defaults_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_active(dir.path()), ROOT);
        write_active(dir.path(), "s-1").unwrap();
        assert_eq!(read_active(dir.path()), "s-1");
        write_active(dir.path(), "r-2").unwrap();
        assert_eq!(read_active(dir.path()), "r-2");
    }

    #[test]
    fn a_hand_edited_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(marker(dir.path()), "../../etc/passwd").unwrap();
        assert_eq!(read_active(dir.path()), ROOT);
    }
}
