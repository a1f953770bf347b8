//! Objects the benchmarks create through the API: CRDs, namespaces, a tenant with a quota,
//! hosts, VMs, and the status writes an operator or agent would make when the bench plays
//! that part. Object bodies are built by pure functions.

use anyhow::Context as _;
use ironvisor_crds::labels::{self, NODE, OPERATOR_MANAGER};
use ironvisor_crds::{Hypervisor, Quota, Tenant, VirtualMachine};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A client for the kubeconfig at `path`.
pub async fn client(path: &std::path::Path) -> anyhow::Result<Client> {
    ironvisor_agent::daemon::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(Client::try_from(cfg)?)
}

/// Create the Ironvisor CRDs and the system namespace; wait until VMs can be listed.
pub async fn install(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ironvisor_crds::crdgen::all() {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating a CRD"),
        }
    }
    namespace(client, labels::SYSTEM_NAMESPACE).await?;
    let vms: Api<VirtualMachine> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while vms.list(&ListParams::default().limit(1)).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the VirtualMachine API is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Create a namespace (fine if it exists).
pub async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// A tenant owning `ns` (created first) and a quota that admits `vms` VMs of any size.
pub async fn tenant_with_quota(
    client: &Client,
    tenant: &str,
    ns: &str,
    vms: usize,
) -> anyhow::Result<()> {
    namespace(client, ns).await?;
    let t: Tenant = serde_json::from_value(json!({"metadata": {"name": tenant},
        "spec": {"namespaces": [ns], "owners": [{"kind": "Group", "name": format!("{tenant}-admins")}]}}))?;
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &t)
        .await
        .context("creating the tenant")?;
    let q: Quota = serde_json::from_value(quota_body(tenant, vms))?;
    Api::<Quota>::all(client.clone())
        .create(&PostParams::default(), &q)
        .await
        .context("creating the quota")?;
    Ok(())
}

/// A quota named after the tenant with room for `vms` VMs of up to 4 vCPUs and 1 GiB each.
pub fn quota_body(tenant: &str, vms: usize) -> Value {
    json!({"metadata": {"name": format!("{tenant}-compute")},
           "spec": {"tenant": tenant, "hard": {
               "virtualMachines": vms, "vcpus": vms * 4, "memory": format!("{vms}Gi")}}})
}

/// The benchmark VM: 1 vCPU, 64 MiB, no disk, no NIC, runStrategy Always. On QEMU it is the
/// cheapest guest there is: its BIOS finds nothing to boot and idles.
pub fn tiny_spec() -> Value {
    json!({"runStrategy": "Always", "cpu": {"cores": 1}, "memory": {"size": "64Mi"}})
}

/// A VM object, labelled for `node` when given (the bench placing it itself).
pub fn vm_body(ns: &str, name: &str, spec: &Value, node: Option<&str>) -> Value {
    let mut meta = json!({"name": name, "namespace": ns});
    if let Some(n) = node {
        meta["labels"] = json!({NODE: n});
    }
    json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
           "metadata": meta, "spec": spec})
}

/// Create a VM.
pub async fn create_vm(
    client: &Client,
    ns: &str,
    name: &str,
    spec: &Value,
    node: Option<&str>,
) -> anyhow::Result<()> {
    let vm: VirtualMachine = serde_json::from_value(vm_body(ns, name, spec, node))?;
    Api::<VirtualMachine>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &vm)
        .await
        .with_context(|| format!("creating VM {ns}/{name}"))?;
    Ok(())
}

/// The status the operator writes when it places a VM: nodeName and Scheduled=True.
pub fn scheduled_status(node: &str, now: &str) -> Value {
    json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "status": {"nodeName": node, "conditions": [{
            "type": "Scheduled", "status": "True", "reason": "Scheduled",
            "message": format!("placed on {node}"), "lastTransitionTime": now}]}})
}

/// Play the operator for one VM that already carries the node label.
pub async fn confirm_placement(
    client: &Client,
    ns: &str,
    name: &str,
    node: &str,
) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now().to_string();
    Api::<VirtualMachine>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::apply(OPERATOR_MANAGER).force(),
            &Patch::Apply(scheduled_status(node, &now)),
        )
        .await
        .with_context(|| format!("placing VM {ns}/{name}"))?;
    Ok(())
}

/// A Hypervisor object with the given overcommit ratios (created before its agent starts,
/// which then only writes the status).
pub async fn hypervisor(
    client: &Client,
    name: &str,
    cpu_ratio: f64,
    memory_ratio: f64,
) -> anyhow::Result<()> {
    let hv: Hypervisor = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"overcommit": {"cpu": cpu_ratio, "memory": memory_ratio}}}))?;
    match Api::<Hypervisor>::all(client.clone())
        .create(&PostParams::default(), &hv)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating hypervisor {name}")),
    }
}

