//! `ironvisor-agent`: parses flags, connects to libvirt and the API server, and runs the
//! VM controller, the heartbeat and the metrics endpoint.

use anyhow::Context as _;
use clap::Parser;
use ironvisor_agent::daemon::{self, Config};
use ironvisor_agent::host::AccelChoice;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The Ironvisor node agent.
#[derive(Parser, Debug)]
#[command(version = ironvisor_crds::BUILD_VERSION, about)]
struct Args {
    /// Name of this host (its Hypervisor object and the `ironvisor.io/node` label value).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// libvirt URI.
    #[arg(long, default_value = "qemu:///system")]
    libvirt_uri: String,
    /// kubeconfig file; the in-cluster configuration when absent.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Directory for VM directories and the image cache.
    #[arg(long, default_value = "/var/lib/ironvisor")]
    state_dir: PathBuf,
    /// Directory that hostPath images must resolve under.
    #[arg(long, default_value = "/var/lib/ironvisor/images")]
    images_dir: PathBuf,
    /// Address of the /metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// Acceleration: auto picks KVM only when /dev/kvm opens and the CPU has vmx or svm.
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelChoice,
    /// Full resync period (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    resync_interval: Duration,
    /// Address ranges image downloads may not reach besides loopback, link-local and
    /// multicast: the cluster's pod and service ranges (repeat, e.g. 10.96.0.0/12).
    #[arg(long = "image-deny-cidr", value_name = "CIDR")]
    image_deny_cidr: Vec<ipnet::IpNet>,
    /// Ranges image downloads may reach even though denied (an image server on loopback).
    #[arg(long = "image-allow-cidr", value_name = "CIDR")]
    image_allow_cidr: Vec<ipnet::IpNet>,
    /// When given, the only host names images may be downloaded from (repeat).
    #[arg(long = "image-host", value_name = "HOST")]
    image_host: Vec<String>,
    /// Largest image one download may write, in bytes.
    #[arg(long, default_value_t = ironvisor_agent::storage::fetch_policy::DEFAULT_MAX_BYTES)]
    image_max_bytes: u64,
    /// Let guests open connections to the host's own addresses (its loopback services
    /// included). Off by default: the agent installs an iptables rule that refuses them.
    #[arg(long)]
    allow_guest_host_access: bool,
    /// Most bytes the image cache may hold on disk; images no VM on this host uses are
    /// removed, least recently used first, to make room.
    #[arg(long, default_value_t = ironvisor_agent::storage::cache_gc::DEFAULT_CACHE_MAX_BYTES)]
    image_cache_max_bytes: u64,
    /// The libvirt URI another host's libvirtd opens to reach this host's for a live
    /// migration (peer to peer), e.g. qemu+tls://host-b.example/system. Without it (and
    /// --migration-address) the host takes no incoming migrations.
    #[arg(long)]
    migration_uri: Option<String>,
    /// The address this host's QEMU listens on for incoming guests (memory and disks).
    #[arg(long)]
    migration_address: Option<String>,
    /// How often running guests' CPU, memory and disk use is sampled.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    utilization_sample_period: Duration,
    /// Width of a utilization bucket: samples are aggregated (average and peak) per bucket,
    /// and each closed bucket is one write to the VM's status.utilization.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    utilization_bucket: Duration,
    /// Most buckets kept in a VM's status.utilization (168 hourly buckets: a week).
    #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u16).range(1..=744))]
    utilization_buckets: u16,
    /// Address of the console port (mutual TLS; the console server is its only client),
    /// e.g. 0.0.0.0:9443. No console port when absent.
    #[arg(long)]
    console_address: Option<SocketAddr>,
    /// `host:port` the console server dials, published in the Hypervisor's status (default:
    /// the console address, with this host's name for an unspecified address).
    #[arg(long)]
    console_advertise_address: Option<String>,
    /// Namespace of the console CA ConfigMap (the operator's).
    #[arg(long, default_value = ironvisor_crds::labels::SYSTEM_NAMESPACE)]
    console_ca_namespace: String,
    /// Most console connections open at once.
    #[arg(long, default_value_t = ironvisor_agent::console::server::DEFAULT_MAX_CONNECTIONS)]
    console_max_connections: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 60s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m or h)")),
    };
    if secs == 0 {
        return Err(format!("{s:?}: a duration must be positive"));
    }
    Ok(Duration::from_secs(secs))
}

use ironvisor_agent::storage::fetch_policy::FetchPolicy;

async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).context("reading the kubeconfig")?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => {
            kube::Config::incluster().context("no --kubeconfig and no in-cluster configuration")?
        }
    };
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    daemon::install_crypto_provider();
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let config = Config {
        guard_host: !args.allow_guest_host_access,
        resync_interval: args.resync_interval,
        metrics_addr: Some(args.metrics_addr),
        accel: args.accel,
        image_policy: FetchPolicy {
            denied: args.image_deny_cidr,
            allowed: args.image_allow_cidr,
            hosts: args
                .image_host
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            max_bytes: args.image_max_bytes,
        },
        image_cache_max_bytes: args.image_cache_max_bytes,
        migration_uri: args.migration_uri,
        migration_address: args.migration_address,
        utilization_sample: args.utilization_sample_period,
        utilization: ironvisor_agent::utilization::window::Settings {
            bucket_seconds: i64::try_from(args.utilization_bucket.as_secs()).unwrap_or(3600),
            keep: usize::from(args.utilization_buckets),
        },
        console: args
            .console_address
            .map(|listen| ironvisor_agent::console::Config {
                listen,
                advertise: args.console_advertise_address,
                ca_namespace: args.console_ca_namespace,
                max_connections: args.console_max_connections.max(1),
                sync_period: Duration::from_secs(10),
            }),
        ..Config::new(
            &args.node_name,
            &args.libvirt_uri,
            args.state_dir,
            args.images_dir,
        )
    };
    daemon::run(config, client, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_accept_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
