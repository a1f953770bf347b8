//! The pinned Debian packages of an image: `hack/release/packages/<image>.lock`, one package
//! a line, `name version architecture sha256-of-the-.deb`; `#` starts a comment.
//!
//! Owns parsing and checking that file (the SBOM lists what it names; `rootfs.sh` downloads
//! exactly it). Never talks to apt.

use std::path::{Path, PathBuf};

/// A pinned package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// Package name.
    pub name: String,
    /// Full Debian version, epoch included (`1:7.2+dfsg-7`).
    pub version: String,
    /// Architecture (`amd64`, `all`).
    pub arch: String,
    /// SHA-256 of the `.deb`, lowercase hex.
    pub sha256: String,
}

/// Why a lock file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// It could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `name version arch sha256`.
    #[error(
        "{path}:{line}: expected `name version architecture sha256` \
         (regenerate the file with hack/release/pin-packages.sh)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.~:".contains(c))
}

fn valid_sha256(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Parse the text of a lock file (`path` only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Pinned>, LockError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let malformed = || LockError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
        };
        let [name, version, arch, sha256] = fields[..] else {
            return Err(malformed());
        };
        if !valid_name(name)
            || !valid_version(version)
            || !valid_name(arch)
            || !valid_sha256(sha256)
        {
            return Err(malformed());
        }
        out.push(Pinned {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            sha256: sha256.into(),
        });
    }
    Ok(out)
}

/// Read and parse a lock file.
pub fn read(path: &Path) -> Result<Vec<Pinned>, LockError> {
    let text = std::fs::read_to_string(path).map_err(|source| LockError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn lines_with_comments_and_epochs_parse() {
        let text = format!(
            "# pinned\nqemu-utils 1:7.2+dfsg-7+deb12u18+b3 amd64 {SHA}\n\nlibc6 2.36-9 amd64 {SHA} # glibc\n"
        );
        let pins = parse(Path::new("x.lock"), &text).unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!(pins[0].version, "1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(pins[1].name, "libc6");
    }

    #[test]
    fn hostile_or_short_lines_are_refused_with_their_line_number() {
        for bad in [
            "libc6 2.36 amd64".to_owned(),
            format!("libc6 2.36 amd64 {SHA} extra"),
            format!("../../etc 2.36 amd64 {SHA}"),
            format!("libc6 $(reboot) amd64 {SHA}"),
            "libc6 2.36 amd64 NOTAHASH".to_owned(),
            format!("LIBC6 2.36 amd64 {SHA}"),
        ] {
            let text = format!("# header\n{bad}\n");
            let err = parse(Path::new("agent.lock"), &text).unwrap_err();
            assert!(
                err.to_string().starts_with("agent.lock:2:"),
                "{bad:?}: {err}"
            );
        }
    }
}
