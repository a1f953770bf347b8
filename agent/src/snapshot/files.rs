//! Where a layer of the [`super::chain`] tree lives: pure path arithmetic, no I/O.
//!
//! The root layer is the VM's original disk file (`disk-<name>.qcow2`, see
//! [`crate::storage::layout::disk_file`]); every other layer of a disk is
//! `disk-<name>.<layer id>.qcow2` in the same VM directory. Layer ids are made from the uid of
//! the object that asked for the layer, so an agent that restarts half-way finds the layer it
//! had started and carries on with it instead of making a second one.

use super::chain::ROOT;
use crate::storage::layout;
use std::path::{Path, PathBuf};

/// Who made a layer: the prefix of its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The active layer a snapshot puts on top of the one it freezes.
    Snapshot,
    /// The active layer a restore puts on top of a snapshot's layer.
    Restore,
}

/// The id of the layer the object with this uid adds, or `None` for a uid that is not a
/// plain name (uids come from the API server; this is belt and braces).
pub fn layer_id(origin: Origin, uid: &str) -> Option<String> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let prefix = match origin {
        Origin::Snapshot => "s",
        Origin::Restore => "r",
    };
    ok.then(|| format!("{prefix}-{uid}"))
}

/// The file of layer `id` of disk `disk`.
pub fn layer_file(vm_dir: &Path, disk: &str, id: &str) -> PathBuf {
    if id == ROOT {
        return layout::disk_file(vm_dir, disk);
    }
    let base = layout::disk_file(vm_dir, disk);
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    vm_dir.join(format!("{stem}.{id}.qcow2"))
}

/// The disk name and layer id of a file name in a VM directory, when it is a layer file.
pub fn parse_layer_file(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("disk-")?.strip_suffix(".qcow2")?;
    match rest.split_once('.') {
        None if is_label(rest) => Some((rest.to_owned(), ROOT.to_owned())),
        None => None,
        Some((disk, id)) if is_label(disk) && is_label(id) && id != ROOT => {
            Some((disk.to_owned(), id.to_owned()))
        }
        Some(_) => None,
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The name a layer file is made under before it is renamed into place, so a crash never
/// leaves a half-made layer under a layer's name.
pub fn staging_file(layer: &Path) -> PathBuf {
    let name = layer
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    layer.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6c1f0a1e-1111-4000-8000-000000000001";

    #[test]
    fn the_root_layer_is_the_original_disk_file() {
        let vm = Path::new("/s/vms/u");
        assert_eq!(layer_file(vm, "data", ROOT), layout::disk_file(vm, "data"));
    }

    #[test]
    fn layer_files_round_trip_through_their_names() {
        let vm = Path::new("/s/vms/u");
        let id = layer_id(Origin::Snapshot, UID).unwrap();
        let f = layer_file(vm, "data", &id);
        assert_eq!(f.parent(), Some(vm));
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("disk-data.s-{UID}.qcow2"));
        assert_eq!(parse_layer_file(name), Some(("data".into(), id)));
        assert_eq!(
            parse_layer_file("disk-root.qcow2"),
            Some(("root".into(), ROOT.into()))
        );
    }

    #[test]
    fn other_files_are_not_layers() {
        for name in [
            "seed.iso",
            "owner",
            ".disk-data.s-x.qcow2.tmp",
            "disk-data.s-x.qcow2.tmp",
            "disk-data.base.qcow2",
            "disk-data.a.b.qcow2",
            "disk-data..qcow2",
            "disk-Data.s-x.qcow2",
        ] {
            assert_eq!(parse_layer_file(name), None, "{name}");
        }
    }

    #[test]
    fn hostile_uids_make_no_layer() {
        for uid in ["", "../x", "a/b", "A", "x.y", &"a".repeat(65)] {
            assert_eq!(layer_id(Origin::Restore, uid), None, "{uid:?}");
        }
        assert_eq!(layer_id(Origin::Restore, UID), Some(format!("r-{UID}")));
    }

    #[test]
    fn staging_files_are_hidden_beside_the_layer() {
        let f = staging_file(Path::new("/s/vms/u/disk-a.s-1.qcow2"));
        assert_eq!(f, Path::new("/s/vms/u/.disk-a.s-1.qcow2.tmp"));
    }
}
