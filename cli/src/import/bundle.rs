//! The files of a bundle: path confinement and the OVF manifest (`.mf`) checksums.
//!
//! Every file name found in a descriptor (OVF `href`, VMX `fileName`, VMDK extent,
//! `parentFileNameHint`, OVA tar entry) goes through [`resolve`], which refuses anything
//! that would leave the bundle's directory. [`Manifest`] parses `SHA256(file)= hex` lines;
//! [`verify_file`] streams a file through the digest.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha1::Digest as _;

/// Why a bundle file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file name that points outside the bundle.
    #[error("{descriptor}: {name:?} points outside the bundle")]
    Traversal {
        /// The descriptor that names it.
        descriptor: PathBuf,
        /// The file name as written.
        name: String,
    },
    /// A file the descriptor names but the bundle lacks.
    #[error("{descriptor}: {name:?} is missing")]
    Missing {
        /// The descriptor that names it.
        descriptor: PathBuf,
        /// The file name as written.
        name: String,
    },
    /// A manifest line that does not parse.
    #[error("{manifest}: line {line} is not `ALGO(file)= hex`")]
    ManifestSyntax {
        /// The manifest.
        manifest: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A checksum that does not match.
    #[error("{file}: {algorithm} checksum mismatch (manifest {expected}, file {actual})")]
    ChecksumMismatch {
        /// The file whose content differs.
        file: PathBuf,
        /// SHA1 or SHA256.
        algorithm: &'static str,
        /// Digest in the manifest.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// Reading a file failed.
    #[error("{file}: cannot read")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Check that a file name from a descriptor stays inside `root`: relative, no `..`, and
/// (when it exists) not a symlink leading out. Returns the path under `root`.
pub fn confine(root: &Path, descriptor: &Path, name: &str) -> Result<PathBuf, BundleError> {
    let traversal = || BundleError::Traversal {
        descriptor: descriptor.to_owned(),
        name: name.to_owned(),
    };
    let rel = Path::new(name);
    if name.is_empty() || name.contains('\0') || has_qemu_protocol(name) {
        return Err(traversal());
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(traversal());
            }
        }
    }
    let joined = root.join(rel);
    if let Ok(real) = joined.canonicalize() {
        let real_root = root.canonicalize().map_err(|source| BundleError::Io {
            file: root.to_owned(),
            source,
        })?;
        if !real.starts_with(&real_root) {
            return Err(traversal());
        }
    }
    Ok(joined)
}

/// Whether QEMU reads `name` as `protocol:rest` (`json:{...}`, `nbd:...`, `http:...`)
/// rather than as a file: a `:` before any `/` (QEMU's `path_has_protocol`). Such a name
/// could make QEMU open any host file or a network server, so it is never a bundle file.
pub fn has_qemu_protocol(name: &str) -> bool {
    name.split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
}

/// Like [`confine`], and the file must exist.
pub fn resolve(root: &Path, descriptor: &Path, name: &str) -> Result<PathBuf, BundleError> {
    let path = confine(root, descriptor, name)?;
    if !path.is_file() {
        return Err(BundleError::Missing {
            descriptor: descriptor.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(path)
}

/// [`confine`] for a name a VMDK descriptor gives (an extent, a parent): VMware and QEMU
/// read it relative to the descriptor's own directory, which may be a subfolder of the
/// bundle. The name alone must pass [`confine`]'s checks too (no `..`, not absolute).
pub fn confine_beside(root: &Path, descriptor: &Path, name: &str) -> Result<PathBuf, BundleError> {
    confine(root, descriptor, name)?;
    let dir = descriptor
        .parent()
        .and_then(|d| d.strip_prefix(root).ok())
        .unwrap_or(Path::new(""));
    let rel = dir.join(name);
    let rel = rel.to_str().ok_or_else(|| BundleError::Traversal {
        descriptor: descriptor.to_owned(),
        name: name.to_owned(),
    })?;
    confine(root, descriptor, rel)
}

/// Like [`confine_beside`], and the file must exist.
pub fn resolve_beside(root: &Path, descriptor: &Path, name: &str) -> Result<PathBuf, BundleError> {
    let path = confine_beside(root, descriptor, name)?;
    if !path.is_file() {
        return Err(BundleError::Missing {
            descriptor: descriptor.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(path)
}

/// A digest algorithm of an OVF manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1 (OVF 1.x manifests from older vSphere).
    Sha1,
    /// SHA-256.
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }
}

/// One manifest line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Digest algorithm.
    pub algorithm: Algorithm,
    /// File name as written.
    pub file: String,
    /// Expected digest, lower-case hex.
    pub digest: String,
}

/// A parsed `.mf` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Its lines.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// Parse `SHA256(disk1.vmdk)= 0123...` lines, spaced or not (`SHA1 (disk1.vmdk) = 01...`);
    /// blank lines are skipped.
    pub fn parse(path: &Path, text: &str) -> Result<Self, BundleError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let err = || BundleError::ManifestSyntax {
                manifest: path.to_owned(),
                line: i + 1,
            };
            // `SHA256(disk.vmdk)= hex` (OpenSSL, ovftool) or `SHA1 (disk.vmdk) = hex`
            // (VirtualBox, older ovftool): the digest holds no `=`, the name may.
            let (algo, rest) = line.split_once('(').ok_or_else(err)?;
            let (named, digest) = rest.rsplit_once('=').ok_or_else(err)?;
            let file = named.trim_end().strip_suffix(')').ok_or_else(err)?;
            let algorithm = match algo.trim().to_ascii_uppercase().as_str() {
                "SHA1" => Algorithm::Sha1,
                "SHA256" => Algorithm::Sha256,
                _ => return Err(err()),
            };
            let digest = digest.trim().to_ascii_lowercase();
            let want = if algorithm == Algorithm::Sha1 { 40 } else { 64 };
            if digest.len() != want || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            entries.push(ManifestEntry {
                algorithm,
                file: file.to_owned(),
                digest,
            });
        }
        Ok(Self { entries })
    }
}

