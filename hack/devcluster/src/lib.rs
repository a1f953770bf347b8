//! A local Kubernetes API server for development, tests and the demo. Not for production:
//! production runs on a real cluster.
//!
//! It serves enough of the Kubernetes API (discovery, OpenAPI v3, CRDs, a few built-in kinds,
//! CRUD, patch, server-side apply, watch, tables, validation) that the real `kubectl` and
//! kube-rs clients work against it unmodified. Use it in-process from tests:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cluster = ironvisor_devcluster::DevCluster::start_ephemeral().await?;
//! let client = cluster.client()?;
//! # let _ = client;
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod app;
mod builtin_schemas;
mod delete;
mod discovery;
pub mod error;
mod events;
mod fieldpath;
mod gc;
mod http;
mod kinds;
mod meta;
mod openapi;
mod openapi_v2;
mod ops;
mod patch;
mod persist;
mod protobuf;
mod reads;
mod registry;
mod resource;
mod schema;
mod selectors;
mod ssa;
mod store;
mod table;
mod validation;
mod watch;

use app::{App, NS_KEY};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The default listen address of the binary (6443 is left to real clusters).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:16443";

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be used.
    #[error("opening the data directory")]
    Persist(#[from] persist::PersistError),
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL did not parse (cannot happen for a bound socket address).
    #[error("bad server URL {0}")]
    Url(String),
    /// kube refused the configuration.
    #[error("building the kube client")]
    Kube(#[from] kube::Error),
}

/// How to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where to persist state; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
}

/// A running control plane.
pub struct DevCluster {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    gc: JoinHandle<()>,
}

impl DevCluster {
    /// Starts serving (inside the current tokio runtime).
    pub async fn start(opts: Options) -> Result<Self, StartError> {
        let store = match &opts.data_dir {
            None => store::Store::new(vec![], None),
            Some(dir) => {
                let records = persist::replay(dir)?;
                let s = store::Store::new(records, None);
                // Compact: the new log holds exactly the live objects, written atomically.
                let log = persist::Log::rewrite(dir, &s.snapshot())?;
                s.set_log(log);
                s
            }
        };
        let app = Arc::new(App::new(store));
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            ensure_namespace(&app, ns);
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: opts.listen,
            source,
        })?;
        let router = http::router(app.clone(), addr.to_string());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the API server stopped");
            }
        });
        let gc = gc::spawn(&app);
        tracing::info!(%addr, "devcluster serving");
        Ok(Self {
            addr,
            app,
            stop: Some(tx),
            server: Some(server),
            gc,
        })
    }

    /// Starts in memory on a free loopback port.
    pub async fn start_ephemeral() -> Result<Self, StartError> {
        Self::start(Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: None,
        })
        .await
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> Result<kube::Client, ClientError> {
        let uri: axum::http::Uri = self
            .url()
            .parse()
            .map_err(|_| ClientError::Url(self.url()))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        Ok(kube::Client::try_from(config)?)
    }

    /// The kubeconfig text pointing at this server (context `devcluster`).
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.url())
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Forgets the watch history and ends every open watch (as an etcd compaction plus an
    /// apiserver restart would): clients resuming from an older resourceVersion get 410 Gone.
    pub fn compact_history(&self) {
        self.app.store.compact();
    }

    /// How many watches were answered with 410 Gone (a test hook).
    pub fn expired_watches(&self) -> u64 {
        self.app.store.expired_watches()
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        self.app.store.compact();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self.gc.abort();
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.app.store.compact();
        self.gc.abort();
    }
}

/// A kubeconfig for `url`.
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: devcluster\n  cluster:\n    server: {url}\n\
         contexts:\n- name: devcluster\n  context:\n    cluster: devcluster\n    user: devcluster\n    namespace: default\n\
         current-context: devcluster\nusers:\n- name: devcluster\n  user: {{}}\npreferences: {{}}\n"
    )
}

fn ensure_namespace(app: &App, name: &str) {
    if app.store.get(NS_KEY, "", name).is_some() {
        return;
    }
    let reg = app.registry();
    let Some(served) = reg.find("", "v1", "namespaces") else {
        return;
    };
    let t = app::Target {
        served,
        namespace: None,
        name: None,
        subresource: None,
    };
    let body =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).to_string();
    let p = app::Params::from_query(&Default::default());
    if let Err(e) = ops::create(app, &t, body.as_bytes(), &p, "devcluster") {
        tracing::warn!(error = %e, namespace = name, "creating a default namespace failed");
    }
}
