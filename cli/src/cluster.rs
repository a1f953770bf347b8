//! Reaching the cluster the way kubectl does: `--kubeconfig`, then `$KUBECONFIG`, then
//! `~/.kube/config`; `--context`; `-n/--namespace`, else the context's namespace, else
//! `default`. Shared by every verb; the import uses it for the optional quota lookup,
//! which fails soft, and for `--dry-run-server`, which does not.

use std::path::PathBuf;
use std::time::Duration;

use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::{Quota, Tenant, VirtualMachine, labels};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Options every cluster-facing verb takes, as kubectl spells them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// Namespace of the VM (default: the kubeconfig context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// Why the cluster could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig.
    #[error("no usable kubeconfig: {0}")]
    Config(String),
    /// A request failed.
    #[error("request to the cluster failed: {0}")]
    Api(#[from] kube::Error),
    /// The lookup took too long.
    #[error("the cluster did not answer within {0:?}")]
    Timeout(Duration),
}

impl ClusterArgs {
    /// The client configuration these options select.
    pub async fn config(&self) -> Result<Config, ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        match &self.kubeconfig {
            Some(path) => {
                let kc =
                    Kubeconfig::read_from(path).map_err(|e| ClusterError::Config(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| ClusterError::Config(e.to_string()))
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| ClusterError::Config(e.to_string())),
            None => Config::infer()
                .await
                .map_err(|e| ClusterError::Config(e.to_string())),
        }
    }

    /// The namespace: `-n`, else the context's, else `default` (without a kubeconfig too).
    pub async fn namespace(&self) -> String {
        if let Some(ns) = &self.namespace {
            return ns.clone();
        }
        match self.config().await {
            Ok(c) => c.default_namespace,
            Err(_) => "default".into(),
        }
    }

    /// A client for these options.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        let mut config = self.config().await?;
        config.connect_timeout = Some(Duration::from_secs(3));
        config.read_timeout = Some(Duration::from_secs(5));
        Client::try_from(config).map_err(ClusterError::Api)
    }
}

/// What the tenant's quotas leave for storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageLeft {
    /// Bytes left under the tightest quota of the tenant and its ancestors.
    Bytes(u64),
    /// No quota limits storage.
    Unlimited,
}

/// Pure part of the lookup: the tightest `hard.storage - used.storage` over `quotas` that
/// bound one of `tenants`.
pub fn storage_left(tenants: &[String], quotas: &[Quota]) -> StorageLeft {
    let mut left: Option<i128> = None;
    for q in quotas.iter().filter(|q| tenants.contains(&q.spec.tenant)) {
        let Some(hard) = q
            .spec
            .hard
            .storage
            .as_ref()
            .and_then(|h| to_bytes(&h.0).ok())
        else {
            continue;
        };
        let used = q
            .status
            .as_ref()
            .and_then(|s| s.used.as_ref())
            .and_then(|u| to_bytes(&u.storage.0).ok())
            .unwrap_or(0);
        let this = (hard - used).max(0);
        left = Some(left.map_or(this, |l| l.min(this)));
    }
    match left {
        Some(b) => StorageLeft::Bytes(u64::try_from(b).unwrap_or(u64::MAX)),
        None => StorageLeft::Unlimited,
    }
}

/// Ask the cluster what storage is left for the tenant owning `namespace` (following the
/// tenant's parents, whose quotas bound it too). `Ok(None)` when the namespace belongs to
/// no tenant.
pub async fn remaining_storage(
    client: Client,
    namespace: &str,
) -> Result<Option<StorageLeft>, ClusterError> {
    const MAX_DEPTH: usize = 16;
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await?;
    let Some(mut tenant) = ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::TENANT))
        .cloned()
    else {
        return Ok(None);
    };
    let tenants_api = Api::<Tenant>::all(client.clone());
    let mut chain = Vec::new();
    while chain.len() < MAX_DEPTH && !chain.contains(&tenant) {
        chain.push(tenant.clone());
        match tenants_api
            .get_opt(&tenant)
            .await?
            .and_then(|t| t.spec.parent)
        {
            Some(parent) => tenant = parent,
            None => break,
        }
    }
    let quotas = Api::<Quota>::all(client)
        .list(&ListParams::default())
        .await?;
    Ok(Some(storage_left(&chain, &quotas.items)))
}

/// [`remaining_storage`] with a deadline, for callers that fail soft.
pub async fn remaining_storage_within(
    args: &ClusterArgs,
    namespace: &str,
    deadline: Duration,
) -> Result<Option<StorageLeft>, ClusterError> {
    let lookup = async {
        let client = args.client().await?;
        remaining_storage(client, namespace).await
    };
    tokio::time::timeout(deadline, lookup)
        .await
        .map_err(|_| ClusterError::Timeout(deadline))?
}

/// Field manager of the import's server-side dry run.
pub const IMPORT_MANAGER: &str = "ivctl-import";

/// Ask the API server to validate `vm` as `kubectl apply --server-side --force-conflicts
/// --dry-run=server` would: a server-side apply with `dryRun=All` (schema, CEL rules,
/// admission policies; nothing is stored), within `deadline`. Forced, so that fields another
/// manager owns on an existing VM of that name are no refusal: only validation is asked.
pub async fn server_dry_run(
    args: &ClusterArgs,
    vm: &VirtualMachine,
    deadline: Duration,
) -> Result<(), ClusterError> {
    let namespace = vm.metadata.namespace.clone().unwrap_or_default();
    let name = vm.metadata.name.clone().unwrap_or_default();
    let check = async {
        let api: Api<VirtualMachine> = Api::namespaced(args.client().await?, &namespace);
        let params = PatchParams::apply(IMPORT_MANAGER).force().dry_run();
        api.patch(&name, &params, &Patch::Apply(vm)).await?;
        Ok(())
    };
    tokio::time::timeout(deadline, check)
        .await
        .map_err(|_| ClusterError::Timeout(deadline))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::quota::{QuotaLimits, QuotaSpec, QuotaStatus, Usage};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn quota(tenant: &str, hard: Option<&str>, used: &str) -> Quota {
        let mut q = Quota::new(
            tenant,
            QuotaSpec {
                tenant: tenant.into(),
                hard: QuotaLimits {
                    storage: hard.map(|h| Quantity(h.into())),
                    ..QuotaLimits::default()
                },
            },
        );
        q.status = Some(QuotaStatus {
            used: Some(Usage {
                storage: Quantity(used.into()),
                ..Usage::default()
            }),
            ..QuotaStatus::default()
        });
        q
    }

    #[test]
    fn the_tightest_quota_of_the_tenant_chain_wins() {
        let quotas = [
            quota("team", Some("100Gi"), "30Gi"),
            quota("org", Some("1Ti"), "990Gi"),
            quota("other", Some("1Gi"), "0"),
        ];
        let chain = ["team".to_owned(), "org".to_owned()];
        assert_eq!(storage_left(&chain, &quotas), StorageLeft::Bytes(34 << 30));
    }

    #[test]
    fn no_storage_limit_means_unlimited_and_overuse_means_zero() {
        let chain = ["team".to_owned()];
        assert_eq!(
            storage_left(&chain, &[quota("team", None, "5Gi")]),
            StorageLeft::Unlimited
        );
        assert_eq!(
            storage_left(&chain, &[quota("team", Some("1Gi"), "2Gi")]),
            StorageLeft::Bytes(0)
        );
    }
}
