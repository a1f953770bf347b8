//! A busy variant of the tiny guest: the same kernel and initrd, plus a second initramfs
//! archive (the kernel unpacks concatenated archives in order) holding `/busy-init`, which
//! starts a loop rewriting 16 MiB of the guest's RAM-backed root file system for ever and
//! then runs the usual `/init`. Booted with `rdinit=/busy-init`, the guest dirties memory
//! much faster than a capped migration can send it, so the copy never converges by itself.
//! Built next to the cached guest, once (atomically: a concurrent builder's rename wins).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The extra init: the dirtying loop in the background once /init has mounted /proc and
/// /dev, then /init itself.
const BUSY_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox sh -c '
  while [ ! -e /proc/cmdline ] || [ ! -e /dev/urandom ]; do /bin/busybox sleep 0.2; done
  /bin/busybox dd if=/dev/urandom of=/busy-src bs=1M count=16 2>/dev/null
  while :; do /bin/busybox cat /busy-src > /busy-dst; done
' &
exec /init
"#;

/// Bump when `BUSY_INIT` changes, so a cached copy is rebuilt.
const VERSION: u32 = 1;

/// The busy initrd next to `guest`'s `initrd.gz` (built on first use).
pub fn busy_initrd(guest: &Path) -> PathBuf {
    let out = guest.join(format!("initrd-busy-v{VERSION}.gz"));
    if out.exists() {
        return out;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path().join("root");
    std::fs::create_dir_all(&root).expect("archive root");
    let init = root.join("busy-init");
    std::fs::write(&init, BUSY_INIT).expect("busy-init");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let archive = Command::new("sh")
        .arg("-c")
        .arg("echo busy-init | cpio -o -H newc --quiet | gzip -9")
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .expect("cpio and gzip (hack/install-deps.sh installs cpio)");
    assert!(archive.status.success(), "cpio failed");
    let mut bytes = std::fs::read(guest.join("initrd.gz")).expect("the tiny guest's initrd");
    bytes.extend_from_slice(&archive.stdout);
    let tmp = guest.join(format!(".initrd-busy-{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).expect("write the busy initrd");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::rename(&tmp, &out).expect("rename the busy initrd");
    out
}

/// The kernel command line of a busy counter guest.
pub const BUSY_CMDLINE: &str = "console=ttyS0 panic=-1 quiet rdinit=/busy-init ironvisor.counter";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_init_runs_the_usual_init_after_starting_its_loop() {
        let last = BUSY_INIT.lines().last().unwrap();
        assert_eq!(last, "exec /init");
        assert!(
            BUSY_INIT.contains("' &\n"),
            "the loop runs in the background"
        );
        assert!(BUSY_CMDLINE.contains("rdinit=/busy-init"));
    }
}
