//! The plan's only cluster access: list Tenants, Quotas and Hypervisors when a kubeconfig
//! reaches a cluster, within a deadline. Everything else in the plan works offline from
//! YAML files with the same objects.

use std::time::Duration;

use ironvisor_crds::{Hypervisor, Quota, Tenant};
use kube::api::{Api, ListParams};

use super::capacity::TargetFacts;
use crate::cluster::{ClusterArgs, ClusterError};

/// List the three kinds (cluster-scoped) within `deadline`.
pub async fn read(args: &ClusterArgs, deadline: Duration) -> Result<TargetFacts, ClusterError> {
    let lookup = async {
        let client = args.client().await?;
        let lp = ListParams::default();
        let tenants = Api::<Tenant>::all(client.clone()).list(&lp).await?.items;
        let quotas = Api::<Quota>::all(client.clone()).list(&lp).await?.items;
        let hypervisors = Api::<Hypervisor>::all(client).list(&lp).await?.items;
        Ok::<_, ClusterError>(TargetFacts {
            tenants,
            quotas,
            hypervisors,
            source: "cluster".into(),
        })
    };
    tokio::time::timeout(deadline, lookup)
        .await
        .map_err(|_| ClusterError::Timeout(deadline))?
}
