//! Shared helpers of the operator's integration tests: an in-process devcluster with the CRDs,
//! operator replicas run in-process, simulated hosts (Hypervisor status + heartbeat Lease
//! written by the test), and polling with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ironvisor_crds::{Hypervisor, Quota, Tenant, VirtualMachine, labels};
use ironvisor_devcluster::DevCluster;
use ironvisor_operator::leader::Timing;
use ironvisor_operator::metrics::Metrics;
use ironvisor_operator::run::{RunConfig, run};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any expected state may take to appear.
pub const WAIT: Duration = Duration::from_secs(15);

/// A devcluster with the Ironvisor CRDs and the system namespace.
pub struct Env {
    pub cluster: DevCluster,
    pub client: Client,
}

impl Env {
    pub async fn start() -> Self {
        let env = Self::without_system_namespace().await;
        env.namespace(labels::SYSTEM_NAMESPACE).await;
        env
    }

    /// The CRDs only: `ironvisor-system` is missing, as before `kubectl apply -k manifests/`.
    pub async fn without_system_namespace() -> Self {
        let env = Self::bare().await;
        env.install_crds().await;
        env
    }

    /// An empty devcluster: no CRDs, no `ironvisor-system`.
    pub async fn bare() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "off".into()),
            )
            .with_test_writer()
            .try_init();
        let cluster = DevCluster::start_ephemeral()
            .await
            .expect("devcluster starts");
        let client = cluster.client().expect("client");
        Self { cluster, client }
    }

    /// Create the Ironvisor CRDs and wait until they serve.
    pub async fn install_crds(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for crd in ironvisor_crds::crdgen::all() {
            crds.create(&PostParams::default(), &crd)
                .await
                .expect("CRD created");
        }
        // The CRDs serve once a list answers.
        let vms: Api<VirtualMachine> = Api::all(self.client.clone());
        eventually("the CRDs serve", || async {
            vms.list(&ListParams::default()).await.is_ok()
        })
        .await;
    }

    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
    }

    pub fn vms(&self, ns: &str) -> Api<VirtualMachine> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn quotas(&self) -> Api<Quota> {
        Api::all(self.client.clone())
    }

    pub fn tenants(&self) -> Api<Tenant> {
        Api::all(self.client.clone())
    }

    pub fn hypervisors(&self) -> Api<Hypervisor> {
        Api::all(self.client.clone())
    }

    /// A tenant owning `namespaces` (created first), with an optional parent.
    pub async fn tenant(&self, name: &str, namespaces: &[&str], parent: Option<&str>) {
        for ns in namespaces {
            self.namespace(ns).await;
        }
        self.tenant_only(name, namespaces, parent).await;
    }

    /// A tenant whose namespaces the operator must create.
    pub async fn tenant_only(&self, name: &str, namespaces: &[&str], parent: Option<&str>) {
        let mut spec = json!({"namespaces": namespaces,
                              "owners": [{"kind": "Group", "name": format!("{name}-admins")}]});
        if let Some(p) = parent {
            spec["parent"] = json!(p);
        }
        let t: Tenant =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        self.tenants()
            .create(&PostParams::default(), &t)
            .await
            .expect("tenant created");
    }

    /// A quota on `tenant` with `hard` (Quota spec.hard JSON).
    pub async fn quota(&self, name: &str, tenant: &str, hard: Value) {
        let q: Quota = serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"tenant": tenant, "hard": hard}}),
        )
        .unwrap();
        self.quotas()
            .create(&PostParams::default(), &q)
            .await
            .expect("quota created");
    }

    /// A VM with `cores` vCPUs and `memory`, plus `extra` merged into its spec.
    pub async fn vm(&self, ns: &str, name: &str, cores: u32, memory: &str, extra: Value) {
        let vm = vm_object(ns, name, cores, memory, extra);
        self.vms(ns)
            .create(&PostParams::default(), &vm)
            .await
            .unwrap_or_else(|e| panic!("VM {ns}/{name} created: {e}"));
    }

    /// A simulated host: a Hypervisor with capacity = allocatable and Ready=True, and its
    /// heartbeat Lease, renewed now.
    pub async fn host(&self, name: &str, vcpus: u32, memory: &str, spec: Value) {
        let hv: Hypervisor =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        let api = self.hypervisors();
        api.create(&PostParams::default(), &hv)
            .await
            .expect("hypervisor created");
        self.agent_status(name, vcpus, memory).await;
        self.heartbeat(name).await;
    }

    /// The host's status as its agent writes it (server-side apply, the agent's manager):
    /// capacity = allocatable, Ready=True.
    pub async fn agent_status(&self, name: &str, vcpus: u32, memory: &str) {
        let now = jiff::Timestamp::now().to_string();
        let res = json!({"vcpus": vcpus, "memory": memory});
        let body = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
            "metadata": {"name": name},
            "status": {
                "capacity": res, "allocatable": res, "lastHeartbeatTime": now,
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                                "message": "", "lastTransitionTime": now}]}});
        self.hypervisors()
            .patch_status(
                name,
                &PatchParams::apply(&labels::agent_manager(name)).force(),
                &Patch::Apply(body),
            )
            .await
            .expect("hypervisor status written");
    }

    /// Renews (or creates) the host's heartbeat Lease.
    pub async fn heartbeat(&self, node: &str) {
        heartbeat(&self.client, node).await;
    }

    /// Renews the heartbeats of `nodes` every 500 ms until the handle is aborted.
    pub fn keep_alive(&self, nodes: &[&str]) -> JoinHandle<()> {
        let client = self.client.clone();
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        tokio::spawn(async move {
            loop {
                for n in &nodes {
                    heartbeat(&client, n).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// The node a VM is labelled with, if any.
    pub async fn node_of(&self, ns: &str, name: &str) -> Option<String> {
        let vm = self.vms(ns).get(name).await.ok()?;
        vm.labels().get(labels::NODE).cloned()
    }

    /// Count of VMs in `ns` carrying the node label.
    pub async fn admitted(&self, ns: &str) -> usize {
        let lp = ListParams::default().labels(labels::NODE);
        self.vms(ns).list(&lp).await.expect("VMs list").items.len()
    }

    /// The VM's condition `type` as (status, reason, message).
    pub async fn condition(
        &self,
        ns: &str,
        name: &str,
        ty: &str,
    ) -> Option<(String, String, String)> {
        let vm = self.vms(ns).get(name).await.ok()?;
        let c = vm.status?.conditions.into_iter().find(|c| c.type_ == ty)?;
        Some((c.status, c.reason, c.message))
    }
}

/// Renews (or creates) a host's heartbeat Lease as its agent would.
pub async fn heartbeat(client: &Client, node: &str) {
    let api: Api<Lease> = Api::namespaced(client.clone(), labels::SYSTEM_NAMESPACE);
    let name = format!("{}{node}", labels::HEARTBEAT_LEASE_PREFIX);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": labels::SYSTEM_NAMESPACE},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    api.patch(
        &name,
        &PatchParams::apply(&labels::agent_manager(node)).force(),
        &Patch::Apply(body),
    )
    .await
    .expect("heartbeat written");
}

pub fn vm_object(ns: &str, name: &str, cores: u32, memory: &str, extra: Value) -> VirtualMachine {
    let mut spec = json!({"runStrategy": "Always", "cpu": {"cores": cores},
                          "memory": {"size": memory}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap_or_else(|e| panic!("VM {name} parses: {e}"))
}

/// Test-speed settings: short resync and grace, fast election.
pub fn fast_config(identity: &str) -> RunConfig {
    RunConfig {
        resync: Duration::from_secs(1),
        host_grace: Duration::from_secs(3),
        timing: Timing {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        },
        ..RunConfig::new(identity)
    }
}

/// An operator replica running in-process.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    pub metrics: Arc<Metrics>,
}

impl Operator {
    pub fn start(client: Client, cfg: RunConfig) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let m = metrics.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = run(client, cfg, m, shutdown).await {
                panic!("operator stopped: {e}");
            }
        });
        Self {
            stop: Some(tx),
            task,
            metrics,
        }
    }

    /// Stops the replica and waits until it has stopped (it writes nothing afterwards).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("operator task ends cleanly");
    }

    /// Kills the replica abruptly (as a crash would).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Polls `check` every 50 ms until it holds, failing after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, WAIT, check).await;
}

pub async fn eventually_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kubectl apply` the namespace and RBAC of `manifests/`, as an admin installs them.
pub fn install_manifests(env: &Env, dir: &std::path::Path) {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, env.cluster.kubeconfig()).expect("kubeconfig written");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for args in [
        vec!["apply", "-f", "manifests/namespace.yaml"],
        vec!["apply", "-k", "manifests/rbac"],
    ] {
        let out = std::process::Command::new("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .current_dir(&root)
            .args(&args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
