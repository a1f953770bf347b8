//! The whole agent (`daemon::run`) in-process against an in-process devcluster, on libvirt's
//! `test:///default` driver. The test plays the operator: it labels VMs for the node and
//! confirms their placement with Scheduled=True.
//!
//! The test driver's state is shared by the whole process, and an agent removes the domains
//! of VMs it does not know when it starts; so the tests here run one at a time.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_crds::common::{condition_is_true, condition_type};
use ironvisor_crds::hypervisor::{Acceleration, Hypervisor};
use ironvisor_crds::labels::{
    AGENT_FINALIZER, HEARTBEAT_LEASE_PREFIX, RESTART_REQUESTED_AT, SYSTEM_NAMESPACE, agent_manager,
};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use std::time::Duration;
use tokio::sync::Mutex;

const URI: &str = "test:///default";

static SERIAL: Mutex<()> = Mutex::const_new(());

fn spec() -> serde_json::Value {
    serde_json::json!({
        "memory": {"size": "128Mi"},
        "disks": [{"name": "root", "size": "16Mi", "source": {"blank": {}}}],
        "networks": [{"name": "default", "user": {}}],
        "cloudInit": {"userData": "#cloud-config\n"},
        "terminationGracePeriodSeconds": 0,
    })
}

/// The libvirt state of a domain: `None` when undefined, else whether it is active.
fn domain_active(ns: &str, name: &str) -> Option<bool> {
    common::admin(URI)
        .lookup_domain_by_name(&domain_name(ns, name))
        .ok()
        .map(|d| d.is_active().expect("domain state"))
}

fn phase(vm: &VirtualMachine) -> Option<Phase> {
    vm.status.as_ref().and_then(|s| s.phase)
}

fn ready(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .is_some_and(|s| condition_is_true(&s.conditions, condition_type::READY))
}

fn running(vm: &VirtualMachine) -> bool {
    phase(vm) == Some(Phase::Running) && ready(vm)
}

async fn wait_domain(ns: &str, name: &str, want: Option<bool>) {
    wait_for(
        &format!("domain {ns}/{name} to be {want:?}"),
        || async move { (domain_active(ns, name) == want).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_vm_placed_on_the_node_runs_and_a_vm_of_another_node_is_ignored() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("node-a", URI, |_| {}).await;
    c.place("it-run", "other", "node-b", spec()).await;
    c.place("it-run", "web", "node-a", spec()).await;
    let vm = c
        .wait_vm("it-run", "web", "web Running and Ready", running)
        .await;
    assert_eq!(domain_active("it-run", "web"), Some(true));
    let status = vm.status.as_ref().expect("status");
    assert!(status.domain_uuid.is_some(), "domainUUID set");
    assert!(status.started_at.is_some(), "startedAt set");
    assert_eq!(status.observed_generation, vm.metadata.generation);
    assert!(
        condition_is_true(&status.conditions, condition_type::SCHEDULED),
        "the operator's condition survives the agent's apply"
    );
    assert_eq!(status.node_name.as_deref(), Some("node-a"));
    assert!(vm.finalizers().iter().any(|f| f == AGENT_FINALIZER));
    let managers: Vec<_> = vm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&agent_manager("node-a")),
        "managers: {managers:?}"
    );
    // The other node's VM: no domain, no finalizer, no status from this agent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(domain_active("it-run", "other"), None);
    let other = c.vms("it-run").get("other").await.expect("other VM");
    assert!(other.finalizers().is_empty());
    assert_eq!(phase(&other), None);
    c.stop().await;
}

#[tokio::test]
async fn a_vm_waits_for_the_operator_to_confirm_its_placement() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("node-p", URI, |_| {}).await;
    common::cluster::create_namespace(&c.client, "it-pending").await;
    let vm: VirtualMachine = serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "it-pending",
                     "labels": {"ironvisor.io/node": "node-p"}},
        "spec": spec(),
    }))
    .expect("VM");
    c.vms("it-pending")
        .create(&Default::default(), &vm)
        .await
        .expect("created");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(domain_active("it-pending", "web"), None, "not started yet");
    let untouched = c.vms("it-pending").get("web").await.expect("web");
    assert!(untouched.finalizers().is_empty(), "not even a finalizer");
    assert!(untouched.status.is_none(), "no status from the agent");
    c.confirm("it-pending", "web", "node-p").await;
    c.wait_vm("it-pending", "web", "Running once scheduled", running)
        .await;
    c.stop().await;
}

