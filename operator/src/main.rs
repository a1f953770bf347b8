//! `ironvisor-operator`: the control plane binary.
//!
//! Wires the pieces: leader election, the admission and placement loop, the tenant
//! controller, and the metrics endpoint. Only the leader writes; a standby keeps its watches
//! warm and takes over when the Lease runs out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use ironvisor_operator::metrics::Metrics;
use ironvisor_operator::placement::Strategy;
use ironvisor_operator::run::{RunConfig, run};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "ironvisor-operator",
    version = ironvisor_crds::BUILD_VERSION,
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
    /// Admit VMs whose user-mode interfaces forward host ports below 1024 (refused otherwise
    /// with Scheduled=False HostPortNotAllowed).
    #[arg(long)]
    allow_privileged_host_ports: bool,
    /// Tenant that counts (and bounds by its quotas) the VMs of namespaces no Tenant owns.
    /// Without it such VMs are not admitted (Scheduled=False, reason NoTenant).
    #[arg(long, env = "IRONVISOR_DEFAULT_TENANT")]
    default_tenant: Option<String>,
    /// The namespace the operator runs in; no tenant may claim it.
    #[arg(long, env = "POD_NAMESPACE")]
    own_namespace: Option<String>,
    /// Usage reports are checkpointed at least this often (and soon after any VM changes).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    usage_interval: Duration,
    /// Right-sizing looks at the VMs' measured use over this window (e.g. 168h, a week).
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    rightsizing_window: Duration,
    /// A VM is idle when no bucket of the window averages this share of its vCPUs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=100))]
    idle_cpu_percent: i64,
    /// Headroom added to the measured peak (p95) before recommending a size.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(0..=400))]
    rightsizing_headroom_percent: i64,
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
    tracing::info!(%identity, strategy = ?args.placement_strategy.0, default_tenant = ?args.default_tenant, "starting");
    let cfg = RunConfig {
        strategy: args.placement_strategy.0,
        host_grace: args.host_grace_period,
        resync: args.resync_interval,
        metrics_addr: Some(args.metrics_addr),
        allow_privileged_host_ports: args.allow_privileged_host_ports,
        default_tenant: args.default_tenant.filter(|t| !t.is_empty()),
        own_namespace: args.own_namespace,
        usage_interval: args.usage_interval,
        rightsizing: ironvisor_operator::usage::rightsizing::Policy {
            window_seconds: i64::try_from(args.rightsizing_window.as_secs())
                .unwrap_or(i64::MAX)
                .max(1),
            idle_cpu_percent: args.idle_cpu_percent,
            headroom_percent: args.rightsizing_headroom_percent,
            ..Default::default()
        },
        ..RunConfig::new(identity)
    };
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "signal handler failed; stopping");
        }
    };
    run(client, cfg, metrics, ctrl_c).await?;
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
            "--default-tenant",
            "legacy",
        ])
        .unwrap();
        assert_eq!(a.placement_strategy.0, Strategy::BinPack);
        assert_eq!(a.default_tenant.as_deref(), Some("legacy"));
        assert_eq!(a.host_grace_period, Duration::from_secs(60));
        assert!(
            Args::try_parse_from(["ironvisor-operator", "--placement-strategy", "random"]).is_err()
        );
    }
}
