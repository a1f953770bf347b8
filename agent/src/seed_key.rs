//! The host's seed key: the X25519 key pair the operator seals cloud-init data to, so that of
//! all agents (one service account, one Secret namespace) only the VM's own host can read its
//! seed copy (`ironvisor_crds::seed`).
//!
//! The private half is made once per host in the state directory (`seed-key`, mode 0600,
//! 32 bytes) and never leaves it; the public half is published in the host's Hypervisor
//! status at every heartbeat.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};

/// File name of the private key in the state directory.
pub const FILE: &str = "seed-key";

/// Why the key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SeedKeyError {
    /// Reading or writing the key file failed.
    #[error("seed key {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The file is not a key this agent wrote.
    #[error(
        "seed key {0} is not a 32-byte key with mode 0600 (found {1}); move it away and restart \
         the agent to make a new one (copies sealed to the old key are sealed again)"
    )]
    Invalid(PathBuf, String),
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The value was sealed to another key, or altered.
    #[error("the value is not sealed to this host's seed key, or was altered")]
    NotForThisKey,
}

/// The host's key pair.
pub struct SeedKey {
    secret: SecretKey,
    public_b64: String,
}

impl std::fmt::Debug for SeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedKey")
            .field("public", &self.public_b64)
            .finish_non_exhaustive()
    }
}

impl SeedKey {
    /// Load the key from `state_dir`, or make and store one when there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SeedKeyError> {
        let path = state_dir.join(FILE);
        let io = |e| SeedKeyError::Io(path.clone(), e);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
                let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    SeedKeyError::Invalid(path.clone(), format!("{} bytes", bytes.len()))
                })?;
                if mode != 0o600 {
                    return Err(SeedKeyError::Invalid(path, format!("mode {mode:o}")));
                }
                Ok(Self::from_secret(SecretKey::from_bytes(raw)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = SecretKey::generate(&mut OsRng);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                f.write_all(&secret.to_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                tracing::info!(path = %path.display(), "made this host's seed key");
                Ok(Self::from_secret(secret))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_secret(secret: SecretKey) -> Self {
        let public_b64 = STANDARD.encode(secret.public_key().as_bytes());
        SeedKey { secret, public_b64 }
    }

    /// The public key as published (base64).
    pub fn public_b64(&self) -> &str {
        &self.public_b64
    }

    /// Open a value sealed to this key.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.secret
            .unseal(sealed)
            .map_err(|_| OpenError::NotForThisKey)
    }
}

/// Seal `value` to a published public key (what the operator does; here for tests).
pub fn seal_to(public_b64: &str, value: &[u8]) -> Option<Vec<u8>> {
    let raw: [u8; 32] = STANDARD.decode(public_b64).ok()?.try_into().ok()?;
    PublicKey::from_bytes(raw).seal(&mut OsRng, value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_kept_private_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = SeedKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = SeedKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_b64(), b.public_b64());
        let sealed = seal_to(a.public_b64(), b"#cloud-config\n").unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"#cloud-config\n");
    }

    #[test]
    fn another_hosts_key_cannot_open_a_value_and_an_altered_value_is_refused() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mine = SeedKey::load_or_create(d1.path()).unwrap();
        let other = SeedKey::load_or_create(d2.path()).unwrap();
        let mut sealed = seal_to(mine.public_b64(), b"password: s3cret").unwrap();
        assert!(other.open(&sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(mine.open(&sealed).is_err());
    }

    #[test]
    fn a_key_file_readable_by_others_or_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        SeedKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SeedKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("mode 644"), "{e}");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SeedKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("5 bytes"), "{e}");
    }
}
