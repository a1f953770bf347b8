//! OVA archives: a tar of the OVF descriptor, its manifest, and the disks.
//!
//! Entries are extracted into a directory the caller owns (under `--out`, removed on
//! failure) while their SHA-1 and SHA-256 are computed in the same pass, so every file's
//! checksum in the manifest is checked before anything is converted. Only plain files with
//! plain relative names are accepted: a link, a device, an absolute name or a `..` is
//! refused naming the archive entry.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use super::bundle::{Algorithm, Hasher};

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
    /// No `.ovf` in the archive.
    #[error("{0}: the archive holds no .ovf descriptor")]
    NoDescriptor(PathBuf),
    /// Two `.ovf` files.
    #[error("{0}: the archive holds more than one .ovf descriptor")]
    SeveralDescriptors(PathBuf),
}

/// An extracted OVA.
#[derive(Clone, Debug)]
pub struct Extracted {
    /// The `.ovf` descriptor.
    pub ovf: PathBuf,
    /// The `.mf` manifest, when present.
    pub manifest: Option<PathBuf>,
    /// SHA-1 and SHA-256 (lower-case hex) of each extracted file, by entry name.
    pub digests: BTreeMap<String, (String, String)>,
}

/// Digest both ways while writing.
struct Tee<W> {
    inner: W,
    sha1: Hasher,
    sha256: Hasher,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha1.update(&buf[..n]);
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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

/// Unpack `ova` into `dest` (an existing, empty directory).
pub fn extract(ova: &Path, dest: &Path) -> Result<Extracted, OvaError> {
    let archive_err = |source| OvaError::Archive {
        ova: ova.to_owned(),
        source,
    };
    let file = File::open(ova).map_err(archive_err)?;
    extract_from(file, ova, dest)
}

/// Unpack a tar stream; `ova` names it in errors.
pub fn extract_from(reader: impl Read, ova: &Path, dest: &Path) -> Result<Extracted, OvaError> {
    let archive_err = |source| OvaError::Archive {
        ova: ova.to_owned(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    let mut ovfs = Vec::new();
    let mut manifest = None;
    let mut digests = BTreeMap::new();
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let raw = entry.path().map_err(archive_err)?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            plain_name(&raw).ok_or_else(|| OvaError::Traversal {
                ova: ova.to_owned(),
                entry: shown.clone(),
            })?;
            continue;
        }
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
        {
            continue;
        }
        let rel = plain_name(&raw).ok_or_else(|| OvaError::Traversal {
            ova: ova.to_owned(),
            entry: shown.clone(),
        })?;
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(OvaError::Traversal {
                ova: ova.to_owned(),
                entry: shown,
            });
        }
        // GNU sparse entries (tar --sparse, and the tar crate's default for files with
        // holes) read back expanded, so they are plain files here.
        if !(kind.is_file() || kind.is_gnu_sparse() || kind.is_contiguous()) {
            return Err(OvaError::NotAFile {
                ova: ova.to_owned(),
                entry: shown,
            });
        }
        let target = dest.join(&rel);
        let write_err = |source| OvaError::Write {
            file: target.clone(),
            entry: shown.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        let out = File::create_new(&target).map_err(write_err)?;
        let mut tee = Tee {
            inner: io::BufWriter::with_capacity(1 << 20, out),
            sha1: Hasher::new(Algorithm::Sha1),
            sha256: Hasher::new(Algorithm::Sha256),
        };
        // A read error here is a truncated archive; a write error is the destination's fault.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(archive_err)?;
            if n == 0 {
                break;
            }
            tee.write_all(&buf[..n]).map_err(write_err)?;
        }
        tee.flush().map_err(write_err)?;
        let Tee {
            inner,
            sha1,
            sha256,
        } = tee;
        let file = inner.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        let name = rel.to_string_lossy().into_owned();
        match rel
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("ovf") => ovfs.push(target.clone()),
            Some("mf") => manifest = Some(target.clone()),
            _ => {}
        }
        digests.insert(name, (sha1.finish_hex(), sha256.finish_hex()));
    }
    let ovf = match ovfs.len() {
        0 => return Err(OvaError::NoDescriptor(ova.to_owned())),
        1 => ovfs.remove(0),
        _ => return Err(OvaError::SeveralDescriptors(ova.to_owned())),
    };
    Ok(Extracted {
        ovf,
        manifest,
        digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses "..", so write the raw name as a hostile archive would.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_are_extracted_with_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("vm.ovf", b"<x/>"), ("vm.mf", b""), ("disk.vmdk", b"hello")]);
        let x = extract_from(tar.as_slice(), Path::new("vm.ova"), dir.path()).unwrap();
        assert_eq!(x.ovf, dir.path().join("vm.ovf"));
        assert_eq!(x.manifest, Some(dir.path().join("vm.mf")));
        let (sha1, sha256) = &x.digests["disk.vmdk"];
        assert_eq!(sha1, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
        assert_eq!(
            sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn an_entry_climbing_out_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("vm.ovf", b"<x/>"), ("../evil.vmdk", b"x")]);
        let err = extract_from(tar.as_slice(), Path::new("vm.ova"), dir.path()).unwrap_err();
        assert!(matches!(err, OvaError::Traversal { .. }), "{err}");
        assert!(err.to_string().contains("../evil.vmdk"), "{err}");
        assert!(!dir.path().parent().unwrap().join("evil.vmdk").exists());
    }

    #[test]
    fn a_truncated_archive_is_an_archive_error() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("vm.ovf", b"<x/>"), ("disk.vmdk", &[7u8; 4096])]);
        let err = extract_from(&tar[..1536], Path::new("vm.ova"), dir.path()).unwrap_err();
        assert!(matches!(err, OvaError::Archive { .. }), "{err}");
    }

    #[test]
    fn an_archive_without_descriptor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("disk.vmdk", b"x")]);
        assert!(matches!(
            extract_from(tar.as_slice(), Path::new("a.ova"), dir.path()),
            Err(OvaError::NoDescriptor(_))
        ));
    }
}
