//! `ironvisor-agent`: parses flags, connects to libvirt and the API server, and runs the
//! VM controller, the heartbeat and the metrics endpoint.

use anyhow::Context as _;
use clap::Parser;
use ironvisor_agent::domain_xml::DomainType;
use ironvisor_agent::host::{AccelChoice, HostFacts, accel_str, choose_accel, kvm_usable};
use ironvisor_agent::hypervisor::Hypervisor as _;
use ironvisor_agent::hypervisor::libvirt::Libvirt;
use ironvisor_agent::metrics::{self, Metrics};
use ironvisor_agent::reconcile::controller::{self, Context};
use ironvisor_agent::reconcile::engine::Engine;
use ironvisor_agent::reconcile::heartbeat::Heartbeat;
use ironvisor_agent::storage::cache::ImageCache;
use ironvisor_agent::storage::prepare::StorageRoots;
use ironvisor_crds::hypervisor::Acceleration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The Ironvisor node agent.
#[derive(Parser, Debug)]
#[command(version, about)]
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
        return Err("the resync interval must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

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

    std::fs::create_dir_all(&args.state_dir).context("creating the state directory")?;
    let libvirt = Libvirt::new(&args.libvirt_uri);
    libvirt.connect().await.context("connecting to libvirt")?;
    let host_info = libvirt
        .host_info()
        .await
        .context("reading host info from libvirt")?;
    let facts = HostFacts::read(&host_info);
    let accel = choose_accel(args.accel, kvm_usable(), &facts.cpu.flags);
    let domain_type = match accel {
        Acceleration::Kvm => DomainType::Kvm,
        Acceleration::Tcg => DomainType::Qemu,
    };
    tracing::info!(
        node = args.node_name,
        uri = args.libvirt_uri,
        accel = accel_str(accel),
        libvirt = facts.libvirt_version,
        qemu = facts.qemu_version,
        "ironvisor-agent starting"
    );

    let metrics = Arc::new(Metrics::new());
    let storage = StorageRoots {
        cache: ImageCache::new(&args.state_dir),
        state_dir: args.state_dir.clone(),
        images_dir: args.images_dir.clone(),
    };
    let engine = Engine::new(
        Arc::new(libvirt.clone()),
        storage,
        domain_type,
        metrics.clone(),
    );
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        &args.node_name,
        engine,
        args.resync_interval,
    ));

    match controller::collect_orphans(&ctx).await {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "removed leftovers of deleted VMs")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not look for leftovers; will not remove anything")
        }
    }

    let metrics_task = tokio::spawn(metrics::serve(metrics.clone(), args.metrics_addr));
    let ctrl = controller::controller(&ctx);
    let heartbeat = Heartbeat {
        client,
        node: args.node_name.clone(),
        facts,
        accel,
        metrics,
    };
    let heartbeat_task = tokio::spawn(heartbeat.run(ctrl.store()));
    controller::run(ctx, ctrl).await;
    heartbeat_task.abort();
    metrics_task.abort();
    libvirt.close();
    tracing::info!("ironvisor-agent stopped");
    Ok(())
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