/// Wait until the host's status says Ready=True.
pub async fn wait_host_ready(client: &Client, name: &str, within: Duration) -> anyhow::Result<()> {
    let api: Api<Hypervisor> = Api::all(client.clone());
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(hv)) = api.get_opt(name).await {
            let ready = hv
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "host {name} not Ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A simulated host's status as its agent would write it: capacity = allocatable, Ready.
pub fn host_status(name: &str, vcpus: u32, memory: &str, now: &str) -> Value {
    let res = json!({"vcpus": vcpus, "memory": memory});
    json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": name},
        "status": {"capacity": res, "allocatable": res, "lastHeartbeatTime": now,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                            "message": "", "lastTransitionTime": now}]}})
}

/// A heartbeat Lease body as an agent renews it.
pub fn lease_body(node: &str, now_micros: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("{}{node}", labels::HEARTBEAT_LEASE_PREFIX),
                     "namespace": labels::SYSTEM_NAMESPACE},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now_micros}})
}

/// Renew a host's heartbeat Lease with its agent's field manager.
pub async fn renew_lease(client: &Client, node: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), labels::SYSTEM_NAMESPACE);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let body = lease_body(node, &now);
    let name = format!("{}{node}", labels::HEARTBEAT_LEASE_PREFIX);
    api.patch(
        &name,
        &PatchParams::apply(&labels::agent_manager(node)).force(),
        &Patch::Apply(body),
    )
    .await
    .with_context(|| format!("renewing the lease of {node}"))?;
    Ok(())
}

/// The status a real agent writes once the domain runs (phase, printable status, Ready).
pub fn running_status(now: &str, generation: Option<i64>) -> Value {
    let mut status = json!({"phase": "Running", "printableStatus": "Running",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                        "message": "", "lastTransitionTime": now}]});
    if let Some(g) = generation {
        status["observedGeneration"] = json!(g);
    }
    json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine", "status": status})
}

/// Delete every VM in `ns` and wait until they are gone (their agents' finalizers done).
pub async fn delete_all_vms(client: &Client, ns: &str, within: Duration) -> anyhow::Result<()> {
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    let _ = api
        .delete_collection(&Default::default(), &ListParams::default())
        .await;
    let deadline = Instant::now() + within;
    loop {
        let left = api.list(&ListParams::default()).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} VMs in {ns} still there after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_objects_are_valid_api_objects() {
        let _: VirtualMachine =
            serde_json::from_value(vm_body("ns", "vm-1", &tiny_spec(), Some("h1"))).expect("VM");
        let _: Quota = serde_json::from_value(quota_body("t", 100)).expect("quota");
        let _: Lease =
            serde_json::from_value(lease_body("h1", "2026-11-25T10:00:00.000000Z")).expect("lease");
        let mut body = host_status("h1", 320, "640Gi", "2026-11-25T10:00:00Z");
        // The status patch carries no spec; the stored object has one.
        body["spec"] = json!({});
        let hv: Hypervisor = serde_json::from_value(body).expect("host");
        assert_eq!(
            hv.status.and_then(|s| s.allocatable).map(|a| a.vcpus),
            Some(320)
        );
    }

    #[test]
    fn a_vm_placed_by_the_bench_carries_the_node_label() {
        let vm: VirtualMachine =
            serde_json::from_value(vm_body("ns", "a", &tiny_spec(), Some("h7"))).expect("VM");
        assert_eq!(
            vm.metadata
                .labels
                .and_then(|l| l.get(NODE).cloned())
                .as_deref(),
            Some("h7")
        );
        let unplaced = vm_body("ns", "b", &tiny_spec(), None);
        assert!(unplaced["metadata"].get("labels").is_none());
    }

    #[test]
    fn the_quota_scales_with_the_vm_count() {
        let q = quota_body("bench", 10_000);
        assert_eq!(q["spec"]["hard"]["virtualMachines"], 10_000);
        assert_eq!(q["spec"]["hard"]["vcpus"], 40_000);
        assert_eq!(q["spec"]["hard"]["memory"], "10000Gi");
    }

    #[test]
    fn the_simulated_running_status_is_a_valid_vm_status() {
        let body = running_status("2026-11-25T10:00:00Z", Some(1));
        let vm: VirtualMachine = serde_json::from_value(
            json!({"metadata": {"name": "x"}, "spec": tiny_spec(), "status": body["status"]}),
        )
        .expect("VM");
        let st = vm.status.expect("status");
        assert_eq!(st.phase.map(|p| p.as_str()), Some("Running"));
        assert_eq!(st.observed_generation, Some(1));
    }
}
