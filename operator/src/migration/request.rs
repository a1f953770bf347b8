//! Creating migrations from the operator's own controllers (a drain, a rebalancing): the
//! one entry point, so every move they make is an ordinary `VirtualMachineMigration` that
//! waits for its place under the policy's limits, takes the VM's lock and is cancelled by
//! deleting it, like a user's.
//!
//! Idempotent: a VM with a migration not over gets no second one (the caller is told which
//! one runs), so a level-triggered caller may ask on every pass.

use std::collections::BTreeMap;

use ironvisor_crds::migration::{VirtualMachineMigration, VirtualMachineMigrationSpec};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

/// Label naming who asked for a migration.
pub const ORIGIN_LABEL: &str = "ironvisor.io/migration-origin";

/// Who asks for a migration (the value of [`ORIGIN_LABEL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A host entering maintenance.
    Drain,
    /// Rebalancing (DRS).
    Rebalance,
}

impl Origin {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Drain => "drain",
            Origin::Rebalance => "rebalance",
        }
    }
}

/// Why a migration could not be requested.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The API server refused the list or the create.
    #[error("requesting a migration of {vm}")]
    Api {
        /// `namespace/name` of the VM.
        vm: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
}

/// What [`request_migration`] found or made.
#[derive(Clone, Debug)]
pub struct Requested {
    /// The VM's migration: the new one, or the one already under way.
    pub migration: VirtualMachineMigration,
    /// Whether it was created now.
    pub created: bool,
}

/// The spec of a migration of `vm` (to `target`, when given).
pub fn spec(vm: &str, target: Option<&str>) -> VirtualMachineMigrationSpec {
    VirtualMachineMigrationSpec {
        vm_name: vm.to_owned(),
        target_node: target.map(str::to_owned),
        bandwidth_mib_per_second: None,
        completion_timeout_seconds: None,
    }
}

/// Ask for a live migration of `namespace/vm` (to `target`, or a host placement chooses),
/// on behalf of `origin`. The migration runs under the policies like any other: it waits
/// `Pending` (reason `ClusterLimit` or `HostLimit`) while the limits are reached. When the
/// VM already has a migration not over, that one is returned and nothing is created.
pub async fn request_migration(
    client: &Client,
    namespace: &str,
    vm: &str,
    target: Option<&str>,
    origin: Origin,
) -> Result<Requested, RequestError> {
    let err = |source| RequestError::Api {
        vm: format!("{namespace}/{vm}"),
        source,
    };
    let api = Api::<VirtualMachineMigration>::namespaced(client.clone(), namespace);
    let existing = api.list(&ListParams::default()).await.map_err(err)?;
    if let Some(m) = existing.items.into_iter().find(|m| {
        m.spec.vm_name == vm
            && !m.status.as_ref().is_some_and(|s| s.phase.is_terminal())
            && m.metadata.deletion_timestamp.is_none()
    }) {
        return Ok(Requested {
            migration: m,
            created: false,
        });
    }
    let m = VirtualMachineMigration {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-{}-", short(vm), origin.as_str())),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                ORIGIN_LABEL.to_owned(),
                origin.as_str().to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: spec(vm, target),
        status: None,
    };
    let created = api.create(&PostParams::default(), &m).await.map_err(err)?;
    tracing::info!(
        migration = created.name_any(),
        vm,
        origin = origin.as_str(),
        "migration requested"
    );
    Ok(Requested {
        migration: created,
        created: true,
    })
}

/// The VM's name cut so the generated name (plus origin and suffix) stays a valid name.
fn short(vm: &str) -> &str {
    let mut end = vm.len().min(200);
    while !vm.is_char_boundary(end) {
        end -= 1;
    }
    vm[..end].trim_end_matches('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_stay_within_the_limit() {
        let long = "a".repeat(253);
        assert_eq!(short(&long).len(), 200);
        assert_eq!(short("web"), "web");
        let n = format!("{}-{}-", short(&long), Origin::Rebalance.as_str());
        // The API server adds five characters.
        assert!(n.len() + 5 <= 253);
    }

    #[test]
    fn the_spec_names_only_the_vm_and_the_target() {
        let s = spec("web", Some("h2"));
        assert_eq!(s.vm_name, "web");
        assert_eq!(s.target_node.as_deref(), Some("h2"));
        assert!(s.bandwidth_mib_per_second.is_none() && s.completion_timeout_seconds.is_none());
    }
}
