//! Sealing a seed copy's values to its host's public seed key (an anonymous box: X25519 and
//! XSalsa20-Poly1305, as libsodium's `crypto_box_seal`), so only that host's agent opens them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_box::PublicKey;
use crypto_box::aead::OsRng;
use ironvisor_crds::Hypervisor;
use ironvisor_crds::seed as contract;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// Why a copy could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The copy names no key, or one that is not a 32-byte X25519 public key.
    #[error("the seed copy is not sealed to a valid host key ({0})")]
    BadKey(String),
    /// The cipher refused (the system's random source failed).
    #[error("sealing a seed value failed")]
    Cipher,
}

/// A published key as the 32 bytes of an X25519 public key, or `None`.
fn decode(key_b64: &str) -> Option<PublicKey> {
    let raw: [u8; 32] = STANDARD.decode(key_b64).ok()?.try_into().ok()?;
    Some(PublicKey::from_bytes(raw))
}

/// The public seed key host `node` published, when it did and it is well-formed. A malformed
/// one counts as none (logged): the VM waits with `WaitingForHostKey`.
pub async fn host_key(client: &Client, node: &str) -> Result<Option<String>, kube::Error> {
    let hv = Api::<Hypervisor>::all(client.clone()).get_opt(node).await?;
    let key = hv.and_then(|h| h.status).and_then(|s| s.seed_key);
    Ok(key.filter(|k| {
        let ok = decode(k).is_some();
        if !ok {
            tracing::warn!(
                node,
                "host published a seed key that is not a 32-byte X25519 key"
            );
        }
        ok
    }))
}

/// Replace every value of `copy` by its sealed form, to the key its
/// [`contract::SEALED_FOR_ANNOTATION`] names.
pub fn seal(copy: &mut Secret) -> Result<(), SealError> {
    let named = copy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(contract::SEALED_FOR_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let key = decode(&named).ok_or(SealError::BadKey(named))?;
    for v in copy.data.iter_mut().flat_map(|d| d.values_mut()) {
        let sealed = key.seal(&mut OsRng, &v.0).map_err(|_| SealError::Cipher)?;
        *v = ByteString(sealed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto_box::SecretKey;
    use std::collections::BTreeMap;

    fn copy_for(key_b64: &str, value: &[u8]) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(BTreeMap::from([(
            contract::SEALED_FOR_ANNOTATION.to_string(),
            key_b64.to_string(),
        )]));
        s.data = Some(BTreeMap::from([(
            "userData".to_string(),
            ByteString(value.to_vec()),
        )]));
        s
    }

    #[test]
    fn only_the_hosts_secret_key_opens_a_sealed_value() {
        let host = SecretKey::generate(&mut OsRng);
        let other = SecretKey::generate(&mut OsRng);
        let mut c = copy_for(&STANDARD.encode(host.public_key().as_bytes()), b"s3cret");
        seal(&mut c).unwrap();
        let sealed = &c.data.as_ref().unwrap()["userData"].0;
        assert_ne!(sealed.as_slice(), b"s3cret");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(host.unseal(sealed).unwrap(), b"s3cret");
        assert!(other.unseal(sealed).is_err());
    }

    #[test]
    fn a_copy_without_a_valid_key_is_not_sealed_and_not_written_in_the_clear() {
        for bad in ["", "not base64!", &STANDARD.encode([1u8; 16])] {
            let mut c = copy_for(bad, b"s3cret");
            assert!(matches!(seal(&mut c), Err(SealError::BadKey(_))), "{bad:?}");
        }
    }
}
