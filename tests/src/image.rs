//! Release images (`hack/release`) as the tests use them: unpacked with umoci into a root
//! filesystem, and programs run from it the way a container runtime would run them (a
//! private mount namespace, host paths bind-mounted where the pod mounts them, then chroot).
//!
//! Never changes the host: every mount is made inside a private mount namespace that ends
//! with the program.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// Unpack the OCI image archive `archive` under `into` with umoci; returns its root
/// filesystem. Panics with the tool's message when the archive is not a valid image.
pub fn unpack(archive: &Path, into: &Path) -> PathBuf {
    let layout = into.join("layout");
    std::fs::create_dir_all(&layout).expect("layout dir");
    let out = run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout));
    assert!(
        out.status.success(),
        "tar -xf {archive:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("the image has a tag");
    let bundle = into.join("bundle");
    let out = run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    assert!(
        out.status.success(),
        "umoci cannot unpack {archive:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

/// A command prefix that runs `program` from `rootfs` with each `(host, inside)` path
/// bind-mounted, ignoring the one argument the caller puts after the prefix (the host
/// binary it would otherwise run) and passing on the rest.
pub fn chroot_wrapper(rootfs: &Path, binds: &[(&str, &str)], program: &str) -> Vec<OsString> {
    const SCRIPT: &str = r#"set -e
r="$1"; prog="$2"; n="$3"; shift 3
while [ "$n" -gt 0 ]; do
  mkdir -p "$r$2" 2>/dev/null || true
  mount --rbind "$1" "$r$2"
  shift 2; n=$((n - 1))
done
shift
exec chroot "$r" "$prog" "$@""#;
    let mut w: Vec<OsString> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        SCRIPT,
        "chroot-wrapper",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    w.push(rootfs.into());
    w.push(program.into());
    w.push(binds.len().to_string().into());
    for (host, inside) in binds {
        w.push((*host).into());
        w.push((*inside).into());
    }
    w
}