/// Streaming hasher for either algorithm.
pub enum Hasher {
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// SHA-256.
    Sha256(sha2::Sha256),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The digest as lower-case hex.
    pub fn finish_hex(self) -> String {
        match self {
            Self::Sha1(h) => hex::encode(h.finalize()),
            Self::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// Compare a digest computed elsewhere (e.g. while extracting) with the manifest's.
pub fn check_digest(file: &Path, entry: &ManifestEntry, actual: String) -> Result<(), BundleError> {
    if actual == entry.digest {
        Ok(())
    } else {
        Err(BundleError::ChecksumMismatch {
            file: file.to_owned(),
            algorithm: entry.algorithm.name(),
            expected: entry.digest.clone(),
            actual,
        })
    }
}

/// Hash a file and compare it with its manifest entry.
pub fn verify_file(path: &Path, entry: &ManifestEntry) -> Result<(), BundleError> {
    let io = |source| BundleError::Io {
        file: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let mut hasher = Hasher::new(entry.algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    check_digest(path, entry, hasher.finish_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptors_names_are_read_beside_it_and_stay_confined() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("disks")).unwrap();
        std::fs::write(root.join("disks/web-flat.vmdk"), b"x").unwrap();
        let descriptor = root.join("disks/web.vmdk");
        assert_eq!(
            resolve_beside(root, &descriptor, "web-flat.vmdk").unwrap(),
            root.join("disks/web-flat.vmdk")
        );
        assert!(resolve_beside(root, &root.join("web.vmdk"), "web-flat.vmdk").is_err());
        for bad in ["../web-flat.vmdk", "/etc/passwd", "nbd:x:1"] {
            assert!(confine_beside(root, &descriptor, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifest_lines_of_both_algorithms_parse() {
        let text = format!(
            "SHA256(vm.ovf)= {}\nSHA1(disk 1.vmdk)= {}\n\n",
            "a".repeat(64),
            "B".repeat(40)
        );
        let m = Manifest::parse(Path::new("vm.mf"), &text).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[1].file, "disk 1.vmdk");
        assert_eq!(m.entries[1].algorithm, Algorithm::Sha1);
        assert_eq!(m.entries[1].digest, "b".repeat(40));
    }

    #[test]
    fn spaced_manifest_lines_as_virtualbox_and_older_ovftool_write_them_parse() {
        let text = format!(
            "SHA1 (box-disk001.vmdk) = {}\r\nSHA256 (a (copy)=.ovf) = {}\n",
            "c".repeat(40),
            "d".repeat(64)
        );
        let m = Manifest::parse(Path::new("box.mf"), &text).unwrap();
        assert_eq!(m.entries[0].file, "box-disk001.vmdk");
        assert_eq!(m.entries[0].digest, "c".repeat(40));
        assert_eq!(
            m.entries[1].file, "a (copy)=.ovf",
            "parentheses and = in a name"
        );
        assert!(Manifest::parse(Path::new("x.mf"), "SHA1 (a = 00\n").is_err());
    }

    #[test]
    fn a_manifest_line_with_a_short_digest_is_refused_with_its_line() {
        let err = Manifest::parse(Path::new("vm.mf"), "SHA256(a)= abc\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(Manifest::parse(Path::new("vm.mf"), "MD5(a)= 00\n").is_err());
    }

    #[test]
    fn names_that_leave_the_bundle_are_refused_naming_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let d = Path::new("vm.ovf");
        for bad in [
            "../x.vmdk",
            "/etc/passwd",
            "a/../../b",
            "",
            "json:{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}",
            "nbd:127.0.0.1:10809",
        ] {
            let err = confine(dir.path(), d, bad).unwrap_err();
            assert!(matches!(err, BundleError::Traversal { .. }), "{bad}: {err}");
            assert!(err.to_string().starts_with("vm.ovf:"), "{err}");
        }
        assert!(confine(dir.path(), d, "sub/disk.vmdk").is_ok());
        assert!(
            confine(dir.path(), d, "sub/a:b.vmdk").is_ok(),
            "a colon after a slash is a file"
        );
    }

    #[test]
    fn a_symlink_leading_out_of_the_bundle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("disk.vmdk")).unwrap();
        assert!(matches!(
            confine(dir.path(), Path::new("vm.vmx"), "disk.vmdk"),
            Err(BundleError::Traversal { .. })
        ));
    }

    #[test]
    fn a_file_with_a_different_digest_fails_verification_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.vmdk");
        std::fs::write(&f, b"hello").unwrap();
        let good = ManifestEntry {
            algorithm: Algorithm::Sha256,
            file: "d.vmdk".into(),
            digest: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into(),
        };
        verify_file(&f, &good).unwrap();
        let sha1 = ManifestEntry {
            algorithm: Algorithm::Sha1,
            file: "d.vmdk".into(),
            digest: "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d".into(),
        };
        verify_file(&f, &sha1).unwrap();
        let bad = ManifestEntry {
            digest: "0".repeat(64),
            ..good
        };
        let err = verify_file(&f, &bad).unwrap_err();
        assert!(
            err.to_string().contains("d.vmdk") && err.to_string().contains("mismatch"),
            "{err}"
        );
    }
}
