//! Ironvisor's console server: serves the `subresources.ironvisor.io/v1` aggregated API
//! (`virtualmachines/console` and `virtualmachines/vnc`, WebSocket) and the browser console.
//!
//! A request arrives through the Kubernetes API server (which vouches for the user with its
//! front-proxy client certificate) or straight from a browser with a bearer token; it is
//! authorised with a SubjectAccessReview, then bridged to the agent of the VM's host over
//! mutual TLS. This server holds no CA key and never talks to libvirt.
#![forbid(unsafe_code)]

pub mod agent;
pub mod as_user;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod bridge;
pub mod discovery;
pub mod listener;
pub mod pki;
pub mod portal;
pub mod portal_view;
pub mod server;
pub mod sources;
pub mod status;
pub mod target;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

/// The error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to serve TLS (the API and the page).
    pub listen: SocketAddr,
    /// Where to serve `/metrics` (plain HTTP); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The namespace of Secret `ironvisor-console-tls`.
    pub namespace: String,
    /// This instance's name (the pod name), for Events.
    pub instance: String,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("binding {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The metrics could not be registered.
    #[error("registering the metrics")]
    Metrics(#[from] prometheus::Error),
    /// The kube client could not be built.
    #[error("building the kube client")]
    Kube(#[from] kube::Error),
}

/// A running server.
pub struct Running {
    /// The TLS address served.
    pub addr: SocketAddr,
    /// The metrics address served.
    pub metrics_addr: Option<SocketAddr>,
    /// Its TLS material (tests wait on it).
    pub pki: Arc<pki::Pki>,
    /// The metrics.
    pub metrics: audit::Metrics,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until the serving certificate is loaded.
    pub async fn ready(&self) {
        self.pki.wait_ready().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts serving with `kube_config`'s identity (inside the current tokio runtime).
pub async fn start(kube_config: kube::Config, opts: Options) -> Result<Running, StartError> {
    let client = kube::Client::try_from(kube_config.clone())?;
    let pki = Arc::new(pki::Pki::default());
    sources::spawn(client.clone(), &opts.namespace, pki.clone());
    let metrics = audit::Metrics::new()?;
    let state = Arc::new(server::AppState {
        client,
        kube_config,
        pki: pki.clone(),
        metrics: metrics.clone(),
        instance: opts.instance.clone(),
    });
    let tcp = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| StartError::Bind(opts.listen, e))?;
    let tls = listener::TlsListener::new(tcp, pki.clone())
        .map_err(|e| StartError::Bind(opts.listen, e))?;
    let addr = axum::serve::Listener::local_addr(&tls)
        .map(|p| p.addr)
        .map_err(|e| StartError::Bind(opts.listen, e))?;
    let app = server::router(state).into_make_service_with_connect_info::<listener::Peer>();
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = axum::serve(tls, app).await {
            tracing::error!(error = %e, "the console server stopped");
        }
    })];
    let mut metrics_addr = None;
    if let Some(m) = opts.metrics_listen {
        let l = tokio::net::TcpListener::bind(m)
            .await
            .map_err(|e| StartError::Bind(m, e))?;
        metrics_addr = Some(l.local_addr().map_err(|e| StartError::Bind(m, e))?);
        let registry = metrics.registry.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let r = registry.clone();
                async move {
                    let mut out = String::new();
                    let enc = prometheus::TextEncoder::new();
                    if let Err(e) = enc.encode_utf8(&r.gather(), &mut out) {
                        tracing::warn!(error = %e, "encoding metrics failed");
                    }
                    out
                }
            }),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        }));
    }
    tracing::info!(%addr, "console server listening");
    Ok(Running {
        addr,
        metrics_addr,
        pki,
        metrics,
        tasks,
    })
}
