//! OVA archives: a tar of the OVF descriptor, its manifest, and the disks.
//!
//! The archive is read once, as a stream. The `.ovf` must be its first file (OVF 1.x and
//! 2.x require it); it is read into memory and decides what else is kept: the files its
//! References name, the extents and parents of those VMDKs (read from their first bytes),
//! and the `.mf` manifest. Everything else is skipped without being written. Each kept
//! file has a byte cap (its declared `ovf:size`, else its disk's capacity plus slack, and
//! never more than [`Limits::max_entry_bytes`]), enforced while it streams. SHA-1 and
//! SHA-256 are computed in the same pass so the manifest is checked before anything is
//! converted. With no destination (a dry run) nothing is written at all: kept files are
//! only hashed, and the first [`HEAD_BYTES`] of each are held in memory for inspection.
//! A file the OVF declares gzip-compressed is decompressed as it streams (capped by its
//! disk's capacity), its digests taken over the compressed bytes the manifest lists.
//! Only plain files with plain relative names are accepted: a link, a device, an absolute
//! name or a `..` is refused naming the archive entry, kept or not.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::gunzip;
use super::ovf;
use super::vmdk::{SECTOR, VmdkError};
use super::vmdk_check;
use stream::{CopyError, copy_entry, gunzip_entry, read_text};

/// Largest `.ovf` read into memory.
pub const MAX_DESCRIPTOR_BYTES: u64 = 16 << 20;
/// Largest `.mf` read into memory.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Bytes of each kept file held in memory (descriptors, sparse headers).
pub const HEAD_BYTES: usize = 4 << 20;
/// Default of [`Limits::max_entry_bytes`]: 1 TiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 40;
/// Slack over a disk's capacity for VMDK metadata: 1/8 plus 16 MiB.
fn with_slack(capacity: u64) -> u64 {
    capacity
        .saturating_add(capacity / 8)
        .saturating_add(16 << 20)
}

/// Caps on what an OVA may make ivctl write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// No kept file may exceed this many bytes.
    pub max_entry_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// Why an OVA could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum OvaError {
    /// Reading the archive failed (truncated or not a tar).
    #[error("{ova}: not a readable tar archive")]
    Archive {
        /// The OVA.
        ova: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An entry that could write outside the extraction directory.
    #[error("{ova}: entry {entry:?} points outside the bundle")]
    Traversal {
        /// The OVA.
        ova: PathBuf,
        /// The entry's name.
        entry: String,
    },
    /// An entry that is not a plain file.
    #[error("{ova}: entry {entry:?} is not a regular file")]
    NotAFile {
        /// The OVA.
        ova: PathBuf,
        /// The entry's name.
        entry: String,
    },
    /// A kept entry larger than its cap.
    #[error("{ova}: entry {entry:?} is larger than {limit} bytes ({why}); refusing to unpack it")]
    TooLarge {
        /// The OVA.
        ova: PathBuf,
        /// The entry.
        entry: String,
        /// Its cap in bytes.
        limit: u64,
        /// Where the cap comes from.
        why: String,
    },
    /// Writing an extracted file failed (a full disk, say).
    #[error("{file}: cannot write while extracting {entry:?}")]
    Write {
        /// The file being written.
        file: PathBuf,
        /// The entry.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The first file is not an `.ovf`.
    #[error("{0}: the archive's first file is not an .ovf descriptor (OVF requires it first)")]
    NoDescriptor(PathBuf),
    /// The OVF does not parse, so nothing it references is known.
    #[error("{ova}: {source}")]
    Ovf {
        /// The OVA.
        ova: PathBuf,
        /// What is wrong.
        #[source]
        source: ovf::OvfError,
    },
    /// A kept VMDK whose descriptor is refused as soon as it is read.
    #[error("{ova}: entry {entry:?}: {source}")]
    Vmdk {
        /// The OVA.
        ova: PathBuf,
        /// The entry.
        entry: String,
        /// What is wrong.
        #[source]
        source: VmdkError,
    },
    /// A gzip-compressed entry that does not decompress within its cap.
    #[error("{ova}: {source}")]
    Gunzip {
        /// The OVA.
        ova: PathBuf,
        /// What is wrong.
        #[source]
        source: gunzip::GunzipError,
    },
    /// The `.ovf` or `.mf` is not UTF-8 text.
    #[error("{ova}: entry {entry:?} is not UTF-8 text")]
    NotText {
        /// The OVA.
        ova: PathBuf,
        /// The entry.
        entry: String,
    },
}

/// A read OVA.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    /// The `.ovf` descriptor's entry name.
    pub ovf_name: String,
    /// Its text.
    pub ovf_text: String,
    /// The `.mf` manifest's entry name and text, when present.
    pub manifest: Option<(String, String)>,
    /// SHA-1 and SHA-256 (lower-case hex) of the descriptor, manifest and kept files.
    pub digests: BTreeMap<String, (String, String)>,
    /// The first [`HEAD_BYTES`] of each kept file (filled only when nothing is extracted).
    pub heads: BTreeMap<String, Vec<u8>>,
    /// Entries skipped because nothing references them.
    pub skipped: Vec<String>,
}

