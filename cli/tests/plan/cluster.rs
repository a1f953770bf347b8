//! `ivctl import plan` reading Tenants, Quotas and Hypervisors from a cluster (the
//! in-process devcluster, through a kubeconfig), instead of files.

use ironvisor_crds::{Hypervisor, Quota, Tenant};
use ironvisor_devcluster::DevCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_reads_quotas_and_hosts_from_the_cluster() {
    let cluster = DevCluster::start_ephemeral().await.expect("devcluster");
    let client = cluster.client().unwrap();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in ironvisor_crds::crdgen::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    // The CRDs are served a moment after they are created.
    let tenants = Api::<Tenant>::all(client.clone());
    for _ in 0..100 {
        if tenants.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let g = "ironvisor.io/v1alpha1";
    create(&tenants, json!({"apiVersion": g, "kind": "Tenant", "metadata": {"name": "web"}, "spec": {"namespaces": ["web"]}})).await;
    create(&Api::<Quota>::all(client.clone()), json!({"apiVersion": g, "kind": "Quota", "metadata": {"name": "web-q"}, "spec": {"tenant": "web", "hard": {"virtualMachines": 1}}})).await;
    let hv = Api::<Hypervisor>::all(client.clone());
    create(
        &hv,
        json!({"apiVersion": g, "kind": "Hypervisor", "metadata": {"name": "host-a"}, "spec": {}}),
    )
    .await;
    let status = json!({"status": {"allocatable": {"vcpus": 16, "memory": "64Gi"}, "allocated": {"vcpus": 0, "memory": "0"}}});
    hv.patch_status("host-a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n", cluster.url()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("vInfo.csv"),
        "VM,CPUs,Memory,Provisioned MiB\nweb-1,2,2048,1024\nweb-2,2,2048,2048\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - tenant: web\n    match: { vm: 'web-*' }\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["import", "plan", "--throughput", "100"])
        .arg("--inventory")
        .arg(dir.path().join("vInfo.csv"))
        .arg("--tenant-rules")
        .arg(dir.path().join("rules.yaml"))
        .arg("--out")
        .arg(dir.path().join("plan"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("plan/plan.json")).unwrap()).unwrap();
    assert!(
        plan["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "target facts from cluster"),
        "{}",
        plan["inputs"]
    );
    // The quota allows one VM: the smaller moves, the other is a shortfall.
    let v = &plan["violations"][0];
    assert_eq!(
        (v["vm"].as_str(), v["resource"].as_str(), v["left"].as_u64()),
        (Some("web-2"), Some("virtualMachines"), Some(0))
    );
    let web1 = plan["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web-1")
        .unwrap();
    assert_eq!(
        (web1["host"].as_str(), web1["wave"].as_u64()),
        (Some("host-a"), Some(1))
    );
    // The tenant exists in the cluster: the wave needs no Tenant manifest.
    assert!(!dir.path().join("plan/wave-01/00-tenants.yaml").exists());
    assert!(dir.path().join("plan/wave-01/web.web-1.yaml").is_file());
    cluster.shutdown().await;
}
