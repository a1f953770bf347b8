//! The References and the DiskSection: which files exist, which disks they hold, and the
//! capacity of each disk (in programmatic units, possibly through a `${property}`).
//!
//! A Disk with no `ovf:fileRef` is a new empty disk (DSP0243 §9.1: "a new virtual disk is
//! created"); it becomes a blank disk of its capacity.

use std::collections::BTreeMap;

use super::properties::{VappProperty, resolve};
use super::{Compression, OVF, OVF_ATTR, OvfError, OvfFile};
use crate::import::xml::Element;

/// A DiskSection entry: its file (none for a new empty disk) and capacity.
#[derive(Clone, Debug)]
pub(super) struct OvfDisk {
    pub href: Option<String>,
    pub capacity: Option<u64>,
}

/// Every `File` of the References.
pub(super) fn read_references(root: &Element) -> Result<Vec<OvfFile>, OvfError> {
    let Some(refs) = root.child(OVF, "References") else {
        return Ok(Vec::new());
    };
    refs.children_named(OVF, "File")
        .map(|f| {
            let href = f
                .attr(OVF_ATTR, "href")
                .ok_or(OvfError::Missing("File ovf:href"))?
                .to_owned();
            let compression = match f.attr(OVF_ATTR, "compression").map(str::trim) {
                None | Some("") | Some("identity") => Compression::None,
                Some(c) if c.eq_ignore_ascii_case("gzip") => Compression::Gzip,
                Some(c) => {
                    return Err(OvfError::Compression {
                        href,
                        compression: c.to_owned(),
                    });
                }
            };
            Ok(OvfFile {
                id: f
                    .attr(OVF_ATTR, "id")
                    .ok_or(OvfError::Missing("File ovf:id"))?
                    .to_owned(),
                href,
                size: f.attr(OVF_ATTR, "size").and_then(|s| s.trim().parse().ok()),
                compression,
            })
        })
        .collect()
}

/// The DiskSection's disks by `ovf:diskId`.
pub(super) fn read_disk_section(
    root: &Element,
    files: &[OvfFile],
    props: &[VappProperty],
) -> Result<BTreeMap<String, OvfDisk>, OvfError> {
    let mut out = BTreeMap::new();
    let Some(section) = root.child(OVF, "DiskSection") else {
        return Ok(out);
    };
    for d in section.children_named(OVF, "Disk") {
        let id = d
            .attr(OVF_ATTR, "diskId")
            .ok_or(OvfError::Missing("Disk ovf:diskId"))?;
        let href = match d.attr(OVF_ATTR, "fileRef").filter(|r| !r.is_empty()) {
            Some(file_ref) => Some(
                files
                    .iter()
                    .find(|f| f.id == file_ref)
                    .ok_or_else(|| OvfError::Dangling {
                        what: "Disk ovf:fileRef",
                        id: file_ref.into(),
                    })?
                    .href
                    .clone(),
            ),
            None => None,
        };
        let capacity = match d.attr(OVF_ATTR, "capacity") {
            Some(c) => Some(capacity(
                &resolve(c, props, "Disk ovf:capacity")?,
                d.attr(OVF_ATTR, "capacityAllocationUnits")
                    .unwrap_or("byte"),
            )?),
            None if href.is_none() => return Err(OvfError::Missing("new empty Disk ovf:capacity")),
            None => None,
        };
        out.insert(id.to_owned(), OvfDisk { href, capacity });
    }
    Ok(out)
}

/// `quantity` × `units` in bytes, refused when it overflows.
pub(super) fn capacity(quantity: &str, units_text: &str) -> Result<u64, OvfError> {
    let n: u64 = quantity.trim().parse().map_err(|_| OvfError::BadValue {
        what: "Disk capacity",
        value: quantity.into(),
    })?;
    let unit = units(units_text)?;
    n.checked_mul(unit).ok_or_else(|| OvfError::BadValue {
        what: "Disk capacity in bytes",
        value: format!("{quantity} × {unit}"),
    })
}

/// Programmatic units (DSP0004): `byte`, `byte * 2^20`, `byte * 1024`, and the common
/// `MegaBytes`/`GigaBytes` spellings.
pub fn units(text: &str) -> Result<u64, OvfError> {
    let bad = || OvfError::BadValue {
        what: "allocation units",
        value: text.into(),
    };
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "megabytes" | "mb" => return Ok(1 << 20),
        "gigabytes" | "gb" => return Ok(1 << 30),
        "kilobytes" | "kb" => return Ok(1 << 10),
        _ => {}
    }
    let mut parts = t.split('*').map(str::trim);
    if parts.next() != Some("byte") {
        return Err(bad());
    }
    let mut unit: u64 = 1;
    for factor in parts {
        let f = match factor.split_once('^') {
            Some((base, exp)) => {
                let base: u64 = base.trim().parse().map_err(|_| bad())?;
                let exp: u32 = exp.trim().parse().map_err(|_| bad())?;
                base.checked_pow(exp).ok_or_else(bad)?
            }
            None => factor.parse().map_err(|_| bad())?,
        };
        unit = unit.checked_mul(f).ok_or_else(bad)?;
    }
    Ok(unit)
}
