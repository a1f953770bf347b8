//! The one place where the operator itself asks for a live migration (a host drain today;
//! rebalancing later). Whatever limits how many migrations run at once (per cluster,
//! outbound per host) applies to these as to a user's: they are ordinary
//! `VirtualMachineMigration`s, driven by the same controller.

use std::collections::BTreeMap;

use ironvisor_crds::migration::{VirtualMachineMigration, VirtualMachineMigrationSpec};
use kube::Client;
use kube::api::{Api, PostParams};

/// A migration the operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationRequest {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM.
    pub vm: String,
    /// A host to move it to; `None` lets placement choose.
    pub target: Option<String>,
    /// Why (the name's middle part: `<vm>-<why>-<random>`), e.g. `drain`.
    pub why: &'static str,
    /// Labels saying who asked (e.g. the drained host).
    pub labels: BTreeMap<String, String>,
}

/// The migration object for `req` (the API server completes its generated name).
pub fn object(req: &MigrationRequest) -> VirtualMachineMigration {
    let mut m = VirtualMachineMigration::new(
        "",
        VirtualMachineMigrationSpec {
            vm_name: req.vm.clone(),
            target_node: req.target.clone(),
            bandwidth_mib_per_second: None,
            completion_timeout_seconds: None,
        },
    );
    m.metadata.name = None;
    m.metadata.namespace = Some(req.namespace.clone());
    let prefix: String = req.vm.chars().take(200).collect();
    m.metadata.generate_name = Some(format!("{prefix}-{}-", req.why));
    m.metadata.labels = Some(req.labels.clone());
    m
}

/// Create the migration `req` asks for; returns it with its generated name.
pub async fn create(
    client: &Client,
    req: &MigrationRequest,
) -> Result<VirtualMachineMigration, kube::Error> {
    Api::<VirtualMachineMigration>::namespaced(client.clone(), &req.namespace)
        .create(&PostParams::default(), &object(req))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_names_the_vm_and_who_asked_and_fits_any_vm_name() {
        let req = MigrationRequest {
            namespace: "t".into(),
            vm: "x".repeat(253),
            target: None,
            why: "drain",
            labels: [("ironvisor.io/drain".to_owned(), "h1".to_owned())].into(),
        };
        let m = object(&req);
        assert_eq!(m.spec.vm_name.len(), 253);
        let g = m.metadata.generate_name.unwrap();
        assert!(g.ends_with("-drain-") && g.len() + 5 <= 253, "{g}");
        assert_eq!(m.metadata.labels.unwrap()["ironvisor.io/drain"], "h1");
        assert!(m.metadata.name.is_none());
    }
}
