//! An in-process devcluster with the CRDs, a kubeconfig for the real binaries, and helpers
//! that play the operator's and the agent's status writes.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ironvisor_crds::labels::{NODE, OPERATOR_MANAGER, agent_manager};
use ironvisor_crds::vm::VirtualMachine;
use ironvisor_devcluster::DevCluster;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::process::Command;

/// The namespace the tests' VMs live in.
pub const NS: &str = "team";
/// The host the tests' VMs are placed on.
pub const HOST: &str = "host-a";
/// How long anything awaited may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A devcluster and a kubeconfig for it.
pub struct Cluster {
    pub cluster: DevCluster,
    pub client: Client,
    pub tmp: tempfile::TempDir,
    /// Contexts `devcluster` (namespace sandbox, current) and `team` (namespace team).
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub async fn start() -> Self {
        let cluster = DevCluster::start_ephemeral().await.expect("devcluster");
        let client = cluster.client().expect("client");
        let crds = Api::<CustomResourceDefinition>::all(client.clone());
        for crd in ironvisor_crds::crdgen::all() {
            crds.create(&PostParams::default(), &crd)
                .await
                .expect("CRD created");
        }
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS},
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(&cluster.url())).unwrap();
        let c = Self {
            cluster,
            client,
            tmp,
            kubeconfig,
        };
        c.eventually("the VirtualMachine API to be served", || async {
            c.vms().list(&Default::default()).await.ok().map(|_| ())
        })
        .await;
        c
    }

    pub async fn stop(self) {
        self.cluster.shutdown().await;
    }

    pub fn vms(&self) -> Api<VirtualMachine> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Create VM `name` with this runStrategy (and extra metadata), placed on [`HOST`] by
    /// the operator.
    pub async fn create_vm(
        &self,
        name: &str,
        strategy: &str,
        annotations: Value,
    ) -> VirtualMachine {
        let vm: VirtualMachine = serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS, "labels": {NODE: HOST},
                "annotations": annotations},
            "spec": {"runStrategy": strategy, "cpu": {"cores": 2}, "memory": {"size": "1Gi"}},
        }))
        .unwrap();
        self.vms()
            .create(&PostParams::default(), &vm)
            .await
            .expect("VM created");
        self.status_as(
            OPERATOR_MANAGER,
            name,
            json!({
                "nodeName": HOST, "vcpus": 2,
                "conditions": [{"type": "Scheduled", "status": "True", "reason": "Scheduled",
                    "message": format!("placed on {HOST}"),
                    "lastTransitionTime": "2026-11-25T09:00:00Z"}],
            }),
        )
        .await
    }

    /// Server-side apply `status` as `manager` (the operator or the agent).
    pub async fn status_as(&self, manager: &str, name: &str, status: Value) -> VirtualMachine {
        let body = json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine", "status": status,
        });
        self.vms()
            .patch_status(
                name,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("status applied")
    }

    /// The agent's status write: phase, printableStatus, Ready, and `extra` fields.
    pub async fn agent_reports(&self, name: &str, phase: &str, extra: Value) -> VirtualMachine {
        let ready = phase == "Running";
        let generation = self.get(name).await.metadata.generation;
        let mut status = json!({
            "phase": phase, "printableStatus": phase, "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "reason": phase, "message": format!("the guest is {}", phase.to_lowercase()),
                "lastTransitionTime": "2026-11-25T09:30:00Z"}],
        });
        if let (Some(s), Some(e)) = (status.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        self.status_as(&agent_manager(HOST), name, status).await
    }

    pub async fn get(&self, name: &str) -> VirtualMachine {
        self.vms().get(name).await.expect("VM exists")
    }

    /// Poll `f` every 50 ms until it yields; panic after [`TIMEOUT`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut f: F) -> T
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ivctl ARGS` with `KUBECONFIG` pointing at this cluster.
    pub fn ivctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ivctl"));
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("NODE_NAME")
            .env_remove("LIBVIRT_DEFAULT_URI")
            .kill_on_drop(true);
        c
    }

    /// `kubectl ARGS` with the plugin directory first on PATH.
    pub fn kubectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", plugin_path())
            .kill_on_drop(true);
        c
    }
}

/// Run to completion within [`TIMEOUT`].
pub async fn run(mut c: Command) -> Output {
    tokio::time::timeout(TIMEOUT, c.output())
        .await
        .expect("the command finishes in time")
        .expect("the command runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// PATH with the directory of `kubectl-ironvisor` first.
pub fn plugin_path() -> std::ffi::OsString {
    let dir = Path::new(env!("CARGO_BIN_EXE_kubectl-ironvisor"))
        .parent()
        .unwrap()
        .to_owned();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap()
}

fn kubeconfig_text(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: devcluster
  cluster:
    server: {url}
contexts:
- name: devcluster
  context:
    cluster: devcluster
    user: devcluster
    namespace: sandbox
- name: team
  context:
    cluster: devcluster
    user: devcluster
    namespace: {NS}
current-context: devcluster
users:
- name: devcluster
  user: {{}}
"
    )
}

/// The managers and operations recorded in `managedFields`, with whether each owns `field`
/// (a `FieldsV1` path such as `["f:spec", "f:runStrategy"]`).
pub fn managers_of(vm: &VirtualMachine, path: &[&str]) -> Vec<(String, String)> {
    vm.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            let mut v = m.fields_v1.as_ref().map(|f| &f.0);
            for p in path {
                v = v.and_then(|x| x.get(*p));
            }
            v.is_some()
        })
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}
