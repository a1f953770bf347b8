//! How `qemu-img` runs: with the least privilege that still lets it read the bundle and
//! write the images.
//!
//! Every run gets an empty environment (`PATH` and `LC_ALL=C` only), stdin from
//! `/dev/null`, a new network namespace (`unshare --net`: QEMU's `nbd:`, `http:`, `ssh:`
//! and `json:` drivers reach nothing), `no_new_privs` and no capabilities (`setpriv`).
//! When ivctl runs as root, `qemu-img` also runs as `nobody:nogroup`; the staging directory
//! is handed to that user for the run, so an OVA (always unpacked there) is converted with
//! no access to anything root owns. An OVF or VMX read in place is converted as `nobody`
//! when that user can read it, else as root without capabilities, and the report says so.
//! This module never decides what is safe to open; `qemu_view` and `vmdk_check` do.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unprivileged user and group `qemu-img` runs as when ivctl is root.
pub const NOBODY: (u32, u32) = (65534, 65534);
const UNSHARE: &str = "/usr/bin/unshare";
const SETPRIV: &str = "/usr/bin/setpriv";

/// How `qemu-img` is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// Run as this uid and gid (only when ivctl is root).
    pub user: Option<(u32, u32)>,
    /// Wrap in `unshare` and `setpriv` (false only when util-linux lacks them).
    pub isolate: bool,
    /// The directory `qemu-img` runs in; paths under it are passed relative to it, so the
    /// unprivileged user needs no access to its parents.
    pub workdir: Option<PathBuf>,
    /// Why `qemu-img` keeps ivctl's user although ivctl is root, when it does.
    pub note: Option<String>,
}

impl Default for Sandbox {
    /// The caller's own user, isolated when this machine allows it; no work directory.
    fn default() -> Self {
        Self {
            user: None,
            isolate: can_isolate(),
            workdir: None,
            note: None,
        }
    }
}

/// Whether `unshare` and `setpriv` work here (once per process): an unprivileged user
/// needs user namespaces, which some kernels disable. Without them `qemu-img` still runs
/// with an empty environment, and the import's own checks are what confine it.
fn can_isolate() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| {
        let probe = Sandbox {
            user: None,
            isolate: true,
            workdir: None,
            note: None,
        };
        let Ok(mut cmd) = probe.command(Path::new("/bin/true")) else {
            return false;
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Whether ivctl runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether user `nobody` can open `path` for reading: every directory above it
/// searchable and the file readable by others (ACLs are not consulted).
pub fn others_can_read(path: &Path) -> bool {
    let Ok(real) = path.canonicalize() else {
        return false;
    };
    let readable = std::fs::metadata(&real).is_ok_and(|m| m.mode() & 0o004 != 0);
    readable
        && real
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

impl Sandbox {
    /// The sandbox for one import: as root, `nobody` when it can read every file in
    /// `sources` that lies outside `workdir` (which is handed to `nobody` by [`Self::lend`]).
    pub fn for_import(workdir: Option<&Path>, sources: &[PathBuf]) -> Self {
        let mut s = Self {
            workdir: workdir.map(absolute),
            ..Self::default()
        };
        if !is_root() {
            return s;
        }
        let outside: Vec<&PathBuf> = sources
            .iter()
            .filter(|p| workdir.is_none_or(|w| !p.starts_with(w)))
            .collect();
        match outside.iter().find(|p| !others_can_read(p)) {
            None => s.user = Some(NOBODY),
            Some(p) => {
                s.note = Some(format!(
                    "qemu-img ran as root without capabilities: user nobody cannot read {}",
                    p.display()
                ));
            }
        }
        s
    }

    /// A `qemu-img` command inside the sandbox; `qemu_img` is found on ivctl's `PATH`
    /// first, since the sandbox's environment is empty.
    pub fn command(&self, qemu_img: &Path) -> std::io::Result<Command> {
        let qemu_img = locate(qemu_img)?;
        let qemu_img = qemu_img.as_path();
        let mut cmd = if self.isolate {
            let mut c = Command::new(UNSHARE);
            if !is_root() {
                c.arg("--map-current-user");
            }
            c.args(["--net", "--", SETPRIV]);
            if let Some((uid, gid)) = self.user {
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups");
            }
            c.args([
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]);
            c.arg(qemu_img);
            c
        } else {
            Command::new(qemu_img)
        };
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C");
        if let Some(w) = &self.workdir {
            cmd.current_dir(w);
        }
        Ok(cmd)
    }

    /// How `path` is written on `qemu-img`'s command line: relative to the work directory
    /// when under it, else absolute (`qemu-img` runs in the work directory, not in ivctl's).
    pub fn arg(&self, path: &Path) -> PathBuf {
        let path = absolute(path);
        match &self.workdir {
            Some(w) => path
                .strip_prefix(w)
                .map_or_else(|_| path.clone(), Path::to_owned),
            None => path,
        }
    }

    /// The absolute form of a path `qemu-img` reported (relative ones are from its work
    /// directory).
    pub fn resolve(&self, reported: &str) -> PathBuf {
        let p = Path::new(reported);
        match &self.workdir {
            Some(w) if p.is_relative() => w.join(p),
            _ => p.to_owned(),
        }
    }

    /// Give the work directory's tree to the sandbox user before `qemu-img` runs.
    pub fn lend(&self) -> std::io::Result<()> {
        match (&self.workdir, self.user) {
            (Some(w), Some((uid, gid))) => chown_tree(w, uid, gid),
            _ => Ok(()),
        }
    }

    /// Take the work directory's tree back (ivctl's own user) once `qemu-img` is done.
    pub fn reclaim(&self) -> std::io::Result<()> {
        match (&self.workdir, self.user) {
            (Some(w), Some(_)) => chown_tree(
                w,
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            _ => Ok(()),
        }
    }
}

/// `path` made absolute against ivctl's working directory (unchanged if that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The executable `binary` names: itself when it has a `/`, else the first match on `PATH`.
pub fn locate(binary: &Path) -> std::io::Result<PathBuf> {
    let is_exec =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
    let not_found = || {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found", binary.display()),
        )
    };
    if binary.components().count() > 1 || binary.is_absolute() {
        return if is_exec(binary) {
            Ok(binary.to_owned())
        } else {
            Err(not_found())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| is_exec(p))
        .ok_or_else(not_found)
}

/// chown a directory tree without following symlinks.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_runs_qemu_img_without_network_privileges_or_environment() {
        let s = Sandbox {
            user: Some(NOBODY),
            isolate: true,
            workdir: Some("/w".into()),
            note: None,
        };
        let cmd = s.command(Path::new("/bin/true")).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), UNSHARE);
        for want in [
            "--net",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "/bin/true",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing in {args:?}");
        }
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(envs.len(), 2, "{envs:?}");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/w")));
        assert_eq!(
            s.arg(Path::new("/w/source/d.vmdk")),
            Path::new("source/d.vmdk")
        );
        assert_eq!(s.arg(Path::new("/x/d.vmdk")), Path::new("/x/d.vmdk"));
        assert_eq!(s.resolve("source/d.vmdk"), Path::new("/w/source/d.vmdk"));
    }

    #[test]
    fn a_file_in_a_private_directory_is_not_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.vmdk");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(others_can_read(&f));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!others_can_read(&f));
        assert!(
            others_can_read(Path::new("/etc/hostname")) || !Path::new("/etc/hostname").exists()
        );
    }
}
