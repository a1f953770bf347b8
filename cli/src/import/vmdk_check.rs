//! Opening a VMDK from a bundle and proving its extents are whole before conversion.
//!
//! `qemu-img` reads a truncated VMDK as zeros without complaint, so a cut-off download
//! would convert "successfully" into a corrupt disk. This module walks the metadata the
//! way a reader would: flat extents must be as long as the descriptor says; sparse extents
//! must have a sane header, and every grain directory, grain table and grain they point to
//! must lie inside the file. All reads go through [`ReadAt`], so the walk is tested on
//! in-memory images.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::bundle::{self, BundleError};
use super::vmdk::{
    Descriptor, ExtentKind, GD_AT_END, QEMU_DESC_BYTES, SECTOR, SparseHeader, VmdkError,
};

/// Most snapshot levels followed through `parentFileNameHint`.
const MAX_CHAIN: usize = 32;
/// Largest plain-text descriptor accepted.
const MAX_DESCRIPTOR: u64 = 64 * 1024;

/// Why a disk cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A descriptor or extent name outside the bundle, or a missing file.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The descriptor does not parse.
    #[error("{file}: {source}")]
    Descriptor {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        #[source]
        source: VmdkError,
    },
    /// The file is shorter than its metadata says.
    #[error("{file}: truncated or corrupt: {what}")]
    Truncated {
        /// The file.
        file: PathBuf,
        /// What lies beyond its end.
        what: String,
    },
    /// A snapshot chain too deep or looping.
    #[error("{file}: snapshot chain deeper than {MAX_CHAIN} levels")]
    ChainTooDeep {
        /// The file.
        file: PathBuf,
    },
    /// Reading failed.
    #[error("{file}: cannot read")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Positional reads, so the walk can run on files and on buffers.
