//! `ironvisor-console`: the console server (see the library's docs).
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::Parser;

/// Serves VM consoles through the Kubernetes API (subresources.ironvisor.io) and in the browser.
#[derive(Parser, Debug)]
#[command(version = ironvisor_crds::BUILD_VERSION)]
struct Args {
    /// Address to serve HTTPS on (the aggregated API and the browser page).
    #[arg(long, env = "IRONVISOR_CONSOLE_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Address to serve /metrics on (plain HTTP).
    #[arg(
        long,
        env = "IRONVISOR_CONSOLE_METRICS",
        default_value = "0.0.0.0:9090"
    )]
    metrics_listen: SocketAddr,
    /// Namespace of the Secret ironvisor-console-tls (the operator's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ironvisor-system")]
    namespace: String,
    /// This instance's name, recorded in Events.
    #[arg(long, env = "POD_NAME", default_value = "ironvisor-console")]
    instance: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = kube::Config::infer().await?;
    let opts = ironvisor_console::Options {
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
        namespace: args.namespace,
        instance: args.instance,
    };
    let _running = ironvisor_console::start(config, opts).await?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}
