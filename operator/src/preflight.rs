//! Whether the cluster has what the operator needs before it can do anything: the Ironvisor
//! CRDs. Without them every watch fails with a bare "could not find the requested resource";
//! this says which CRD is missing and what to apply, once, and clears the report when they
//! appear.
//!
//! Owns only that check; it never installs anything itself.

use std::sync::Arc;
use std::time::Duration;

use ironvisor_crds::{Hypervisor, Quota, Tenant, VirtualMachine};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};

use crate::metrics::Metrics;

/// The problem source name under which missing CRDs are reported.
pub const SOURCE: &str = "crds";

/// How often to look again while a CRD is missing.
const RECHECK: Duration = Duration::from_secs(5);

/// `plural.group` of `K`, as `kubectl get crd` names it.
fn crd_name<K: Resource<DynamicType = ()>>() -> String {
    format!("{}.{}", K::plural(&()), K::group(&()))
}

/// Whether the API serves `K` (`None`: could not tell, another error).
async fn served<K>(client: &Client) -> Option<bool>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match Api::<K>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => Some(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Some(false),
        Err(_) => None,
    }
}

/// The CRDs the API does not serve.
pub async fn missing_crds(client: &Client) -> Vec<String> {
    let checks = [
        (
            served::<VirtualMachine>(client).await,
            crd_name::<VirtualMachine>(),
        ),
        (served::<Hypervisor>(client).await, crd_name::<Hypervisor>()),
        (served::<Tenant>(client).await, crd_name::<Tenant>()),
        (served::<Quota>(client).await, crd_name::<Quota>()),
    ];
    checks
        .into_iter()
        .filter(|(served, _)| *served == Some(false))
        .map(|(_, name)| name)
        .collect()
}

/// The report for missing CRDs, naming each and the remedy.
pub fn describe(missing: &[String]) -> Option<String> {
    match missing {
        [] => None,
        [one] => Some(format!(
            "CustomResourceDefinition {one} is not installed: apply manifests/ (kubectl apply -k manifests/)"
        )),
        many => Some(format!(
            "CustomResourceDefinitions {} are not installed: apply manifests/ (kubectl apply -k manifests/)",
            many.join(", ")
        )),
    }
}

/// Check until every CRD is served, reporting what is missing once per change (an error line,
/// the metrics' problem); then wait forever.
pub async fn run(client: Client, metrics: Arc<Metrics>) {
    let mut reported: Option<String> = None;
    loop {
        let now = describe(&missing_crds(&client).await);
        if now != reported {
            match &now {
                Some(p) => tracing::error!("the operator cannot work: {p}"),
                None => tracing::info!("the Ironvisor CRDs are installed"),
            }
            metrics.set_problem(SOURCE, now.clone());
            reported = now;
        }
        if reported.is_none() {
            return std::future::pending().await;
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_names_are_plural_dot_group() {
        assert_eq!(crd_name::<VirtualMachine>(), "virtualmachines.ironvisor.io");
        assert_eq!(crd_name::<Quota>(), "quotas.ironvisor.io");
    }

    #[test]
    fn the_report_names_every_missing_crd_and_the_remedy() {
        assert_eq!(describe(&[]), None);
        assert_eq!(
            describe(&["tenants.ironvisor.io".into()]).as_deref(),
            Some(
                "CustomResourceDefinition tenants.ironvisor.io is not installed: apply manifests/ (kubectl apply -k manifests/)"
            )
        );
        let two = describe(&["a.ironvisor.io".into(), "b.ironvisor.io".into()]).unwrap();
        assert!(two.starts_with("CustomResourceDefinitions a.ironvisor.io, b.ironvisor.io are"));
    }
}
