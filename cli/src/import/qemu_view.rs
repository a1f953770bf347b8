//! What QEMU itself will open for a disk, checked against the bundle before conversion.
//!
//! Our parser (`vmdk`, `vmdk_check`) refuses anything it sees leaving the bundle, but QEMU
//! reads descriptors its own way. So each level of the disk is opened by `qemu-img info`
//! with its backing disabled (`json:{..., "backing": null}`): every extent QEMU reports
//! (format-specific data) and the backing file it would open next must be files inside the
//! bundle, and only then is that backing file opened in turn. Finally `qemu-img info
//! --backing-chain` shows the whole chain as conversion will open it, checked the same way.
//! `qemu-img` runs in the [`Sandbox`]. This module never opens a disk itself.

use std::path::{Path, PathBuf};

use super::bundle::has_qemu_protocol;
use super::sandbox::Sandbox;

/// Most levels followed (as in `vmdk_check`).
const MAX_CHAIN: usize = 32;

/// Why QEMU's view of a disk was refused.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// QEMU would open a file outside the bundle.
    #[error(
        "{disk}: QEMU would open {what} {reference:?}, which is outside the bundle {root}; refusing"
    )]
    Outside {
        /// The disk file whose view names it.
        disk: PathBuf,
        /// `extent`, `backing file` or `data file`.
        what: &'static str,
        /// The reference as QEMU reported it.
        reference: String,
        /// The bundle directory.
        root: PathBuf,
    },
    /// `qemu-img info` failed or printed something unreadable.
    #[error("{disk}: qemu-img info failed: {message}")]
    Info {
        /// The disk.
        disk: PathBuf,
        /// qemu-img's message.
        message: String,
    },
    /// A backing chain deeper than [`MAX_CHAIN`].
    #[error("{0}: backing chain deeper than {MAX_CHAIN} levels")]
    TooDeep(PathBuf),
}

/// The `json:` filename that opens `path` as a VMDK with no backing file.
pub fn standalone_spec(path: &Path) -> String {
    let spec = serde_json::json!({
        "driver": "vmdk",
        "file": { "driver": "file", "filename": path.to_string_lossy() },
        "backing": null,
    });
    format!("json:{spec}")
}

/// Every file QEMU names in one `qemu-img info` image object: (what, reference).
pub fn references(image: &serde_json::Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let data = &image["format-specific"]["data"];
    if let Some(extents) = data["extents"].as_array() {
        for e in extents {
            if let Some(f) = e["filename"].as_str() {
                out.push(("extent", f.to_owned()));
            }
        }
    }
    if let Some(f) = data["data-file"].as_str() {
        out.push(("data file", f.to_owned()));
    }
    let backing = image["full-backing-filename"]
        .as_str()
        .or_else(|| image["backing-filename"].as_str());
    if let Some(b) = backing {
        out.push(("backing file", b.to_owned()));
    }
    out
}

/// Check the disk at `disk` (inside `root`) with `qemu-img` as it runs in `sandbox`.
pub fn check(
    qemu_img: &Path,
    sandbox: &Sandbox,
    root: &Path,
    disk: &Path,
) -> Result<(), ViewError> {
    let real_root = root.canonicalize().map_err(|e| ViewError::Info {
        disk: disk.to_owned(),
        message: format!("cannot resolve {}: {e}", root.display()),
    })?;
    let mut current = disk.to_owned();
    for _ in 0..=MAX_CHAIN {
        let spec = standalone_spec(&sandbox.arg(&current));
        let info = info(
            qemu_img,
            sandbox,
            &current,
            &["info", "--output=json", "-U", &spec],
        )?;
        let mut next = None;
        for (what, reference) in references(&info) {
            let file = confined(sandbox, &real_root, &current, what, &reference, root)?;
            if what == "backing file" {
                next = Some(file);
            }
        }
        match next {
            Some(parent) => current = parent,
            None => return check_chain(qemu_img, sandbox, &real_root, root, disk),
        }
    }
    Err(ViewError::TooDeep(disk.to_owned()))
}

/// The whole chain as `qemu-img convert` will open it.
fn check_chain(
    qemu_img: &Path,
    sandbox: &Sandbox,
    real_root: &Path,
    root: &Path,
    disk: &Path,
) -> Result<(), ViewError> {
    let arg = sandbox.arg(disk).to_string_lossy().into_owned();
    let args = [
        "info",
        "--backing-chain",
        "--output=json",
        "-U",
        "-f",
        "vmdk",
        &arg,
    ];
    let chain = info(qemu_img, sandbox, disk, &args)?;
    let images = chain.as_array().cloned().unwrap_or_else(|| vec![chain]);
    for image in &images {
        let name = image["filename"].as_str().unwrap_or_default().to_owned();
        confined(sandbox, real_root, disk, "image", &name, root)?;
        for (what, reference) in references(image) {
            confined(sandbox, real_root, disk, what, &reference, root)?;
        }
    }
    Ok(())
}

/// The file a reference names, when it is a file inside the bundle.
fn confined(
    sandbox: &Sandbox,
    real_root: &Path,
    disk: &Path,
    what: &'static str,
    reference: &str,
    root: &Path,
) -> Result<PathBuf, ViewError> {
    let outside = || ViewError::Outside {
        disk: disk.to_owned(),
        what,
        reference: reference.to_owned(),
        root: root.to_owned(),
    };
    if reference.is_empty() || has_qemu_protocol(reference) {
        return Err(outside());
    }
    let path = sandbox.resolve(reference);
    match path.canonicalize() {
        Ok(real) if real.starts_with(real_root) && real.is_file() => Ok(real),
        _ => Err(outside()),
    }
}

fn info(
    qemu_img: &Path,
    sandbox: &Sandbox,
    disk: &Path,
    args: &[&str],
) -> Result<serde_json::Value, ViewError> {
    let failed = |message: String| ViewError::Info {
        disk: disk.to_owned(),
        message,
    };
    let out = sandbox
        .command(qemu_img)
        .map_err(|e| failed(format!("cannot run {}: {e}", qemu_img.display())))?
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run {}: {e}", qemu_img.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        return Err(failed(last.unwrap_or("no message").trim().to_owned()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("unreadable output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_data_files_and_backing_files_are_all_references() {
        let info = serde_json::json!({
            "filename": "d.vmdk",
            "full-backing-filename": "/etc/passwd",
            "backing-filename": "passwd",
            "format-specific": {"type": "vmdk", "data": {
                "extents": [{"filename": "d-flat.vmdk"}, {"filename": "/etc/hostname"}],
                "data-file": "x.raw"
            }}
        });
        assert_eq!(
            references(&info),
            vec![
                ("extent", "d-flat.vmdk".to_owned()),
                ("extent", "/etc/hostname".to_owned()),
                ("data file", "x.raw".to_owned()),
                ("backing file", "/etc/passwd".to_owned()),
            ]
        );
    }

    #[test]
    fn the_standalone_spec_disables_backing_and_escapes_the_name() {
        let s = standalone_spec(Path::new("a \"b\".vmdk"));
        let v: serde_json::Value = serde_json::from_str(s.strip_prefix("json:").unwrap()).unwrap();
        assert_eq!(v["backing"], serde_json::Value::Null);
        assert_eq!(v["file"]["filename"], "a \"b\".vmdk");
    }
}
