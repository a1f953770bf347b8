//! The whole operator as one future: leader election, the admission and placement loop, the
//! tenant controller, the seed-copy controller, the check that the CRDs are installed and (optionally) the metrics
//! endpoint, until `shutdown` resolves.
//!
//! Used by the binary and, in-process, by the integration tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironvisor_crds::labels;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};

use crate::controllers::{audit, scheduler::Scheduler, seed, tenant, usage};
use crate::leader::{self, Leadership, Timing};
use crate::metrics::{self, Metrics};
use crate::placement::Strategy;
use crate::plan::Config;
use crate::quota::Reserved;

/// Name of the leader-election Lease in `ironvisor-system`.
pub const LEADER_LEASE: &str = "ironvisor-operator";

/// Settings of one operator replica.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Holder identity in the leader Lease.
    pub identity: String,
    /// Spread or bin-pack.
    pub strategy: Strategy,
    /// A host whose heartbeat stands still longer than this is lost.
    pub host_grace: Duration,
    /// Full pass and status rewrite at least this often.
    pub resync: Duration,
    /// Leader election timing.
    pub timing: Timing,
    /// Where to serve /metrics and /healthz; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// Admit forwards from host ports below 1024.
    pub allow_privileged_host_ports: bool,
    /// The tenant that counts VMs of namespaces no Tenant owns; `None`: such VMs are not
    /// admitted (`NoTenant`).
    pub default_tenant: Option<String>,
    /// The namespace the operator runs in (reserved like `ironvisor-system`), when known.
    pub own_namespace: Option<String>,
    /// Usage reports are checkpointed at least this often.
    pub usage_interval: Duration,
    /// The usage accounting's clock.
    pub clock: Arc<dyn crate::usage::Clock>,
    /// How right-sizing judges the VMs' measured use.
    pub rightsizing: crate::usage::rightsizing::Policy,
    /// How often the console signer checks the CA and signs hosts' requests.
    pub console_period: Duration,
}

impl RunConfig {
    /// The binary's defaults for `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            strategy: Strategy::default(),
            host_grace: Duration::from_secs(40),
            resync: Duration::from_secs(30),
            timing: Timing::default(),
            metrics_addr: None,
            allow_privileged_host_ports: false,
            default_tenant: None,
            own_namespace: None,
            usage_interval: Duration::from_secs(60),
            clock: Arc::new(crate::usage::SystemClock),
            rightsizing: Default::default(),
            console_period: Duration::from_secs(10),
        }
    }
}

