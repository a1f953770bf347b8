//! The image's one layer: a directory tree as a reproducible tar.
//!
//! Two runs over the same files give the same bytes, whatever the files' owners, times and
//! the order the file system lists them in: entries are sorted by path, owned by 0:0 with no
//! user or group names, and carry one fixed mtime. Set-user-ID and set-group-ID bits are
//! dropped (nothing in an image of ours needs them). Only directories, regular files and
//! symbolic links go in; anything else (a device, a socket, a FIFO) is refused, never
//! silently skipped. Never follows a symbolic link.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a directory could not become a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file of a kind a layer of ours must not hold.
    #[error("{path} is neither a directory, a regular file nor a symbolic link: remove it")]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
    /// A path that is not UTF-8 (tar headers of ours carry UTF-8 only).
    #[error("{path:?} is not a UTF-8 path: rename it")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// Writing the tar stream failed.
    #[error("cannot write the layer's tar stream")]
    Write(#[source] io::Error),
}

/// What kind of entry, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(String),
}

/// One entry: its path relative to the root (no leading `/` or `./`), kind and mode bits.
#[derive(Debug, Clone)]
struct Entry {
    rel: String,
    kind: Kind,
    mode: u32,
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn utf8(path: &Path) -> Result<&str, LayerError> {
    path.to_str().ok_or_else(|| LayerError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Every entry under `root` (not `root` itself), in no particular order.
fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<(), LayerError> {
    for item in fs::read_dir(dir).map_err(read_err(dir))? {
        let path = item.map_err(read_err(dir))?.path();
        let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let rel = utf8(path.strip_prefix(root).expect("walked under root"))?.to_owned();
        let mode = meta.permissions().mode();
        let kind = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(read_err(&path))?;
            Kind::Symlink(utf8(&target)?.to_owned())
        } else if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File
        } else {
            return Err(LayerError::Unsupported { path });
        };
        let is_dir = kind == Kind::Dir;
        out.push(Entry { rel, kind, mode });
        if is_dir {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// The permission bits a layer keeps: rwx for all, and the sticky bit on directories.
fn kept_mode(entry: &Entry) -> u32 {
    match entry.kind {
        Kind::Dir => entry.mode & 0o1777,
        Kind::File => entry.mode & 0o777,
        Kind::Symlink(_) => 0o777,
    }
}

/// The tree under `root` as an uncompressed tar, every entry with mtime `mtime` (seconds
/// since the epoch, normally `SOURCE_DATE_EPOCH`).
pub fn layer_tar(root: &Path, mtime: u64) -> Result<Vec<u8>, LayerError> {
    let mut entries = Vec::new();
    walk(root, root, &mut entries)?;
    // Byte order of the paths: a directory ("a") sorts before what is in it ("a/b").
    entries.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for entry in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_mode(kept_mode(entry));
        let written = match &entry.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{}/", entry.rel), io::empty())
            }
            Kind::File => {
                let path = root.join(&entry.rel);
                let data = fs::read(&path).map_err(read_err(&path))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, &entry.rel, data.as_slice())
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &entry.rel, target)
            }
        };
        written.map_err(LayerError::Write)?;
    }
    builder.into_inner().map_err(LayerError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(tar_bytes: &[u8]) -> Vec<(String, u32, u64, u64)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_str().unwrap().to_owned(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("usr/bin")).unwrap();
        fs::create_dir_all(dir.join("a-b")).unwrap();
        fs::write(dir.join("usr/bin/tool"), b"#!binary").unwrap();
        fs::set_permissions(dir.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        symlink("usr/bin", dir.join("bin")).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(dir.join(&long)).unwrap();
        fs::write(dir.join(&long).join("f".repeat(80)), b"long").unwrap();
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_whatever_its_files_times() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        tree(one.path());
        // The second copy is made in the other order, with other times.
        fs::create_dir_all(two.path().join("a-b")).unwrap();
        tree(two.path());
        let file = fs::File::options()
            .write(true)
            .open(two.path().join("usr/bin/tool"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        let a = layer_tar(one.path(), 1_700_000_000).unwrap();
        let b = layer_tar(two.path(), 1_700_000_000).unwrap();
        assert!(a == b, "two layers of the same tree differ");
        assert_ne!(
            a,
            layer_tar(one.path(), 1).unwrap(),
            "the mtime must be used"
        );
    }

    #[test]
    fn entries_are_sorted_owned_by_root_with_one_mtime_and_no_setuid() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let entries = names(&layer_tar(dir.path(), 42).unwrap());
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let long = format!("{}/", "d".repeat(120));
        let long_file = format!("{long}{}", "f".repeat(80));
        assert_eq!(
            paths,
            [
                "a-b/",
                "bin",
                long.as_str(),
                long_file.as_str(),
                "usr/",
                "usr/bin/",
                "usr/bin/tool"
            ]
        );
        assert!(entries.iter().all(|e| e.2 == 0 && e.3 == 42), "{entries:?}");
        let tool = entries.iter().find(|e| e.0 == "usr/bin/tool").unwrap();
        assert_eq!(tool.1, 0o755, "the set-user-ID bit is dropped");
    }

    #[test]
    fn symlinks_are_stored_as_links_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let bytes = layer_tar(dir.path(), 0).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let link = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some("bin"))
            .unwrap();
        assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
        assert_eq!(link.link_name().unwrap().unwrap().to_str(), Some("usr/bin"));
    }

    #[test]
    fn a_fifo_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = layer_tar(dir.path(), 0).unwrap_err();
        assert!(
            matches!(err, LayerError::Unsupported { ref path } if path == &fifo),
            "{err}"
        );
    }
}
