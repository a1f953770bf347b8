//! Cloud-init data for a VM's seed: inline values from the spec, values from Secrets only
//! through the operator's seed copy `ironvisor-seed-<vm uid>` in the seed namespace (`ironvisor-seeds`).
//!
//! The agent never reads a tenant's Secret: RBAC gives it `get` on Secrets in the seed
//! namespace only, and the values there are sealed to the placed host's seed key, so the
//! agent opens only its own hosts' copies. A copy that is missing, made for another Secret
//! than the spec names now (the spec changed and the operator has not copied again yet), or
//! sealed to another key (the VM moved here and the operator has not sealed it again yet)
//! leaves the VM waiting (`ImagesReady=False SeedPending`); the operator reports a missing
//! source Secret on the VM itself.

use super::engine::CloudInitData;
use crate::seed_key::SeedKey;
use ironvisor_crds::seed::{self, Field};
use ironvisor_crds::vm::CloudInit;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// Inline values, and the copy's values for the fields that come from Secrets, opened with
/// `key`. `copy` is the seed copy (`None` when it does not exist); it is only consulted when
/// needed. When the copy is missing, stale or sealed to another key, `pending` says so.
pub fn resolve(
    uid: &str,
    ci: Option<&CloudInit>,
    copy: Option<&Secret>,
    key: &SeedKey,
) -> CloudInitData {
    let Some(ci) = ci else {
        return CloudInitData::default();
    };
    let mut data = CloudInitData {
        user_data: ci.user_data.clone(),
        network_data: ci.network_data.clone(),
        pending: None,
    };
    let refs = seed::references(Some(ci));
    if refs.is_empty() {
        return data;
    }
    let name = seed::secret_name(uid);
    let Some(copy) = copy else {
        data.pending = Some(format!(
            "waiting for the operator to copy the cloud-init Secret(s) into {}/{name}",
            seed::NAMESPACE
        ));
        return data;
    };
    let empty = Default::default();
    let values = copy.data.as_ref().unwrap_or(&empty);
    let annotations = copy.metadata.annotations.as_ref();
    let sealed_for = annotations.and_then(|a| a.get(seed::SEALED_FOR_ANNOTATION));
    if sealed_for.map(String::as_str) != Some(key.public_b64()) {
        data.pending = Some(format!(
            "waiting for the operator to seal {}/{name} to this host's seed key (it is sealed \
             to another host's)",
            seed::NAMESPACE
        ));
        return data;
    }
    for (field, secret) in refs {
        let from = annotations.and_then(|a| a.get(field.source_annotation()));
        let value = values.get(field.copy_key());
        let (Some(value), true) = (value, from.is_some_and(|f| f == secret)) else {
            data.pending = Some(format!(
                "waiting for the operator to copy {} (Secret {secret}) into {}/{name}",
                field.spec_field(),
                seed::NAMESPACE
            ));
            return data;
        };
        let Ok(opened) = key.open(&value.0) else {
            data.pending = Some(format!(
                "{} in {}/{name} cannot be opened with this host's seed key (altered, or \
                 sealed to another key); waiting for the operator to seal it again",
                field.spec_field(),
                seed::NAMESPACE
            ));
            return data;
        };
        let text = String::from_utf8_lossy(&opened).into_owned();
        match field {
            Field::UserData => data.user_data = Some(text),
            Field::NetworkData => data.network_data = Some(text),
        }
    }
    data
}