/// Why the operator stopped before `shutdown`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics endpoint failed.
    #[error("metrics endpoint")]
    Metrics(#[source] std::io::Error),
    /// A loop that should run forever ended.
    #[error("{0} ended")]
    Ended(&'static str),
}

/// Mirror what blocks the election into the metrics and `/readyz`.
async fn report_health(
    mut rx: tokio::sync::watch::Receiver<Option<String>>,
    metrics: Arc<Metrics>,
) {
    loop {
        metrics.set_problem("election", rx.borrow_and_update().clone());
        if rx.changed().await.is_err() {
            // The elector is gone; run() ends with it.
            return std::future::pending().await;
        }
    }
}

/// Runs one replica until `shutdown` resolves (then returns `Ok`). Everything it started is
/// dropped on return: a stopped replica writes nothing more.
pub async fn run(
    client: Client,
    cfg: RunConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (leadership, sender) = Leadership::new();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), labels::SYSTEM_NAMESPACE);
    let (health_tx, health_rx) = tokio::sync::watch::channel(None);
    let elector = leader::run(
        lease_api,
        LEADER_LEASE.into(),
        cfg.identity.clone(),
        cfg.timing,
        sender,
        health_tx,
    );
    let health = report_health(health_rx, metrics.clone());
    let crds = crate::preflight::run(client.clone(), metrics.clone());
    let (usage_tx, usage_rx) = tokio::sync::watch::channel(BTreeMap::new());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: labels::OPERATOR_MANAGER.into(),
            instance: Some(cfg.identity.clone()),
        },
    );
    let seeds = seed::run(
        client.clone(),
        metrics.clone(),
        leadership.clone(),
        recorder.clone(),
        cfg.resync,
    );
    let audit = audit::Ctx {
        client: client.clone(),
        metrics: metrics.clone(),
        leadership: leadership.clone(),
        recorder: recorder.clone(),
    };
    let reserved = Reserved::default().with_own_namespace(cfg.own_namespace.as_deref());
    let scheduler = Scheduler {
        client: client.clone(),
        metrics: metrics.clone(),
        leadership: leadership.clone(),
        config: Config {
            strategy: cfg.strategy,
            host_grace: cfg.host_grace,
            allow_privileged_host_ports: cfg.allow_privileged_host_ports,
            default_tenant: cfg.default_tenant.clone(),
            reserved: reserved.clone(),
        },
        resync: cfg.resync,
        recorder: recorder.clone(),
        usage: usage_tx,
    };
    let accounting = usage::Ctx {
        client: client.clone(),
        metrics: metrics.clone(),
        leadership: leadership.clone(),
        clock: cfg.clock.clone(),
        interval: cfg.usage_interval,
        default_tenant: cfg.default_tenant.clone(),
        rightsizing: cfg.rightsizing,
    };
    let snapshots = crate::snapshot::controller::Ctx {
        client: client.clone(),
        leadership: leadership.clone(),
        reserved: reserved.clone(),
        default_tenant: cfg.default_tenant.clone(),
    };
    let backups = crate::snapshot::controller::Ctx {
        client: client.clone(),
        leadership: leadership.clone(),
        reserved: reserved.clone(),
        default_tenant: cfg.default_tenant.clone(),
    };
    let schedules = crate::backup::schedule::Ctx {
        client: client.clone(),
        leadership: leadership.clone(),
        metrics: metrics.schedules.clone(),
        recorder: recorder.clone(),
    };
    let restores = crate::snapshot::restore::Ctx {
        client: client.clone(),
        leadership: leadership.clone(),
    };
    let migrations = crate::migration::run(crate::migration::Ctx::new(
        client.clone(),
        leadership.clone(),
        recorder.clone(),
        cfg.strategy,
        metrics.clone(),
    ));
    let rebalancer = crate::rebalance::run(crate::rebalance::Ctx {
        client: client.clone(),
        leadership: leadership.clone(),
        recorder: recorder.clone(),
        metrics: metrics.clone(),
    });
    let desktops = crate::desktops::run(crate::desktops::Ctx {
        client: client.clone(),
        leadership: leadership.clone(),
        recorder: recorder.clone(),
    });
    let maintenance = crate::maintenance::run(crate::maintenance::Ctx {
        client: client.clone(),
        leadership: leadership.clone(),
        recorder: recorder.clone(),
    });
    let console_signer =
        crate::console::controller::run(Arc::new(crate::console::controller::Ctx {
            client: client.clone(),
            leadership: leadership.clone(),
            recorder,
            namespace: cfg
                .own_namespace
                .clone()
                .unwrap_or_else(|| labels::SYSTEM_NAMESPACE.to_owned()),
            period: cfg.console_period,
            metrics: metrics.console.clone(),
        }));
    let tenants = tenant::Ctx::new(client, metrics.clone(), leadership, usage_rx, cfg.resync)
        .with_reserved(reserved);
    let serve_metrics = async {
        match cfg.metrics_addr {
            Some(addr) => metrics::serve(addr, metrics).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = serve_metrics => Err(match r {
            Err(e) => RunError::Metrics(e),
            Ok(()) => RunError::Ended("metrics endpoint"),
        }),
        () = scheduler.run() => Err(RunError::Ended("scheduler loop")),
        () = tenant::run(tenants) => Err(RunError::Ended("tenant controller")),
        () = seeds => Err(RunError::Ended("seed-copy controller")),
        () = audit::run(audit) => Err(RunError::Ended("audit controller")),
        () = usage::run(accounting) => Err(RunError::Ended("usage controller")),
        () = crate::snapshot::controller::run(snapshots) => Err(RunError::Ended("snapshot controller")),
        () = crate::snapshot::restore::run(restores) => Err(RunError::Ended("restore controller")),
        () = crate::backup::controller::run(backups) => Err(RunError::Ended("backup controller")),
        () = crate::backup::schedule::run(schedules) => Err(RunError::Ended("schedule controller")),
        () = migrations => Err(RunError::Ended("migration controller")),
        () = rebalancer => Err(RunError::Ended("rebalancer")),
        () = maintenance => Err(RunError::Ended("maintenance controller")),
        () = console_signer => Err(RunError::Ended("console signer")),
        () = desktops => Err(RunError::Ended("desktop pool controller")),
        () = elector => Err(RunError::Ended("leader election")),
        () = health => Err(RunError::Ended("health reporting")),
        () = crds => Err(RunError::Ended("CRD check")),
        () = shutdown => Ok(()),
    }
}