/// A plain relative entry name, or `None` when it could escape.
fn plain_name(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpack what `ova`'s OVF references into `dest` (an existing, empty directory), or with
/// no `dest` only read and hash it.
/// `opts` are the deployer's OVF choices (property values decide disk capacities, hence
/// caps).
pub fn extract(
    ova: &Path,
    dest: Option<&Path>,
    limits: Limits,
    opts: &ovf::ParseOptions,
) -> Result<Extracted, OvaError> {
    let file = File::open(ova).map_err(|source| OvaError::Archive {
        ova: ova.to_owned(),
        source,
    })?;
    extract_from(file, ova, dest, limits, opts)
}

/// A kept entry: its byte cap and where it comes from, and for a gzip-compressed file the
/// cap on its decompressed bytes.
#[derive(Clone, Debug)]
struct Want {
    cap: u64,
    why: String,
    gunzip: Option<(u64, String)>,
}

/// What is kept, by entry name.
type Wanted = BTreeMap<String, Want>;

/// The cap of a disk file's (decompressed) bytes: its disk's capacity plus slack, else
/// `--max-ova-entry`.
pub(crate) fn disk_cap(capacity: Option<u64>, limits: Limits) -> (u64, String) {
    let (cap, why) = match capacity {
        Some(c) => (with_slack(c), format!("its disk's capacity {c} plus slack")),
        None => (limits.max_entry_bytes, "--max-ova-entry".to_owned()),
    };
    (cap.min(limits.max_entry_bytes), why)
}

/// The largest declared capacity of the disks stored in `href`.
pub(crate) fn capacity_of(pkg: &ovf::OvfPackage, href: &str) -> Option<u64> {
    pkg.vm
        .disks
        .iter()
        .filter(|d| d.file.as_deref() == Some(href))
        .filter_map(|d| d.capacity_bytes)
        .max()
}

/// The files an OVF references with their caps.
fn wanted_by(pkg: &ovf::OvfPackage, limits: Limits) -> Wanted {
    let mut wanted = Wanted::new();
    for f in &pkg.files {
        let disk = disk_cap(capacity_of(pkg, &f.href), limits);
        let gzip = f.compression == ovf::Compression::Gzip;
        // A compressed file's ovf:size is its compressed size; its disk's capacity caps
        // what it inflates to.
        let (cap, why) = match f.size {
            Some(size) => (size.min(limits.max_entry_bytes), "its ovf:size".to_owned()),
            None if gzip => (limits.max_entry_bytes, "--max-ova-entry".to_owned()),
            None => disk.clone(),
        };
        let gunzip = gzip.then_some(disk);
        wanted.insert(normalize(&f.href), Want { cap, why, gunzip });
    }
    wanted
}

/// Entry names compared the way `plain_name` writes them.
fn normalize(name: &str) -> String {
    plain_name(Path::new(name))
        .map_or_else(|| name.to_owned(), |p| p.to_string_lossy().into_owned())
}

/// The extents and parent a kept VMDK names (from its first bytes), with their caps. A
/// descriptor QEMU would read another parent from is refused here, before anything else is
/// unpacked; other unreadable heads are left to the disk inspection.
fn wanted_by_vmdk(
    head: &[u8],
    entry: &str,
    wanted: &mut Wanted,
    limits: Limits,
) -> Result<(), VmdkError> {
    let d = match vmdk_check::descriptor_in(head) {
        Ok(d) => d,
        Err(e @ VmdkError::HiddenParentHint { .. }) => return Err(e),
        Err(_) => return Ok(()),
    };
    let dir = Path::new(entry).parent().unwrap_or(Path::new(""));
    let capacity = d.capacity_bytes().unwrap_or(u64::MAX);
    for e in &d.extents {
        let Some(file) = &e.file else { continue };
        let bytes = e.offset.saturating_add(e.sectors).saturating_mul(SECTOR);
        let cap = with_slack(bytes).min(limits.max_entry_bytes);
        let why = format!("the extent size in {entry}");
        wanted
            .entry(normalize(&dir.join(file).to_string_lossy()))
            .or_insert(Want {
                cap,
                why,
                gunzip: None,
            });
    }
    if let Some(parent) = &d.parent_file_name_hint {
        let cap = with_slack(capacity).min(limits.max_entry_bytes);
        wanted
            .entry(normalize(&dir.join(parent).to_string_lossy()))
            .or_insert(Want {
                cap,
                why: format!("the capacity of {entry}"),
                gunzip: None,
            });
    }
    Ok(())
}

/// Unpack a tar stream; `ova` names it in errors.
pub fn extract_from(
    reader: impl Read,
    ova: &Path,
    dest: Option<&Path>,
    limits: Limits,
    opts: &ovf::ParseOptions,
) -> Result<Extracted, OvaError> {
    let archive_err = |source| OvaError::Archive {
        ova: ova.to_owned(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    let mut x = Extracted::default();
    let mut wanted: Option<Wanted> = None;
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let Some(rel) = check_entry(&entry, ova)? else {
            continue;
        };
        let name = rel.to_string_lossy().into_owned();
        let ext = rel
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let Some(want) = &mut wanted else {
            if ext.as_deref() != Some("ovf") {
                return Err(OvaError::NoDescriptor(ova.to_owned()));
            }
            let (text, digests) = read_text(&mut entry, ova, &name, MAX_DESCRIPTOR_BYTES)?;
            let pkg = ovf::parse_with(&text, opts).map_err(|source| OvaError::Ovf {
                ova: ova.to_owned(),
                source,
            })?;
            wanted = Some(wanted_by(&pkg, limits));
            x.digests.insert(name.clone(), digests);
            x.ovf_name = name;
            x.ovf_text = text;
            continue;
        };
        let stem = Path::new(&x.ovf_name).with_extension("mf");
        if rel == stem && x.manifest.is_none() {
            let (text, digests) = read_text(&mut entry, ova, &name, MAX_MANIFEST_BYTES)?;
            x.digests.insert(name.clone(), digests);
            x.manifest = Some((name, text));
            continue;
        }
        let Some(Want { cap, why, gunzip }) = want.get(&name).cloned() else {
            x.skipped.push(name);
            continue;
        };
        let too_large = || OvaError::TooLarge {
            ova: ova.to_owned(),
            entry: name.clone(),
            limit: cap,
            why: why.clone(),
        };
        if entry.size() > cap {
            return Err(too_large());
        }
        let target = dest.map(|d| d.join(&rel));
        let (sha1, sha256, head) = match gunzip {
            Some((limit, why)) => {
                let t = gunzip::Target {
                    shown: Path::new(&name),
                    dest: target.as_deref(),
                    cap: limit,
                    why: &why,
                    head_len: HEAD_BYTES,
                };
                gunzip_entry(&mut entry, ova, t)?
            }
            None => {
                copy_entry(&mut entry, ova, &name, target.as_deref(), cap).map_err(|e| match e {
                    CopyError::TooLarge => too_large(),
                    CopyError::Ova(e) => e,
                })?
            }
        };
        wanted_by_vmdk(&head, &name, want, limits).map_err(|source| OvaError::Vmdk {
            ova: ova.to_owned(),
            entry: name.clone(),
            source,
        })?;
        if dest.is_none() {
            x.heads.insert(name.clone(), head);
        }
        x.digests.insert(name, (sha1, sha256));
    }
    if wanted.is_none() {
        return Err(OvaError::NoDescriptor(ova.to_owned()));
    }
    Ok(x)
}

/// The entry's plain name, `None` for entries that carry no file (directories, PAX and
/// GNU long-name records), or why it is refused.
fn check_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    ova: &Path,
) -> Result<Option<PathBuf>, OvaError> {
    let raw = entry
        .path()
        .map_err(|source| OvaError::Archive {
            ova: ova.to_owned(),
            source,
        })?
        .into_owned();
    let shown = raw.to_string_lossy().into_owned();
    let traversal = || OvaError::Traversal {
        ova: ova.to_owned(),
        entry: shown.clone(),
    };
    let kind = entry.header().entry_type();
    if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() {
        return Ok(None);
    }
    let rel = plain_name(&raw).ok_or_else(traversal)?;
    if kind.is_dir() {
        return Ok(None);
    }
    if kind.is_symlink() || kind.is_hard_link() {
        return Err(traversal());
    }
    // GNU sparse entries (tar --sparse, and the tar crate's default for files with
    // holes) read back expanded, so they are plain files here.
    if !(kind.is_file() || kind.is_gnu_sparse() || kind.is_contiguous()) {
        return Err(OvaError::NotAFile {
            ova: ova.to_owned(),
            entry: shown,
        });
    }
    Ok(Some(rel))
}

mod stream;
#[cfg(test)]
mod tests;
