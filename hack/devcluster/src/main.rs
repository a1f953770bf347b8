//! `ironvisor-devcluster`: a local Kubernetes API server for development, tests and the demo.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A local Kubernetes API server (development and tests only).
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
    /// Also serve the API over TLS here (a CA and certificate made at start; kubectl sends
    /// bearer tokens only over TLS, so kubeconfigs of other identities point here).
    #[arg(long, default_value = "127.0.0.1:0")]
    tls_listen: SocketAddr,
    /// Do not serve TLS.
    #[arg(long)]
    no_tls: bool,
    /// Static bearer tokens, in kube-apiserver's --token-auth-file format
    /// (token,user,uid,"group1,group2" per line).
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// What a request without credentials is: admin (the written kubeconfig's identity; the
    /// default, for token-less clients), anonymous (system:anonymous under RBAC, as
    /// kube-apiserver) or deny (401 Unauthorized).
    #[arg(long, default_value = "admin")]
    anonymous: ironvisor_devcluster::AnonymousAccess,
    /// Also write the admin kubeconfig for the TLS port here (the server and CA any other
    /// identity's kubeconfig needs, e.g. one made from a TokenRequest's service-account token).
    #[arg(long)]
    tls_kubeconfig: Option<PathBuf>,
    /// Also write a kubeconfig for another identity: USER[:GROUP,GROUP...]=PATH
    /// (repeatable), e.g. alice:tenant-a=/tmp/alice.kubeconfig.
    #[arg(long = "kubeconfig-for", value_parser = parse_identity)]
    kubeconfig_for: Vec<Identity>,
}

/// An extra identity to write a kubeconfig for.
#[derive(Debug, Clone)]
struct Identity {
    user: String,
    groups: Vec<String>,
    path: PathBuf,
}

fn parse_identity(s: &str) -> Result<Identity, String> {
    let (who, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not USER[:GROUP,...]=PATH"))?;
    let (user, groups) = who.split_once(':').unwrap_or((who, ""));
    if user.is_empty() || path.is_empty() {
        return Err(format!("{s:?} is not USER[:GROUP,...]=PATH"));
    }
    Ok(Identity {
        user: user.into(),
        groups: groups
            .split(',')
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect(),
        path: path.into(),
    })
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
        token_file: cli.token_auth_file,
        anonymous: cli.anonymous,
        tls_listen: (!cli.no_tls).then_some(cli.tls_listen),
    })
    .await?;
    if let Some(path) = &cli.kubeconfig {
        cluster.write_kubeconfig(path)?;
        tracing::info!(path = %path.display(), "kubeconfig written");
    }
    if let Some(path) = &cli.tls_kubeconfig {
        let Some(text) = cluster.tls_admin_kubeconfig() else {
            anyhow::bail!("--tls-kubeconfig needs the TLS port: drop --no-tls");
        };
        std::fs::write(path, text)?;
        tracing::info!(path = %path.display(), "TLS kubeconfig written");
    }
    for id in &cli.kubeconfig_for {
        let groups: Vec<&str> = id.groups.iter().map(String::as_str).collect();
        std::fs::write(&id.path, cluster.kubeconfig_for(&id.user, &groups))?;
        tracing::info!(user = %id.user, path = %id.path.display(), "kubeconfig written");
    }
    tracing::info!(url = %cluster.url(), tls = ?cluster.tls_url(), "ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    cluster.shutdown().await;
    Ok(())
}
