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

pub mod aggregator;
mod app;
pub mod auth;
mod builtin_schemas;
mod delete;
mod discovery;
pub mod error;
mod events;
mod fieldpath;
mod gc;
mod http;
mod identity;
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
mod tls;
mod validation;
mod watch;

use app::{App, NS_KEY};
pub use auth::UserInfo;
pub use auth::authn::AnonymousAccess;
pub use identity::kubeconfig_text;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// The TLS certificates could not be made.
    #[error("preparing TLS")]
    Tls(#[from] tls::TlsError),
    /// The data directory could not be used.
    #[error("opening the data directory")]
    Persist(#[from] persist::PersistError),
    /// The token file could not be read.
    #[error("reading the token file {path}")]
    TokenFileRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token file is malformed.
    #[error("parsing the token file {path}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: auth::token_file::TokenFileError,
    },
    /// The service-account signing key in the data directory could not be read or written.
    #[error("keeping the service-account signing key at {path}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
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
    /// A kube-apiserver `--token-auth-file` (`token,user,uid,"group1,group2"` lines).
    pub token_file: Option<PathBuf>,
    /// What a request without credentials is.
    pub anonymous: AnonymousAccess,
    /// Where to serve TLS (the same API; kubectl sends tokens only over TLS); `None`: nowhere.
    pub tls_listen: Option<SocketAddr>,
}

impl Default for Options {
    /// In memory on a free loopback port; token-less requests act as `admin`.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: None,
            token_file: None,
            anonymous: AnonymousAccess::default(),
            tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        }
    }
}

async fn bind(a: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let l = tokio::net::TcpListener::bind(a)
        .await
        .map_err(|source| StartError::Bind { addr: a, source })?;
    let bound = l
        .local_addr()
        .map_err(|source| StartError::Bind { addr: a, source })?;
    Ok((l, bound))
}

/// The static tokens of `opts.token_file`.
fn static_tokens(
    opts: &Options,
) -> Result<std::collections::HashMap<String, UserInfo>, StartError> {
    let Some(path) = &opts.token_file else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| StartError::TokenFileRead {
        path: path.clone(),
        source,
    })?;
    auth::token_file::parse(&text).map_err(|source| StartError::TokenFile {
        path: path.clone(),
        source,
    })
}

/// The service-account signing key: kept in the data directory so tokens survive restarts.
fn signing_key(data_dir: Option<&Path>) -> Result<Vec<u8>, StartError> {
    let fresh = || {
        format!(
            "{}{}",
            auth::authn::random_token(),
            auth::authn::random_token()
        )
    };
    let Some(dir) = data_dir else {
        return Ok(fresh().into_bytes());
    };
    let path = dir.join("service-account.key");
    let err = |source| StartError::Key {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => Ok(k.trim().as_bytes().to_vec()),
        Ok(_) => Err(err(std::io::Error::other("the key file is empty"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = fresh();
            std::fs::write(&path, &k).map_err(err)?;
            // Whoever reads the key can mint any service account's tokens.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
            Ok(k.into_bytes())
        }
        Err(e) => Err(err(e)),
    }
}

/// A running control plane.
pub struct DevCluster {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    ca_pem: String,
    anonymous: AnonymousAccess,
    app: Arc<App>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    server: Option<JoinHandle<()>>,
    gc: JoinHandle<()>,
    availability: JoinHandle<()>,
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
        let authn = auth::authn::Authenticator::new(
            static_tokens(&opts)?,
            signing_key(opts.data_dir.as_deref())?,
            opts.anonymous,
        );
        let front_proxy =
            aggregator::front_proxy::FrontProxy::generate().map_err(tls::TlsError::from)?;
        let app = Arc::new(App::new(store, authn, front_proxy));
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            ensure_namespace(&app, ns);
        }
        bootstrap_rbac(&app);
        let (listener, addr) = bind(opts.listen).await?;
        let tls = tls::Tls::generate()?;
        publish_authentication(&app, &tls.ca_pem);
        let tls_listener = match opts.tls_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let tls_addr = tls_listener.as_ref().map(|(_, a)| *a);
        let router = http::router(app.clone(), addr.to_string());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let plain =
            axum::serve(listener, router.clone()).with_graceful_shutdown(stopped(rx.clone()));
        let secure = tls_listener.map(|(l, a)| {
            let router = http::router(app.clone(), a.to_string());
            axum::serve(tls.listener(l), router).with_graceful_shutdown(stopped(rx))
        });
        let server = tokio::spawn(async move {
            let secure = async move {
                match secure {
                    Some(s) => s.await,
                    None => Ok(()),
                }
            };
            let (a, b) = tokio::join!(plain, secure);
            if let Err(e) = a.and(b) {
                tracing::error!(error = %e, "the API server stopped");
            }
        });
        let gc = gc::spawn(&app);
        let availability = aggregator::availability::spawn(&app);
        tracing::info!(%addr, tls = ?tls_addr, "devcluster serving");
        Ok(Self {
            addr,
            tls_addr,
            ca_pem: tls.ca_pem,
            anonymous: opts.anonymous,
            app,
            stop: Some(tx),
            server: Some(server),
            gc,
            availability,
        })
    }

    /// Starts in memory on a free loopback port.
    pub async fn start_ephemeral() -> Result<Self, StartError> {
        Self::start(Options::default()).await
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
            let _ = tx.send(true);
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self.gc.abort();
        self.availability.abort();
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        self.app.store.compact();
        self.gc.abort();
        self.availability.abort();
    }
}

