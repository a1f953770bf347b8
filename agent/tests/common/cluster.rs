//! An agent running in-process against an in-process devcluster: the CRDs applied, the
//! `ironvisor-system` namespace created, and the operator's part played by the test.
#![allow(dead_code)]

use ironvisor_agent::daemon::{self, Config};
use ironvisor_agent::host::AccelChoice;
use ironvisor_crds::labels::{NODE, OPERATOR_MANAGER, SYSTEM_NAMESPACE};
use ironvisor_crds::vm::VirtualMachine;
use ironvisor_devcluster::DevCluster;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any awaited change may take. Generous: on 2 cores with the whole suite running
/// (guests booting, images converting), a step that takes 2 s alone has taken over 20; a
/// wait returns as soon as the change is seen, so only a failure waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A devcluster, a client, and an agent for `node` on `uri`.
pub struct Cluster {
    pub cluster: DevCluster,
    pub client: Client,
    pub node: String,
    pub tmp: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    agent: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Start the cluster (CRDs applied, system namespace created) and the agent.
    pub async fn start(node: &str, uri: &str, configure: impl FnOnce(&mut Config)) -> Self {
        let mut c = Self::without_agent(node).await;
        c.spawn_agent(node, uri, configure);
        c
    }

    /// Stop the agent and start another on the same directories, as `node` (the same host
    /// restarted, maybe with another `--node-name`).
    pub async fn restart_agent_as(
        &mut self,
        node: &str,
        uri: &str,
        configure: impl FnOnce(&mut Config),
    ) {
        self.stop_agent().await;
        self.node = node.to_owned();
        self.spawn_agent(node, uri, configure);
    }

    fn spawn_agent(&mut self, node: &str, uri: &str, configure: impl FnOnce(&mut Config)) {
        let client = self.client.clone();
        self.spawn_agent_as(node, uri, client, configure);
    }

    /// Start the agent in-process, acting with `agent_client` (an identity the test chose,
    /// e.g. the agent's ServiceAccount under the real RBAC).
    pub fn run_agent(
        &mut self,
        uri: &str,
        agent_client: Client,
        configure: impl FnOnce(&mut Config),
    ) {
        let node = self.node.clone();
        self.spawn_agent_as(&node, uri, agent_client, configure);
    }

    fn spawn_agent_as(
        &mut self,
        node: &str,
        uri: &str,
        agent_client: Client,
        configure: impl FnOnce(&mut Config),
    ) {
        let mut config = Config::new(node, uri, self.state_dir.clone(), self.images_dir.clone());
        config.accel = AccelChoice::Tcg;
        config.heartbeat_period = Duration::from_millis(500);
        // The tests' image servers listen on loopback, which the default policy refuses.
        config.image_policy.allowed = vec!["127.0.0.1/32".parse().expect("a CIDR")];
        configure(&mut config);
        self.state_dir = config.state_dir.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let agent = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            daemon::run(config, agent_client, shutdown)
                .await
                .expect("the agent starts");
        });
        self.stop = Some(tx);
        self.agent = Some(agent);
    }

    async fn stop_agent(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(agent) = self.agent.take() {
            tokio::time::timeout(TIMEOUT, agent)
                .await
                .expect("the agent stops on shutdown")
                .expect("the agent task did not panic");
        }
    }

    /// Start the cluster only (the test runs the agent itself, e.g. as a process).
    pub async fn without_agent(node: &str) -> Self {
        daemon::install_crypto_provider();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let cluster = DevCluster::start_ephemeral()
            .await
            .expect("devcluster starts");
        let client = cluster.client().expect("client");
        let crds = Api::<CustomResourceDefinition>::all(client.clone());
        for crd in ironvisor_crds::crdgen::all() {
            crds.create(&PostParams::default(), &crd)
                .await
                .expect("CRD created");
        }
        create_namespace(&client, SYSTEM_NAMESPACE).await;
        // The CRDs are served once a list answers.
        wait_for("the VirtualMachine API to be served", || {
            let api = Api::<VirtualMachine>::all(client.clone());
            async move { api.list(&Default::default()).await.ok().map(|_| ()) }
        })
        .await;
        let tmp = tempfile::tempdir().expect("temp dir");
        let state_dir = tmp.path().join("state");
        let images_dir = tmp.path().join("images");
        std::fs::create_dir_all(&images_dir).expect("images dir");
        Self {
            cluster,
            client,
            node: node.to_owned(),
            tmp,
            state_dir,
            images_dir,
            stop: None,
            agent: None,
        }
    }

    /// Stop the agent (waiting for it) and the cluster.
    pub async fn stop(mut self) {
        self.stop_agent().await;
        self.cluster.shutdown().await;
    }

    pub fn vms(&self, ns: &str) -> Api<VirtualMachine> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn vm_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join("vms").join(uid)
    }

    /// Create a VM labelled for `node` and [`confirm`](Self::confirm) its placement.
    pub async fn place(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        spec: serde_json::Value,
    ) -> VirtualMachine {
        create_namespace(&self.client, ns).await;
        let vm: VirtualMachine = serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": ns, "labels": {NODE: node}},
            "spec": spec,
        }))
        .expect("VM object");
        self.vms(ns)
            .create(&PostParams::default(), &vm)
            .await
            .expect("VM created");
        self.confirm(ns, name, node).await
    }

    /// Set Scheduled=True (reason Scheduled) and nodeName as the operator does.
    pub async fn confirm(&self, ns: &str, name: &str, node: &str) -> VirtualMachine {
        let status = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "status": {
                "nodeName": node,
                "conditions": [{
                    "type": "Scheduled", "status": "True", "reason": "Scheduled",
                    "message": format!("placed on {node}"),
                    "lastTransitionTime": "2026-11-25T09:00:00Z",
                }],
            },
        });
        self.vms(ns)
            .patch_status(
                name,
                &PatchParams::apply(OPERATOR_MANAGER).force(),
                &Patch::Apply(&status),
            )
            .await
            .expect("operator status applied")
    }

    /// The Events in `ns` about VM `name` with `reason`.
    pub async fn events(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
    ) -> Vec<k8s_openapi::api::events::v1::Event> {
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), ns)
            .list(&Default::default())
            .await
            .expect("events listed")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .collect()
    }

    /// Merge-patch the VM (spec, metadata) as a user would.
    pub async fn merge(&self, ns: &str, name: &str, patch: serde_json::Value) {
        self.vms(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("VM patched");
    }

    /// Wait until `f` finds the VM as wanted.
    pub async fn wait_vm(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        f: impl Fn(&VirtualMachine) -> bool,
    ) -> VirtualMachine {
        let api = self.vms(ns);
        wait_for(what, || {
            let api = api.clone();
            let f = &f;
            async move { api.get_opt(name).await.ok().flatten().filter(|v| f(v)) }
        })
        .await
    }
}

pub async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
    }))
    .expect("namespace object");
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// Poll `f` every 100 ms until it yields a value; panic after [`TIMEOUT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
