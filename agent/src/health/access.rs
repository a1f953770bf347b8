//! Whether the QEMU user can reach the agent's directories: QEMU opens disks, seeds and
//! kernels itself, as its own user, so every directory on the way needs search permission
//! for it (a `mktemp -d` directory, mode 0700, is enough to make every start fail with
//! "Permission denied").
//!
//! [`first_blocking`] is pure over the directories' modes; [`check`] stats the real path.
//! POSIX ACLs are not read: a directory opened up only by an ACL is reported as blocking.

use super::{Finding, QemuUser, can_access};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Reasons of the `StorageAccessible` condition.
pub mod reason {
    /// Every directory can be reached.
    pub const ACCESSIBLE: &str = "DirectoriesAccessible";
    /// A directory on the way cannot be searched by the QEMU user.
    pub const NOT_TRAVERSABLE: &str = "DirectoryNotTraversable";
}

/// One directory on the way: its path, mode, owner and group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirFacts {
    /// The directory.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

/// The first directory `user` cannot search, in order from `/`.
pub fn first_blocking<'a>(dirs: &'a [DirFacts], user: &QemuUser) -> Option<&'a DirFacts> {
    dirs.iter()
        .find(|d| !can_access(d.mode, d.uid, d.gid, user, 0o1))
}

/// `path` and its ancestors that exist, from `/` down. A directory the agent has not created
/// yet cannot block anything.
pub fn existing_ancestors(path: &Path) -> Vec<DirFacts> {
    let mut dirs: Vec<DirFacts> = path
        .ancestors()
        .filter_map(|p| {
            let m = std::fs::metadata(p).ok()?;
            m.is_dir().then(|| DirFacts {
                path: p.to_path_buf(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })
        })
        .collect();
    dirs.reverse();
    dirs
}

/// The `StorageAccessible` verdict for the named directories.
pub fn check(dirs: &[(&str, &Path)], user: Option<&QemuUser>) -> Finding {
    let Some(user) = user else {
        return Finding::ok(
            reason::ACCESSIBLE,
            "QEMU runs as the same user as libvirtd here; nothing to check".into(),
        );
    };
    let mut problems = Vec::new();
    for (what, path) in dirs {
        if let Some(d) = first_blocking(&existing_ancestors(path), user) {
            problems.push(format!(
                "the {what} directory {} is unreachable for the QEMU user {} (uid {}): {} is \
                 {} uid {} gid {}; give it search permission (chmod o+x {}) or move the \
                 directory",
                path.display(),
                user.name,
                user.uid,
                d.path.display(),
                super::kvm::mode_string(d.mode, 'd'),
                d.uid,
                d.gid,
                d.path.display()
            ));
        }
    }
    if problems.is_empty() {
        Finding::ok(
            reason::ACCESSIBLE,
            format!(
                "the QEMU user {} can reach the state and images directories",
                user.name
            ),
        )
    } else {
        Finding::problem(reason::NOT_TRAVERSABLE, problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> QemuUser {
        QemuUser {
            name: "libvirt-qemu".into(),
            uid: 64055,
            groups: vec![64055, 107],
        }
    }

    fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> DirFacts {
        DirFacts {
            path: path.into(),
            mode,
            uid,
            gid,
        }
    }

    #[test]
    fn a_private_temp_dir_on_the_way_blocks_the_qemu_user() {
        let dirs = [
            dir("/", 0o755, 0, 0),
            dir("/tmp", 0o1777, 0, 0),
            dir("/tmp/tmp.x", 0o700, 0, 0),
            dir("/tmp/tmp.x/state", 0o755, 0, 0),
        ];
        assert_eq!(
            first_blocking(&dirs, &user()).map(|d| d.path.clone()),
            Some("/tmp/tmp.x".into())
        );
    }

    #[test]
    fn group_or_owner_search_permission_is_enough() {
        let dirs = [
            dir("/", 0o755, 0, 0),
            dir("/srv", 0o710, 0, 107),
            dir("/srv/q", 0o700, 64055, 0),
        ];
        assert_eq!(first_blocking(&dirs, &user()), None);
    }

    #[test]
    fn a_real_0700_directory_fails_the_check_with_the_remedy() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let private = t.path().join("private");
        std::fs::create_dir_all(private.join("state")).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = check(&[("state", &private.join("state"))], Some(&user()));
        assert!(!f.ok);
        assert_eq!(f.reason, reason::NOT_TRAVERSABLE);
        assert!(
            f.message
                .contains(&format!("chmod o+x {}", private.display())),
            "{}",
            f.message
        );
    }
}
