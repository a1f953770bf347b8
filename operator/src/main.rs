//! `ironvisor-operator`: the control plane binary.
//!
//! Wires the pieces: leader election, the admission and placement loop, the tenant
//! controller, and the metrics endpoint. Only the leader writes; a standby keeps its watches
//! warm and takes over when the Lease runs out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ironvisor_crds::labels;
use ironvisor_operator::controllers::{scheduler::Scheduler, tenant};
use ironvisor_operator::leader::{self, Leadership, Timing};
use ironvisor_operator::metrics::{self, Metrics};
use ironvisor_operator::placement::Strategy;
use ironvisor_operator::plan::Config;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};

/// Name of the leader-election Lease in `ironvisor-system`.
const LEADER_LEASE: &str = "ironvisor-operator";

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "ironvisor-operator",
    version,
    about = "Ironvisor control plane: tenants, quotas, admission, placement"
)]
struct Args {
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address of the /metrics and /healthz endpoint.
    #[arg(long, default_value = "127.0.0.1:9090")]
    metrics_addr: SocketAddr,
    /// spread (default) or binpack.
    #[arg(long, default_value = "spread", value_parser = clap::value_parser!(StrategyArg))]
    placement_strategy: StrategyArg,
    /// A host whose heartbeat stands still longer than this is lost (e.g. 40s, 2m).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    host_grace_period: Duration,
    /// Full pass and status rewrite at least this often (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    resync_interval: Duration,
    /// Identity in the leader Lease; defaults to the host name and process id.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[derive(Clone, Copy, Debug)]
struct StrategyArg(Strategy);

impl std::str::FromStr for StrategyArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(StrategyArg)
    }
}

/// `40s`, `2m`, `1h`, `500ms`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 40s"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => {
            kube::Config::incluster().context("no --kubeconfig and not running in a cluster")?
        }
    };
    Ok(Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let client = client(args.kubeconfig.as_ref()).await?;
    let metrics = Arc::new(Metrics::new()?);
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    tracing::info!(%identity, strategy = ?args.placement_strategy.0, "starting");

    let (leadership, sender) = Leadership::new();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), labels::SYSTEM_NAMESPACE);
    let elector = tokio::spawn(leader::run(
        lease_api,
        LEADER_LEASE.into(),
        identity.clone(),
        Timing::default(),
        sender,
    ));

    let (usage_tx, usage_rx) = tokio::sync::watch::channel(BTreeMap::new());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: labels::OPERATOR_MANAGER.into(),
            instance: Some(identity),
        },
    );
    let scheduler = Scheduler {
        client: client.clone(),
        metrics: metrics.clone(),
        leadership: leadership.clone(),
        config: Config {
            strategy: args.placement_strategy.0,
            host_grace: args.host_grace_period,
        },
        resync: args.resync_interval,
        recorder,
        usage: usage_tx,
    };
    let tenants = tenant::Ctx::new(
        client,
        metrics.clone(),
        leadership,
        usage_rx,
        args.resync_interval,
    );

    tokio::select! {
        r = metrics::serve(args.metrics_addr, metrics) => r.context("metrics endpoint")?,
        () = scheduler.run() => anyhow::bail!("scheduler loop ended"),
        () = tenant::run(tenants) => anyhow::bail!("tenant controller ended"),
        r = elector => anyhow::bail!("leader election ended: {r:?}"),
        r = tokio::signal::ctrl_c() => r.context("signal handler")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("forty").is_err());
        assert!(parse_duration("4d").is_err());
    }

    #[test]
    fn the_command_line_parses_every_flag() {
        let a = Args::try_parse_from([
            "ironvisor-operator",
            "--kubeconfig",
            "/k",
            "--metrics-addr",
            "127.0.0.1:9999",
            "--placement-strategy",
            "binpack",
            "--host-grace-period",
            "1m",
            "--resync-interval",
            "10s",
        ])
        .unwrap();
        assert_eq!(a.placement_strategy.0, Strategy::BinPack);
        assert_eq!(a.host_grace_period, Duration::from_secs(60));
        assert!(
            Args::try_parse_from(["ironvisor-operator", "--placement-strategy", "random"]).is_err()
        );
    }
}
