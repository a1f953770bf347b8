//! Safety of `hostPath` images: a path a user writes must resolve to a regular file under
//! `--images-dir`, symlinks included.
//!
//! The check canonicalises both sides and the agent then uses only the canonical path (for
//! the qcow2 backing file and the kernel), so what was checked is what is used. The images
//! directory belongs to the host's administrator; the agent never writes into it.

use std::path::{Component, Path, PathBuf};

/// Why a hostPath is refused. Messages name the path as written, never what it resolves to,
/// so the error does not leak the host's layout outside the images directory.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Not absolute, empty, or with `..` or NUL.
    #[error("hostPath {0:?} must be an absolute path without '..'")]
    Malformed(String),
    /// Does not exist or cannot be read.
    #[error("hostPath {0:?} does not exist on this host")]
    NotFound(String),
    /// Resolves outside the images directory.
    #[error("hostPath {0:?} is outside the images directory")]
    Escapes(String),
    /// Not a regular file.
    #[error("hostPath {0:?} is not a regular file")]
    NotAFile(String),
    /// The images directory itself is unusable.
    #[error("the images directory cannot be resolved")]
    ImagesDir(#[source] std::io::Error),
}

/// Resolve `requested` under `images_dir`. `requested` may be given absolute under the
/// images directory (as the API requires), e.g. `/var/lib/ironvisor/images/debian.qcow2`.
pub fn resolve_host_path(images_dir: &Path, requested: &str) -> Result<PathBuf, PathError> {
    let malformed = || PathError::Malformed(requested.to_owned());
    let p = Path::new(requested);
    if requested.is_empty()
        || requested.contains('\0')
        || !p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir))
    {
        return Err(malformed());
    }
    let root = images_dir.canonicalize().map_err(PathError::ImagesDir)?;
    let resolved = p
        .canonicalize()
        .map_err(|_| PathError::NotFound(requested.to_owned()))?;
    if resolved == root || !resolved.starts_with(&root) {
        return Err(PathError::Escapes(requested.to_owned()));
    }
    let meta =
        std::fs::metadata(&resolved).map_err(|_| PathError::NotFound(requested.to_owned()))?;
    if !meta.is_file() {
        return Err(PathError::NotAFile(requested.to_owned()));
    }
    if resolved.to_str().is_none() {
        return Err(malformed());
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _tmp: tempfile::TempDir,
        images: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("images");
        let outside = tmp.path().join("secret");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::write(images.join("debian.qcow2"), b"img").unwrap();
        std::fs::write(images.join("sub/k"), b"kernel").unwrap();
        std::fs::write(&outside, b"secret").unwrap();
        Fixture {
            _tmp: tmp,
            images,
            outside,
        }
    }

    fn s(p: &Path) -> String {
        p.to_str().unwrap().to_owned()
    }

    #[test]
    fn an_image_under_the_images_directory_resolves() {
        let f = fixture();
        let r = resolve_host_path(&f.images, &s(&f.images.join("debian.qcow2"))).unwrap();
        assert_eq!(r, f.images.canonicalize().unwrap().join("debian.qcow2"));
        assert!(resolve_host_path(&f.images, &s(&f.images.join("sub/k"))).is_ok());
    }

    #[test]
    fn a_symlink_inside_the_images_directory_is_followed() {
        let f = fixture();
        symlink(f.images.join("debian.qcow2"), f.images.join("latest")).unwrap();
        let r = resolve_host_path(&f.images, &s(&f.images.join("latest"))).unwrap();
        assert!(r.ends_with("debian.qcow2"));
    }

    #[test]
    fn a_symlink_pointing_outside_cannot_escape() {
        let f = fixture();
        symlink(&f.outside, f.images.join("evil")).unwrap();
        assert!(matches!(
            resolve_host_path(&f.images, &s(&f.images.join("evil"))),
            Err(PathError::Escapes(_))
        ));
        symlink("/etc", f.images.join("etc")).unwrap();
        let through_dir = s(&f.images.join("etc/passwd"));
        assert!(matches!(
            resolve_host_path(&f.images, &through_dir),
            Err(PathError::Escapes(_))
        ));
    }

    #[test]
    fn dot_dot_relative_and_nul_paths_are_malformed() {
        let f = fixture();
        let dotdot = format!("{}/../secret", s(&f.images));
        for bad in [dotdot.as_str(), "relative/path", "", "/images/a\0b", "/.."] {
            assert!(
                matches!(
                    resolve_host_path(&f.images, bad),
                    Err(PathError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_outside_the_images_directory_are_refused() {
        let f = fixture();
        assert!(matches!(
            resolve_host_path(&f.images, &s(&f.outside)),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            resolve_host_path(&f.images, "/etc/passwd"),
            Err(PathError::Escapes(_))
        ));
    }

    #[test]
    fn a_sibling_directory_with_a_common_prefix_is_outside() {
        let f = fixture();
        let sibling = f.images.with_file_name("images2");
        std::fs::create_dir_all(&sibling).unwrap();
        std::fs::write(sibling.join("x"), b"x").unwrap();
        assert!(matches!(
            resolve_host_path(&f.images, &s(&sibling.join("x"))),
            Err(PathError::Escapes(_))
        ));
    }

    #[test]
    fn the_images_directory_itself_and_subdirectories_are_not_images() {
        let f = fixture();
        assert!(matches!(
            resolve_host_path(&f.images, &s(&f.images)),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            resolve_host_path(&f.images, &s(&f.images.join("sub"))),
            Err(PathError::NotAFile(_))
        ));
    }

    #[test]
    fn a_missing_file_is_reported_as_not_found() {
        let f = fixture();
        assert!(matches!(
            resolve_host_path(&f.images, &s(&f.images.join("nope"))),
            Err(PathError::NotFound(_))
        ));
    }
}
