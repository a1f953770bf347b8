//! `ironvisor-devcluster`: a local Kubernetes API server for development, tests and the demo.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A local Kubernetes API server (development and tests only; RBAC is not enforced).
#[derive(Debug, Parser)]
#[command(name = "ironvisor-devcluster", version)]
struct Cli {
    /// Address to listen on (plain HTTP).
    #[arg(long, default_value = ironvisor_devcluster::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Persist state in this directory (default: memory only).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cluster = ironvisor_devcluster::DevCluster::start(ironvisor_devcluster::Options {
        listen: cli.listen,
        data_dir: cli.data_dir,
    })
    .await?;
    if let Some(path) = &cli.kubeconfig {
        cluster.write_kubeconfig(path)?;
        tracing::info!(path = %path.display(), "kubeconfig written");
    }
    tracing::info!(url = %cluster.url(), "ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    cluster.shutdown().await;
    Ok(())
}
