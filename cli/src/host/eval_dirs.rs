//! Verdicts on the agent's directories: free space, and whether QEMU can reach files under
//! them (search permission on every directory on the path). Pure.

use std::path::Path;

use super::facts::{DirFacts, QemuUser, perm};
use super::verdict::{Check, Status};

/// Free-space thresholds for one directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceLimits {
    /// Below this it fails.
    pub fail_below: u64,
    /// Below this it warns.
    pub warn_below: u64,
}

const GIB: u64 = 1 << 30;

/// The state directory holds seeds, console logs and per-VM files.
pub const STATE_LIMITS: SpaceLimits = SpaceLimits {
    fail_below: GIB,
    warn_below: 5 * GIB,
};
/// The images directory holds guest images and disks.
pub const IMAGES_LIMITS: SpaceLimits = SpaceLimits {
    fail_below: 5 * GIB,
    warn_below: 20 * GIB,
};

/// `12.3 GiB`.
fn gib(bytes: u64) -> String {
    // Display only: the precision of an f64 is plenty for a size in GiB.
    #[allow(clippy::cast_precision_loss)]
    let g = bytes as f64 / GIB as f64;
    format!("{g:.1} GiB")
}

/// Where the numbers were taken: the directory, or its nearest existing ancestor.
fn measured_at(f: &DirFacts) -> String {
    match (f.exists, f.components.last()) {
        (true, _) | (false, None) => f.path.display().to_string(),
        (false, Some((p, _))) => {
            format!("{} ({} does not exist yet)", p.display(), f.path.display())
        }
    }
}

/// `state-dir-space` or `images-dir-space`.
pub fn space(id: &'static str, f: &DirFacts, limits: SpaceLimits) -> Check {
    let free = match &f.free_bytes {
        Err(e) => {
            return Check::problem(
                id,
                Status::Warn,
                format!(
                    "free space under {} could not be measured: {e}",
                    f.path.display()
                ),
                "check the path; the agent creates it when it starts",
            );
        }
        Ok(b) => *b,
    };
    let finding = format!("{} free under {}", gib(free), measured_at(f));
    let status = if free < limits.fail_below {
        Status::Fail
    } else if free < limits.warn_below {
        Status::Warn
    } else {
        return Check::pass(id, finding);
    };
    Check::problem(
        id,
        status,
        format!(
            "{finding} (needs {}, {} recommended)",
            gib(limits.fail_below),
            gib(limits.warn_below)
        ),
        "free space on that filesystem or point the agent's directory at a larger one",
    )
}

/// `state-dir-access` or `images-dir-access`: QEMU (as `user`) can search every directory
/// from `/` down to the directory, so it can open the disks, seeds and kernels under it.
pub fn access(id: &'static str, f: &DirFacts, user: Result<&QemuUser, &String>) -> Check {
    let user = match user {
        Ok(u) => u,
        Err(e) => {
            return Check::problem(
                id,
                Status::Fail,
                format!("cannot tell who QEMU runs as: {e}"),
                "install libvirt-daemon-system (it creates the libvirt-qemu user), or fix user= \
                 in qemu.conf",
            );
        }
    };
    if let Some((p, why)) = &f.blocked {
        return Check::problem(
            id,
            Status::Fail,
            format!("{}: {why}", p.display()),
            format!(
                "make {} a directory QEMU can search, or choose another path",
                p.display()
            ),
        );
    }
    let closed: Vec<(&Path, String)> = f
        .components
        .iter()
        .filter(|(_, o)| !o.allows(user, perm::X))
        .map(|(p, o)| (p.as_path(), o.describe('d')))
        .collect();
    if closed.is_empty() {
        let later = if f.exists {
            ""
        } else {
            " (the agent creates the rest)"
        };
        return Check::pass(
            id,
            format!("{} can reach {}{later}", user.name, f.path.display()),
        );
    }
    let named = closed
        .iter()
        .map(|(p, d)| format!("{} ({d})", p.display()))
        .collect::<Vec<_>>();
    let chmods = closed
        .iter()
        .map(|(p, _)| format!("chmod o+x {}", p.display()))
        .collect::<Vec<_>>();
    Check::problem(
        id,
        Status::Fail,
        format!(
            "{} cannot search {}: QEMU cannot open files under {}",
            user.name,
            named.join(", "),
            f.path.display()
        ),
        format!(
            "{} (or give {} a group with g+x), or choose a directory outside it",
            chmods.join(" && "),
            user.name
        ),
    )
}

#[cfg(test)]
#[path = "eval_dirs_tests.rs"]
mod tests;
