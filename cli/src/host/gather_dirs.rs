//! Gathering the facts about the agent's state and images directories: free space and the
//! ownership of every directory QEMU must search on the way to them. Reads only.

use std::path::{Path, PathBuf};

use super::facts::DirFacts;
use super::gather::ownership;

/// The nearest ancestor of `path` (itself included) that exists.
fn nearest_existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.symlink_metadata().is_ok())
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Result<u64, String> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| e.to_string())?;
    Ok(s.blocks_available().saturating_mul(s.fragment_size()))
}

/// The facts about `path` (made absolute against the working directory). Symbolic links on
/// the way are resolved, because QEMU must search the directories they lead through.
pub fn dir(path: &Path) -> DirFacts {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut facts = DirFacts {
        path: abs.clone(),
        exists: abs.is_dir(),
        free_bytes: Err("no part of the path exists".into()),
        components: Vec::new(),
        blocked: None,
    };
    let Some(existing) = nearest_existing(&abs) else {
        return facts;
    };
    let real = match existing.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            facts.blocked = Some((existing.to_owned(), e.to_string()));
            return facts;
        }
    };
    facts.free_bytes = free_bytes(&real);
    let mut at = PathBuf::new();
    for part in real.components() {
        at.push(part);
        match std::fs::metadata(&at) {
            Ok(m) if m.is_dir() => facts.components.push((at.clone(), ownership(&m))),
            Ok(_) => {
                facts.blocked = Some((at.clone(), "not a directory".into()));
                break;
            }
            Err(e) => {
                facts.blocked = Some((at.clone(), e.to_string()));
                break;
            }
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn every_directory_from_the_root_down_is_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let f = dir(&state);
        assert!(f.exists);
        assert!(f.free_bytes.unwrap() > 0);
        assert_eq!(f.components.first().unwrap().0, PathBuf::from("/"));
        let real = tmp.path().canonicalize().unwrap();
        let (_, o) = f.components.iter().find(|(p, _)| *p == real).unwrap();
        assert_eq!(o.mode, 0o700);
        assert_eq!(f.components.last().unwrap().0, real.join("state"));
    }

    #[test]
    fn a_missing_directory_is_measured_at_its_nearest_existing_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        let f = dir(&tmp.path().join("a/b/c"));
        assert!(!f.exists);
        assert!(f.free_bytes.is_ok());
        assert_eq!(
            f.components.last().unwrap().0,
            tmp.path().canonicalize().unwrap()
        );
        assert_eq!(f.blocked, None);
    }

    #[test]
    fn a_file_on_the_path_blocks_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let f = dir(&tmp.path().join("file/images"));
        let (p, why) = f.blocked.unwrap();
        assert_eq!(p, tmp.path().canonicalize().unwrap().join("file"));
        assert_eq!(why, "not a directory");
    }
}