/// Stores the bootstrap roles and bindings that are missing (as kube-apiserver does at start).
fn bootstrap_rbac(app: &App) {
    let objs = auth::bootstrap::cluster_roles()
        .into_iter()
        .map(|o| ("clusterroles", o))
        .chain(
            auth::bootstrap::cluster_role_bindings()
                .into_iter()
                .map(|o| ("clusterrolebindings", o)),
        );
    for (plural, obj) in objs {
        ensure_object(app, "rbac.authorization.k8s.io", plural, obj);
    }
    let [role, binding] = aggregator::front_proxy::reader_role_and_binding();
    ensure_object(app, "rbac.authorization.k8s.io", "roles", role);
    ensure_object(app, "rbac.authorization.k8s.io", "rolebindings", binding);
}

/// Writes `kube-system/extension-apiserver-authentication` (created, or replaced: the
/// front-proxy CA is new at every start), as kube-apiserver's trust controller does.
fn publish_authentication(app: &App, client_ca_pem: &str) {
    let (ns, name) = aggregator::front_proxy::CONFIGMAP;
    let cm =
        aggregator::front_proxy::authentication_configmap(client_ca_pem, &app.front_proxy.ca_pem);
    let reg = app.registry();
    let Some(served) = reg.find("", "v1", "configmaps") else {
        return;
    };
    let exists = app
        .store
        .get(&served.info.storage_key(), ns, name)
        .is_some();
    let t = app::Target {
        served,
        namespace: Some(ns.into()),
        name: exists.then(|| name.into()),
        subresource: None,
    };
    let p = app::Params::from_query(&Default::default());
    let body = cm.to_string();
    let result = if exists {
        ops::update(app, &t, body.as_bytes(), &p, "devcluster")
    } else {
        ops::create(app, &t, body.as_bytes(), &p, "devcluster")
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "publishing the front-proxy trust ConfigMap failed");
    }
}

fn ensure_object(app: &App, group: &str, plural: &str, obj: serde_json::Value) {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ns = obj["metadata"]["namespace"].as_str().map(String::from);
    let reg = app.registry();
    let Some(served) = reg.find(group, "v1", plural) else {
        return;
    };
    if app
        .store
        .get(
            &served.info.storage_key(),
            ns.as_deref().unwrap_or_default(),
            &name,
        )
        .is_some()
    {
        return;
    }
    let t = app::Target {
        served,
        namespace: ns,
        name: None,
        subresource: None,
    };
    let p = app::Params::from_query(&Default::default());
    if let Err(e) = ops::create(app, &t, obj.to_string().as_bytes(), &p, "devcluster") {
        tracing::warn!(error = %e, name, "creating a bootstrap object failed");
    }
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