#[tokio::test]
async fn a_vm_labelled_for_this_node_but_placed_elsewhere_by_the_operator_is_never_defined() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("node-t", URI, |_| {}).await;
    // The operator placed it on node-u (Scheduled=True); a tenant relabels it for node-t.
    c.place("it-label", "moved", "node-u", spec()).await;
    c.merge(
        "it-label",
        "moved",
        serde_json::json!({"metadata": {"labels": {"ironvisor.io/node": "node-t"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(domain_active("it-label", "moved"), None, "never defined");
    let vm = c.vms("it-label").get("moved").await.expect("moved");
    assert!(
        vm.finalizers().is_empty(),
        "not taken on: {:?}",
        vm.finalizers()
    );
    assert_eq!(phase(&vm), None, "no status from this agent");
    // Once the operator places it here, the same agent runs it.
    c.confirm("it-label", "moved", "node-t").await;
    c.wait_vm("it-label", "moved", "Running once placed here", running)
        .await;
    c.stop().await;
}

#[tokio::test]
async fn the_hypervisor_object_appears_and_the_lease_is_renewed() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("node-h", URI, |_| {}).await;
    let hvs = Api::<Hypervisor>::all(c.client.clone());
    let hv = wait_for("the Hypervisor status", || {
        let hvs = hvs.clone();
        async move {
            hvs.get_opt("node-h")
                .await
                .ok()
                .flatten()
                .filter(|h| h.status.as_ref().is_some_and(|s| s.capacity.is_some()))
        }
    })
    .await;
    let status = hv.status.as_ref().expect("status");
    let cap = status.capacity.as_ref().expect("capacity");
    assert!(cap.vcpus > 0, "capacity vCPUs");
    assert!(status.allocatable.is_some(), "allocatable");
    assert_eq!(status.acceleration, Some(Acceleration::Tcg));
    assert!(
        condition_is_true(&status.conditions, condition_type::READY),
        "Ready: {:?}",
        status.conditions
    );
    let leases = Api::<Lease>::namespaced(c.client.clone(), SYSTEM_NAMESPACE);
    let lease_name = format!("{HEARTBEAT_LEASE_PREFIX}node-h");
    let renew_time = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first = wait_for("the Lease", || {
        let leases = leases.clone();
        let lease_name = &lease_name;
        async move { leases.get_opt(lease_name).await.ok().flatten() }
    })
    .await;
    let spec = first.spec.as_ref().expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("node-h"));
    let t0 = renew_time(&first).expect("renewTime");
    wait_for("the Lease to be renewed", || {
        let leases = leases.clone();
        let lease_name = &lease_name;
        let t0 = t0.clone();
        async move {
            let l = leases.get_opt(lease_name).await.ok().flatten()?;
            (renew_time(&l)? != t0).then_some(())
        }
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn halted_stops_always_starts_and_the_restart_annotation_restarts_once() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("node-l", URI, |_| {}).await;
    c.place("it-life", "web", "node-l", spec()).await;
    let vm = c.wait_vm("it-life", "web", "Running", running).await;
    let first_uuid = vm.status.as_ref().and_then(|s| s.domain_uuid.clone());

    c.merge(
        "it-life",
        "web",
        serde_json::json!({"spec": {"runStrategy": "Halted"}}),
    )
    .await;
    c.wait_vm("it-life", "web", "Stopped", |v| {
        phase(v) == Some(Phase::Stopped)
    })
    .await;
    assert_eq!(domain_active("it-life", "web"), Some(false));

    c.merge(
        "it-life",
        "web",
        serde_json::json!({"spec": {"runStrategy": "Always"}}),
    )
    .await;
    let vm = c.wait_vm("it-life", "web", "Running again", running).await;
    assert_eq!(domain_active("it-life", "web"), Some(true));
    assert_eq!(
        vm.status.as_ref().and_then(|s| s.domain_uuid.clone()),
        first_uuid,
        "the same domain, started again"
    );
    let started = vm.status.as_ref().and_then(|s| s.started_at.clone());

    // startedAt has second precision: make the restart visible in it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.merge(
        "it-life",
        "web",
        serde_json::json!({"metadata": {"annotations": {RESTART_REQUESTED_AT: "2026-11-25T10:00:00Z"}}}),
    )
    .await;
    let vm = c
        .wait_vm("it-life", "web", "the restart to be handled", |v| {
            v.status
                .as_ref()
                .and_then(|s| s.last_restart_request.as_deref())
                == Some("2026-11-25T10:00:00Z")
                && running(v)
        })
        .await;
    let restarted = vm.status.as_ref().and_then(|s| s.started_at.clone());
    assert_ne!(restarted, started, "the guest was started again");
    // Once: later reconciles (forced by a label change) do not restart again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.merge(
        "it-life",
        "web",
        serde_json::json!({"metadata": {"labels": {"touch": "1"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let vm = c.vms("it-life").get("web").await.expect("VM");
    assert_eq!(
        vm.status.as_ref().and_then(|s| s.started_at.clone()),
        restarted,
        "the same restart request is not acted on twice"
    );
    c.stop().await;
}

#[tokio::test]
async fn deleting_a_vm_removes_its_domain_and_directory_and_keeps_the_image() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("node-d", URI, |_| {}).await;
    let image = c.images_dir.join("base.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).expect("image");
    let mut s = spec();
    s["disks"] = serde_json::json!([{"name": "root", "source": {"hostPath": {"path": image.to_str().expect("utf-8 path")}}}]);
    c.place("it-del", "web", "node-d", s).await;
    let vm = c.wait_vm("it-del", "web", "Running", running).await;
    let uid = vm.metadata.uid.clone().expect("uid");
    assert!(c.vm_dir(&uid).join("disk-root.qcow2").exists());

    c.vms("it-del")
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let api = c.vms("it-del");
    wait_for("the VM object to go", || {
        let api = api.clone();
        async move { matches!(api.get_opt("web").await, Ok(None)).then_some(()) }
    })
    .await;
    assert_eq!(domain_active("it-del", "web"), None, "domain undefined");
    assert!(!c.vm_dir(&uid).exists(), "VM directory removed");
    assert_eq!(std::fs::read(&image).expect("image kept").len(), 1 << 20);
    c.stop().await;
}

#[tokio::test]
async fn an_out_of_band_destroy_is_repaired() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start("node-x", URI, |_| {}).await;
    c.place("it-drift", "web", "node-x", spec()).await;
    c.wait_vm("it-drift", "web", "Running", running).await;
    {
        common::admin(URI)
            .lookup_domain_by_name(&domain_name("it-drift", "web"))
            .expect("domain")
            .destroy()
            .expect("destroyed");
    }
    wait_domain("it-drift", "web", Some(true)).await;
    let vm = c
        .wait_vm("it-drift", "web", "the restart counted", |v| {
            running(v) && v.status.as_ref().and_then(|s| s.restart_count).unwrap_or(0) >= 1
        })
        .await;
    assert!(ready(&vm));
    c.stop().await;
}