pub trait ReadAt {
    /// Length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Fill `buf` from `offset`; an error when the range is not all there.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = self
            .get(start..start.saturating_add(buf.len()))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A VMDK that passed inspection.
#[derive(Clone, Debug)]
pub struct DiskInfo {
    /// The file to hand to `qemu-img` (descriptor or monolithic file).
    pub path: PathBuf,
    /// Its descriptor.
    pub descriptor: Descriptor,
    /// Virtual size in bytes.
    pub capacity_bytes: u64,
    /// Delta disks above the base (0 for a disk without snapshots).
    pub snapshot_levels: usize,
    /// Every file of the disk: descriptors of each level and their extents.
    pub files: Vec<PathBuf>,
}

/// Open the VMDK named `name` in `descriptor_file` (relative to `root`), check it and its
/// parents, and return what conversion needs.
pub fn inspect(root: &Path, descriptor_file: &Path, name: &str) -> Result<DiskInfo, DiskError> {
    let path = bundle::resolve(root, descriptor_file, name)?;
    let mut current = path.clone();
    let mut top: Option<Descriptor> = None;
    let mut files = Vec::new();
    for level in 0..=MAX_CHAIN {
        let descriptor = open_and_check(root, &current, &mut files)?;
        let parent = descriptor.parent_file_name_hint.clone();
        if top.is_none() {
            top = Some(descriptor.clone());
        }
        let Some(parent) = parent.filter(|_| !descriptor.is_rdm()) else {
            let descriptor = top.unwrap_or(descriptor);
            let capacity_bytes =
                descriptor
                    .capacity_bytes()
                    .map_err(|source| DiskError::Descriptor {
                        file: path.clone(),
                        source,
                    })?;
            return Ok(DiskInfo {
                path,
                descriptor,
                capacity_bytes,
                snapshot_levels: level,
                files,
            });
        };
        current = bundle::resolve_beside(root, &current, &parent)?;
    }
    Err(DiskError::ChainTooDeep { file: path })
}

/// The descriptor in a VMDK's first bytes (embedded or the whole buffer), checked
/// against QEMU's reading of the parent hint; no grain walk.
pub fn descriptor_in(head: &[u8]) -> Result<Descriptor, VmdkError> {
    match descriptor_of(head) {
        Ok((d, _)) => Ok(d),
        Err(Found::Bad(e)) => Err(e),
        Err(_) => Err(VmdkError::NotADescriptor),
    }
}

/// A disk of an OVA read with nothing extracted (a dry run): what its first bytes say.
/// Extents are not opened and grains not walked; a parent counts as one level.
pub fn inspect_head(
    root: &Path,
    descriptor_file: &Path,
    name: &str,
    heads: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<DiskInfo, DiskError> {
    let path = bundle::confine(root, descriptor_file, name)?;
    let head = heads.get(name).ok_or_else(|| BundleError::Missing {
        descriptor: descriptor_file.to_owned(),
        name: name.to_owned(),
    })?;
    let bad = |source| DiskError::Descriptor {
        file: path.clone(),
        source,
    };
    let descriptor = match descriptor_of(head.as_slice()) {
        Ok((d, _)) => d,
        Err(Found::Bad(e)) => return Err(bad(e)),
        Err(other) => {
            return Err(DiskError::Truncated {
                file: path.clone(),
                what: String::from(other),
            });
        }
    };
    if !descriptor.is_rdm() {
        descriptor.check_supported().map_err(bad)?;
    }
    let capacity_bytes = descriptor.capacity_bytes().map_err(bad)?;
    if let Some(parent) = &descriptor.parent_file_name_hint {
        bundle::confine_beside(root, &path, parent)?;
    }
    Ok(DiskInfo {
        snapshot_levels: usize::from(descriptor.has_parent()),
        path,
        descriptor,
        capacity_bytes,
        files: Vec::new(),
    })
}

/// What a VMDK's own bytes say, with no other file opened: its descriptor (embedded or the
/// whole buffer), checked against QEMU's reading of the parent hint, and for a sparse
/// extent with an embedded descriptor, the grain walk. The fuzz targets drive this.
pub fn check_image<R: ReadAt + ?Sized>(r: &R) -> Result<Descriptor, String> {
    let (descriptor, header) = descriptor_of(r)?;
    if let Some(h) = header {
        check_sparse(r, &h)?;
    }
    descriptor.capacity_bytes().map_err(|e| e.to_string())?;
    Ok(descriptor)
}

/// Read one VMDK's descriptor (plain or embedded) and check each of its extents.
fn open_and_check(
    root: &Path,
    path: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Descriptor, DiskError> {
    let io = |source| DiskError::Io {
        file: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    files.push(path.to_owned());
    let (descriptor, header) = read_descriptor(&file, path)?;
    if descriptor.is_rdm() {
        return Ok(descriptor);
    }
    descriptor
        .check_supported()
        .map_err(|source| DiskError::Descriptor {
            file: path.to_owned(),
            source,
        })?;
    for extent in &descriptor.extents {
        let Some(name) = extent.file.as_deref() else {
            continue;
        };
        // A sparse or stream-optimised disk whose descriptor is embedded is its own one
        // extent whatever name the descriptor kept (the file is often renamed after it was
        // made), as QEMU and VMware read it; other extents are files beside the descriptor.
        let embedded =
            header.is_some() && descriptor.extents.len() == 1 && extent.kind == ExtentKind::Sparse;
        let extent_path = if embedded {
            path.to_owned()
        } else {
            bundle::resolve_beside(root, path, name)?
        };
        if !files.contains(&extent_path) {
            files.push(extent_path.clone());
        }
        let same_file = extent_path.canonicalize().ok() == path.canonicalize().ok();
        let ext_io = |source| DiskError::Io {
            file: extent_path.clone(),
            source,
        };
        match extent.kind {
            ExtentKind::Flat | ExtentKind::Vmfs => {
                let len = std::fs::metadata(&extent_path).map_err(ext_io)?.len();
                let need = extent
                    .offset
                    .checked_add(extent.sectors)
                    .and_then(|s| s.checked_mul(SECTOR))
                    .ok_or_else(|| DiskError::Descriptor {
                        file: path.to_owned(),
                        source: VmdkError::OutOfRange("flat extent offset plus size"),
                    })?;
                if len < need {
                    return Err(DiskError::Truncated {
                        file: extent_path,
                        what: format!("flat extent needs {need} bytes, file has {len}"),
                    });
                }
            }
            ExtentKind::Sparse => {
                let h = match (same_file, header) {
                    (true, Some(h)) => (h, file.try_clone().map_err(io)?),
                    _ => {
                        let f = File::open(&extent_path).map_err(ext_io)?;
                        let mut buf = [0u8; SECTOR as usize];
                        ReadAt::read_exact_at(&f, &mut buf, 0).map_err(|_| {
                            DiskError::Truncated {
                                file: extent_path.clone(),
                                what: "no sparse header".into(),
                            }
                        })?;
                        let h =
                            SparseHeader::parse(&buf).map_err(|source| DiskError::Descriptor {
                                file: extent_path.clone(),
                                source,
                            })?;
                        (h, f)
                    }
                };
                if h.0.capacity != extent.sectors {
                    return Err(DiskError::Truncated {
                        file: extent_path,
                        what: format!(
                            "header capacity {} sectors, descriptor says {}",
                            h.0.capacity, extent.sectors
                        ),
                    });
                }
                check_sparse(&h.1, &h.0).map_err(|what| DiskError::Truncated {
                    file: extent_path.clone(),
                    what,
                })?;
            }
            ExtentKind::Zero | ExtentKind::Rdm => {}
        }
    }
    Ok(descriptor)
}

/// The descriptor of a file that is either a text descriptor or a sparse extent with one
/// embedded, and the sparse header when there is one.
fn read_descriptor(
    file: &File,
    path: &Path,
) -> Result<(Descriptor, Option<SparseHeader>), DiskError> {
    descriptor_of(file).map_err(|e| match e {
        Found::Io(source) => DiskError::Io {
            file: path.to_owned(),
            source,
        },
        Found::Bad(source) => DiskError::Descriptor {
            file: path.to_owned(),
            source,
        },
        Found::Truncated(what) => DiskError::Truncated {
            file: path.to_owned(),
            what: what.into(),
        },
    })
}

/// Why [`descriptor_of`] found no descriptor.
#[derive(Debug)]
enum Found {
    Io(std::io::Error),
    Bad(VmdkError),
    Truncated(&'static str),
}

impl From<Found> for String {
    fn from(f: Found) -> Self {
        match f {
            Found::Io(e) => e.to_string(),
            Found::Bad(e) => e.to_string(),
            Found::Truncated(w) => w.to_owned(),
        }
    }
}

/// Read the descriptor from positional bytes; refuse it when QEMU would read another parent.
fn descriptor_of<R: ReadAt + ?Sized>(r: &R) -> Result<(Descriptor, Option<SparseHeader>), Found> {
    let len = r.size().map_err(Found::Io)?;
    let mut first = vec![0u8; len.min(SECTOR) as usize];
    r.read_exact_at(&mut first, 0).map_err(Found::Io)?;
    if SparseHeader::is_sparse(&first) {
        let header = SparseHeader::parse(&first).map_err(Found::Bad)?;
        if header.descriptor_offset == 0 {
            return Err(Found::Bad(VmdkError::BadHeader(
                "sparse extent without an embedded descriptor; give its descriptor file",
            )));
        }
        let at = header.descriptor_byte_offset().map_err(Found::Bad)?;
        // parse() capped descriptor_size at 4096 sectors: the product fits.
        let declared = header.descriptor_size * SECTOR;
        if at.checked_add(declared).is_none_or(|end| end > len) {
            return Err(Found::Truncated("embedded descriptor lies beyond the end"));
        }
        // QEMU reads QEMU_DESC_BYTES whatever the declared size: scan what it scans.
        let scanned = declared.max(QEMU_DESC_BYTES).min(len - at);
        let mut raw = vec![0u8; scanned as usize];
        r.read_exact_at(&mut raw, at).map_err(Found::Io)?;
        let text = String::from_utf8_lossy(&raw[..declared as usize]);
        let descriptor = Descriptor::parse(&text).map_err(Found::Bad)?;
        descriptor.check_qemu_parent(&raw).map_err(Found::Bad)?;
        return Ok((descriptor, Some(header)));
    }
    if len > MAX_DESCRIPTOR {
        return Err(Found::Bad(VmdkError::NotADescriptor));
    }
    let mut raw = vec![0u8; len as usize];
    r.read_exact_at(&mut raw, 0).map_err(Found::Io)?;
    let text = std::str::from_utf8(&raw).map_err(|_| Found::Bad(VmdkError::NotADescriptor))?;
    let descriptor = Descriptor::parse(text).map_err(Found::Bad)?;
    descriptor.check_qemu_parent(&raw).map_err(Found::Bad)?;
    Ok((descriptor, None))
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Walk a sparse extent's grain directory and tables; the error says what is missing.
pub fn check_sparse<R: ReadAt + ?Sized>(r: &R, header: &SparseHeader) -> Result<(), String> {
    let len = r.size().map_err(|e| e.to_string())?;
    let mut h = *header;
    if h.gd_offset == GD_AT_END {
        // streamOptimized: the real header is the footer, 1024 bytes before the end
        // (footer marker, footer header, end-of-stream marker).
        if len < 3 * SECTOR {
            return Err("no footer (file too short)".into());
        }
        let mut buf = [0u8; SECTOR as usize];
        r.read_exact_at(&mut buf, len - 2 * SECTOR)
            .map_err(|_| "footer unreadable".to_owned())?;
        h = SparseHeader::parse(&buf)
            .map_err(|_| "no footer at the end of the stream".to_owned())?;
        if h.gd_offset == GD_AT_END || h.capacity != header.capacity {
            return Err("footer does not match the header".into());
        }
    }
    let too_large = || "grain directory too large".to_owned();
    let entries = h.gd_entries().ok_or_else(too_large)?;
    let gd_bytes = entries.checked_mul(4).ok_or_else(too_large)?;
    let gd_at = h
        .gd_offset
        .checked_mul(SECTOR)
        .ok_or_else(|| "grain directory offset out of range".to_owned())?;
    if gd_at.checked_add(gd_bytes).is_none_or(|end| end > len) {
        return Err(format!(
            "grain directory at byte {gd_at} lies beyond the end ({len} bytes)"
        ));
    }
    // Both fit in memory now: the directory lies inside the file.
    let (entries, gd_bytes) = (entries as usize, gd_bytes as usize);
    let mut gd = vec![0u8; gd_bytes];
    r.read_exact_at(&mut gd, gd_at).map_err(|e| e.to_string())?;
    let gt_len = h.num_gtes_per_gt as usize;
    let mut gt = vec![0u8; gt_len * 4];
    let grain_bytes = h.grain_size * SECTOR;
    // A table shared by several directory entries is walked once: the walk stays linear in
    // the file's size however the directory is crafted.
    let mut walked = std::collections::BTreeSet::new();
    for i in 0..entries {
        let gde = u64::from(u32_at(&gd, i));
        if gde == 0 || !walked.insert(gde) {
            continue;
        }
        let gt_at = gde * SECTOR;
        if r.read_exact_at(&mut gt, gt_at).is_err() {
            return Err(format!(
                "grain table {i} at byte {gt_at} lies beyond the end ({len} bytes)"
            ));
        }
        for j in 0..gt_len {
            let gte = u64::from(u32_at(&gt, j));
            if gte <= 1 {
                continue; // unallocated, or a zeroed grain
            }
            let at = gte * SECTOR;
            let end = if h.is_stream_optimized() {
                let mut marker = [0u8; 12];
                if r.read_exact_at(&mut marker, at).is_err() {
                    return Err(format!(
                        "grain {} at byte {at} lies beyond the end ({len} bytes)",
                        i * gt_len + j
                    ));
                }
                at + 12
                    + u64::from(u32::from_le_bytes([
                        marker[8], marker[9], marker[10], marker[11],
                    ]))
            } else {
                at + grain_bytes
            };
            if end > len {
                return Err(format!(
                    "grain {} ends at byte {end}, beyond the end ({len} bytes)",
                    i * gt_len + j
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::vmdk::SPARSE_MAGIC;

    /// A minimal hosted sparse image: header, GD at sector 1, one GT at sector 2,
    /// grains of 1 sector from sector 3.
    fn image(grains: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512 * (3 + grains as usize)];
        b[0..4].copy_from_slice(&SPARSE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[12..20].copy_from_slice(&u64::from(grains).to_le_bytes());
        b[20..28].copy_from_slice(&1u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b[56..64].copy_from_slice(&1u64.to_le_bytes());
        b[512..516].copy_from_slice(&2u32.to_le_bytes());
        for g in 0..grains {
            let at = 1024 + 4 * g as usize;
            b[at..at + 4].copy_from_slice(&(3 + g).to_le_bytes());
        }
        b
    }

    #[test]
    fn a_whole_sparse_image_passes_the_walk() {
        let img = image(4);
        let h = SparseHeader::parse(&img[..512]).unwrap();
        check_sparse(img.as_slice(), &h).unwrap();
    }

    #[test]
    fn a_sparse_image_cut_inside_its_grains_is_reported_as_truncated() {
        let mut img = image(4);
        img.truncate(img.len() - 100);
        let h = SparseHeader::parse(&img[..512]).unwrap();
        let err = check_sparse(img.as_slice(), &h).unwrap_err();
        assert!(err.contains("grain 3"), "{err}");
    }

    #[test]
    fn a_sparse_image_cut_before_its_grain_table_is_reported() {
        let img = image(4);
        let h = SparseHeader::parse(&img[..512]).unwrap();
        let err = check_sparse(&img[..1000], &h).unwrap_err();
        assert!(err.contains("grain table 0"), "{err}");
    }

    #[test]
    fn a_stream_with_its_grain_directory_in_the_footer_passes() {
        let mut img = image(4);
        img[8..12].copy_from_slice(&crate::import::vmdk::FLAG_COMPRESSED.to_le_bytes());
        let mut footer = img[..512].to_vec();
        img[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
        let mut marker = vec![0u8; 512];
        marker[12..16].copy_from_slice(&3u32.to_le_bytes());
        img.extend_from_slice(&marker);
        img.append(&mut footer);
        img.extend_from_slice(&[0u8; 512]);
        let h = SparseHeader::parse(&img[..512]).unwrap();
        assert!(h.is_stream_optimized());
        check_sparse(img.as_slice(), &h).unwrap();
    }

    #[test]
    fn a_stream_without_footer_is_reported() {
        let mut img = image(4);
        img[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
        let h = SparseHeader::parse(&img[..512]).unwrap();
        let err = check_sparse(img.as_slice(), &h).unwrap_err();
        assert!(err.contains("footer"), "{err}");
    }
}
