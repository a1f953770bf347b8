//! The agent, acting as its ServiceAccount under the real `manifests/rbac`, builds a VM's
//! seed from the operator's copy of its cloud-init Secret and can read nothing else: no
//! tenant Secret, no list of the copies. Without a copy the VM waits (`SeedPending`). The
//! test plays the operator (placement and the copy); `operator/tests/seed.rs` tests the
//! operator's side.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_agent::seed_key::{SeedKey, seal_to};
use ironvisor_agent::storage::layout;
use ironvisor_crds::common::find_condition;
use ironvisor_crds::seed;
use ironvisor_crds::vm::{Phase, VirtualMachine};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::process::Command;

const URI: &str = "test:///default";
const NS: &str = "tenant-a";

/// `kubectl apply` the namespaces and RBAC of `manifests/`, as an admin installs them.
fn install_manifests(c: &Cluster) {
    let kubeconfig = c.tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, c.cluster.kubeconfig()).expect("kubeconfig written");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    for args in [
        vec!["apply", "-f", "manifests/namespace.yaml"],
        vec!["apply", "-k", "manifests/rbac"],
    ] {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .current_dir(root)
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

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

fn seed_pending(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "ImagesReady"))
        .is_some_and(|c| c.status == "False" && c.reason == "SeedPending")
}

/// The copy the operator would write for `vm`, sealed to the public seed key `to`.
async fn write_copy(admin: &Client, vm: &VirtualMachine, source: &str, user_data: &str, to: &str) {
    use base64::Engine as _;
    let uid = vm.uid().expect("uid");
    let sealed = seal_to(to, user_data.as_bytes()).expect("a valid key");
    let body = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": seed::secret_name(&uid), "namespace": seed::NAMESPACE,
            "labels": {seed::VM_UID_LABEL: uid, seed::VM_NAMESPACE_LABEL: NS},
            "annotations": {seed::VM_NAME_ANNOTATION: vm.name_any(),
                            "ironvisor.io/user-data-secret": source,
                            seed::SEALED_FOR_ANNOTATION: to}},
        "type": seed::SECRET_TYPE,
        "data": {"userData": base64::engine::general_purpose::STANDARD.encode(sealed)}});
    Api::<Secret>::namespaced(admin.clone(), seed::NAMESPACE)
        .patch(
            &seed::secret_name(&uid),
            &PatchParams::apply("ironvisor-operator").force(),
            &Patch::Apply(body),
        )
        .await
        .expect("copy written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reads_only_the_seed_copy_and_builds_the_seed_from_it() {
    let node = format!("seed-node-{}", std::process::id());
    let mut c = Cluster::without_agent(&node).await;
    install_manifests(&c);
    common::cluster::create_namespace(&c.client, NS).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "init", "namespace": NS},
        "stringData": {"userdata": "#cloud-config\ntenant-only\n"}}))
    .expect("secret");
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("tenant secret");
    let token = c
        .cluster
        .service_account_token("ironvisor-system", "ironvisor-agent", Some(&node))
        .expect("the agent's ServiceAccount exists");
    let agent = c.cluster.client_with_token(&token).expect("client");

    // The agent's identity: no tenant Secret, no list of copies, no Secret of the system.
    let tenant: Api<Secret> = Api::namespaced(agent.clone(), NS);
    assert!(
        forbidden(tenant.get("init").await),
        "tenant Secret readable"
    );
    let copies: Api<Secret> = Api::namespaced(agent.clone(), seed::NAMESPACE);
    assert!(forbidden(copies.list(&ListParams::default()).await));
    let all: Api<Secret> = Api::all(agent.clone());
    assert!(forbidden(all.list(&ListParams::default()).await));
    let system: Api<Secret> = Api::namespaced(agent.clone(), "ironvisor-system");
    assert!(forbidden(system.get("anything").await));

    c.run_agent(URI, agent, |_| {});
    let spec = json!({
        "memory": {"size": "128Mi"},
        "networks": [{"name": "default", "user": {}}],
        "cloudInit": {"userDataSecretRef": {"name": "init"}},
        "terminationGracePeriodSeconds": 0,
    });
    let vm = c.place(NS, "web", &node, spec).await;
    let uid = vm.uid().expect("uid");
    c.wait_vm(NS, "web", "ImagesReady=False SeedPending", seed_pending)
        .await;
    assert!(
        !layout::seed_file(&c.vm_dir(&uid)).exists(),
        "no seed without the copy"
    );

    // The agent published its seed key; the copy must be sealed to it.
    let key = SeedKey::load_or_create(&c.state_dir).expect("the agent's key");
    let published = wait_for("the host's seed key", || {
        let hv = Api::<ironvisor_crds::Hypervisor>::all(c.client.clone());
        let node = node.clone();
        async move { hv.get(&node).await.ok()?.status?.seed_key }
    })
    .await;
    assert_eq!(published, key.public_b64());

    // A copy made for another Secret than the spec names is not used.
    write_copy(
        &c.client,
        &vm,
        "older",
        "#cloud-config\nstale\n",
        key.public_b64(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let now = c.vms(NS).get("web").await.expect("VM");
    assert!(seed_pending(&now), "a stale copy is not used");
    // Nor one sealed to another host's key.
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = SeedKey::load_or_create(other_dir.path()).expect("another key");
    write_copy(
        &c.client,
        &vm,
        "init",
        "#cloud-config\nforeign\n",
        other.public_b64(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let now = c.vms(NS).get("web").await.expect("VM");
    assert!(
        seed_pending(&now),
        "a copy sealed to another host is not used"
    );

    write_copy(
        &c.client,
        &vm,
        "init",
        "#cloud-config\nmarker: from-copy\n",
        key.public_b64(),
    )
    .await;
    c.wait_vm(NS, "web", "Running", |v| {
        v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    let seed_file = layout::seed_file(&c.vm_dir(&uid));
    let iso = wait_for("the seed image", || {
        let p = seed_file.clone();
        async move { std::fs::read(p).ok() }
    })
    .await;
    let text = String::from_utf8_lossy(&iso);
    assert!(
        text.contains("marker: from-copy"),
        "the seed holds the copy's user data"
    );
    assert!(!text.contains("stale"), "not the stale copy's");
    assert!(!text.contains("foreign"), "not the foreign copy's");
    c.stop().await;
}