/// Read the seed copy when the VM needs one (by name: the agent may not list Secrets) and
/// resolve its cloud-init data. When the placed host's copy cannot give it here (it is
/// sealed to the host a live migration is moving the VM from), the incoming copy the operator
/// seals to the migration's target is tried: the target's agent builds the seed from it
/// before the guest arrives.
pub async fn fetch(
    client: &Client,
    uid: &str,
    ci: Option<&CloudInit>,
    key: &SeedKey,
) -> Result<CloudInitData, kube::Error> {
    if seed::references(ci).is_empty() {
        return Ok(resolve(uid, ci, None, key));
    }
    let api = Api::<Secret>::namespaced(client.clone(), seed::NAMESPACE);
    let copy = api.get_opt(&seed::secret_name(uid)).await?;
    let placed = resolve(uid, ci, copy.as_ref(), key);
    if placed.pending.is_none() {
        return Ok(placed);
    }
    let Some(incoming) = api.get_opt(&seed::incoming_secret_name(uid)).await? else {
        return Ok(placed);
    };
    let data = resolve(uid, ci, Some(&incoming), key);
    Ok(if data.pending.is_none() { data } else { placed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed_key::seal_to;
    use ironvisor_crds::vm::LocalObjectReference;
    use k8s_openapi::ByteString;

    fn key() -> (tempfile::TempDir, SeedKey) {
        let dir = tempfile::tempdir().unwrap();
        let k = SeedKey::load_or_create(dir.path()).unwrap();
        (dir, k)
    }

    fn from_secret(name: &str) -> CloudInit {
        CloudInit {
            user_data_secret_ref: Some(LocalObjectReference { name: name.into() }),
            network_data: Some("version: 2\n".into()),
            ..Default::default()
        }
    }

    /// A copy of `value` from Secret `source`, sealed to `to`.
    fn copy(source: &str, value: &str, to: &SeedKey) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(
            [
                (
                    "ironvisor.io/user-data-secret".to_string(),
                    source.to_string(),
                ),
                (
                    seed::SEALED_FOR_ANNOTATION.to_string(),
                    to.public_b64().to_string(),
                ),
            ]
            .into(),
        );
        let sealed = seal_to(to.public_b64(), value.as_bytes()).unwrap();
        s.data = Some([("userData".to_string(), ByteString(sealed))].into());
        s
    }

    #[test]
    fn inline_data_needs_no_copy() {
        let (_d, k) = key();
        let ci = CloudInit {
            user_data: Some("#cloud-config\n".into()),
            ..Default::default()
        };
        let d = resolve("u1", Some(&ci), None, &k);
        assert_eq!(d.pending, None);
        assert_eq!(d.user_data.as_deref(), Some("#cloud-config\n"));
    }

    #[test]
    fn a_missing_copy_waits_and_names_it() {
        let (_d, k) = key();
        let why = resolve("u1", Some(&from_secret("init")), None, &k)
            .pending
            .expect("no copy, no seed");
        assert!(why.contains("ironvisor-seeds/ironvisor-seed-u1"), "{why}");
    }

    #[test]
    fn a_copy_of_another_secret_than_the_spec_names_waits() {
        let (_d, k) = key();
        let stale = copy("old-init", "#cloud-config\nold\n", &k);
        let why = resolve("u1", Some(&from_secret("init")), Some(&stale), &k)
            .pending
            .expect("a stale copy, no seed");
        assert!(why.contains("Secret init"), "{why}");
    }

    #[test]
    fn a_current_copy_gives_its_value_and_inline_values_stay() {
        let (_d, k) = key();
        let c = copy("init", "#cloud-config\nfrom-secret\n", &k);
        let d = resolve("u1", Some(&from_secret("init")), Some(&c), &k);
        assert_eq!(d.pending, None);
        assert_eq!(d.user_data.as_deref(), Some("#cloud-config\nfrom-secret\n"));
        assert_eq!(d.network_data.as_deref(), Some("version: 2\n"));
    }

    #[test]
    fn another_hosts_agent_cannot_read_a_copy_sealed_for_this_host() {
        let (_d1, mine) = key();
        let (_d2, other) = key();
        let c = copy("init", "#cloud-config\npassword: s3cret\n", &mine);
        let d = resolve("u1", Some(&from_secret("init")), Some(&c), &other);
        assert_eq!(d.user_data, None);
        let why = d.pending.expect("not for this host");
        assert!(why.contains("sealed to another host's"), "{why}");
        // Relabelled as sealed for the other host: still cannot be opened.
        let mut forged = c.clone();
        forged.metadata.annotations.as_mut().unwrap().insert(
            seed::SEALED_FOR_ANNOTATION.into(),
            other.public_b64().into(),
        );
        let d = resolve("u1", Some(&from_secret("init")), Some(&forged), &other);
        assert_eq!(d.user_data, None);
        assert!(d.pending.unwrap().contains("cannot be opened"));
    }
}
