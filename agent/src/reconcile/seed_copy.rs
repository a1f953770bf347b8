//! Cloud-init data for a VM's seed: inline values from the spec, values from Secrets only
//! through the operator's seed copy `ironvisor-seed-<vm uid>` in the seed namespace (`ironvisor-seeds`).
//!
//! The agent never reads a tenant's Secret: RBAC gives it `get` on Secrets in the system
//! namespace only. A copy that is missing, or that was made for another Secret than the spec
//! names now (the spec changed and the operator has not copied again yet), leaves the VM
//! waiting (`ImagesReady=False SeedPending`); the operator reports a missing source Secret on
//! the VM itself.

use super::engine::CloudInitData;
use ironvisor_crds::seed::{self, Field};
use ironvisor_crds::vm::CloudInit;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// Inline values, and the copy's values for the fields that come from Secrets. `copy` is
/// the seed copy (`None` when it does not exist); it is only consulted when needed. When the
/// copy is missing or stale, `pending` says so.
pub fn resolve(uid: &str, ci: Option<&CloudInit>, copy: Option<&Secret>) -> CloudInitData {
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
        let text = String::from_utf8_lossy(&value.0).into_owned();
        match field {
            Field::UserData => data.user_data = Some(text),
            Field::NetworkData => data.network_data = Some(text),
        }
    }
    data
}

/// Read the seed copy when the VM needs one (by name: the agent may not list Secrets) and
/// resolve its cloud-init data.
pub async fn fetch(
    client: &Client,
    uid: &str,
    ci: Option<&CloudInit>,
) -> Result<CloudInitData, kube::Error> {
    if seed::references(ci).is_empty() {
        return Ok(resolve(uid, ci, None));
    }
    let copy = Api::<Secret>::namespaced(client.clone(), seed::NAMESPACE)
        .get_opt(&seed::secret_name(uid))
        .await?;
    Ok(resolve(uid, ci, copy.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::vm::LocalObjectReference;
    use k8s_openapi::ByteString;

    fn from_secret(name: &str) -> CloudInit {
        CloudInit {
            user_data_secret_ref: Some(LocalObjectReference { name: name.into() }),
            network_data: Some("version: 2\n".into()),
            ..Default::default()
        }
    }

    fn copy(source: &str, value: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(
            [(
                "ironvisor.io/user-data-secret".to_string(),
                source.to_string(),
            )]
            .into(),
        );
        s.data = Some(
            [(
                "userData".to_string(),
                ByteString(value.as_bytes().to_vec()),
            )]
            .into(),
        );
        s
    }

    #[test]
    fn inline_data_needs_no_copy() {
        let ci = CloudInit {
            user_data: Some("#cloud-config\n".into()),
            ..Default::default()
        };
        let d = resolve("u1", Some(&ci), None);
        assert_eq!(d.pending, None);
        assert_eq!(d.user_data.as_deref(), Some("#cloud-config\n"));
    }

    #[test]
    fn a_missing_copy_waits_and_names_it() {
        let why = resolve("u1", Some(&from_secret("init")), None)
            .pending
            .expect("no copy, no seed");
        assert!(why.contains("ironvisor-seeds/ironvisor-seed-u1"), "{why}");
    }

    #[test]
    fn a_copy_of_another_secret_than_the_spec_names_waits() {
        let stale = copy("old-init", "#cloud-config\nold\n");
        let why = resolve("u1", Some(&from_secret("init")), Some(&stale))
            .pending
            .expect("a stale copy, no seed");
        assert!(why.contains("Secret init"), "{why}");
    }

    #[test]
    fn a_current_copy_gives_its_value_and_inline_values_stay() {
        let c = copy("init", "#cloud-config\nfrom-secret\n");
        let d = resolve("u1", Some(&from_secret("init")), Some(&c));
        assert_eq!(d.pending, None);
        assert_eq!(d.user_data.as_deref(), Some("#cloud-config\nfrom-secret\n"));
        assert_eq!(d.network_data.as_deref(), Some("version: 2\n"));
    }
}
