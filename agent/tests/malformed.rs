//! One malformed VirtualMachine (stored under a looser schema than the agent's types, as
//! after a CRD downgrade or an object written around validation) must not break the watch
//! or stop the other VMs; it is reported with the failing field, its domain is left alone,
//! and deleting it still cleans up, though never the layers a retained snapshot of it reads
//! (asked of the API by uid). In-process agent and devcluster on `test:///default`.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_crds::common::{condition_type, find_condition};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

const URI: &str = "test:///default";
const NS: &str = "it-malformed";

fn spec() -> serde_json::Value {
    serde_json::json!({
        "memory": {"size": "64Mi"},
        "terminationGracePeriodSeconds": 0,
    })
}

fn domain_active(ns: &str, name: &str) -> Option<bool> {
    common::admin(URI)
        .lookup_domain_by_name(&domain_name(ns, name))
        .ok()
        .map(|d| d.is_active().expect("domain state"))
}

/// Replace the VM schema's `spec` with an open object, as an older or looser CRD would.
async fn loosen_the_vm_schema(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let mut crd = crds
        .get("virtualmachines.ironvisor.io")
        .await
        .expect("the VM CRD");
    for v in &mut crd.spec.versions {
        let schema = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .expect("schema");
        let props = schema.properties.as_mut().expect("properties");
        props.insert(
            "spec".into(),
            serde_json::from_value(serde_json::json!({
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            }))
            .expect("schema"),
        );
    }
    crds.replace("virtualmachines.ironvisor.io", &PostParams::default(), &crd)
        .await
        .expect("CRD replaced");
}

fn raw_api(c: &Cluster, ns: &str) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        c.client.clone(),
        ns,
        &kube::api::ApiResource::erase::<VirtualMachine>(&()),
    )
}

/// The VM as raw JSON (the typed Api cannot read a malformed one).
async fn raw_vm(c: &Cluster, ns: &str, name: &str) -> Option<serde_json::Value> {
    raw_api(c, ns)
        .get_opt(name)
        .await
        .expect("get")
        .map(|o| serde_json::to_value(o).expect("json"))
}

fn running(v: &VirtualMachine) -> bool {
    v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
}

#[tokio::test]
async fn a_malformed_vm_is_reported_and_does_not_stop_the_others() {
    let node = "node-malformed";
    let c = Cluster::start(node, URI, |_| {}).await;
    c.place(NS, "victim", node, spec()).await;
    let victim_uid = c
        .wait_vm(NS, "victim", "victim Running", running)
        .await
        .metadata
        .uid
        .expect("uid");

    loosen_the_vm_schema(&c.client).await;
    raw_api(&c, NS)
        .patch(
            "victim",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"cpu": {"cores": "two"}}})),
        )
        .await
        .expect("the looser schema accepts the bad value");
    // A VM placed after the bad one is still picked up: the watch is intact.
    c.place(NS, "after", node, spec()).await;
    c.wait_vm(NS, "after", "the VM placed after it Running", running)
        .await;

    let victim = wait_for("the malformed VM to be reported", || async {
        let v = raw_vm(&c, NS, "victim").await?;
        let status: ironvisor_crds::vm::VirtualMachineStatus =
            serde_json::from_value(v["status"].clone()).ok()?;
        let ready = find_condition(&status.conditions, condition_type::READY)?;
        (ready.reason == "InvalidObject").then_some((status.clone(), ready.clone()))
    })
    .await;
    let (status, ready) = victim;
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("spec.cpu.cores"),
        "the message names the field: {}",
        ready.message
    );
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        domain_active(NS, "victim"),
        Some(true),
        "the domain of a VM the agent cannot read is left alone"
    );
    let events = Api::<Event>::namespaced(c.client.clone(), NS);
    wait_for("a Warning event naming the field", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("spec.cpu.cores"))
            })
            .then_some(())
    })
    .await;

    raw_api(&c, NS)
        .delete("victim", &DeleteParams::default())
        .await
        .expect("delete accepted");
    wait_for("the malformed VM to be deleted", || async {
        raw_vm(&c, NS, "victim").await.is_none().then_some(())
    })
    .await;
    assert_eq!(domain_active(NS, "victim"), None, "its domain is removed");
    let dir = c.vm_dir(&victim_uid);
    wait_for("its directory to be removed: nothing holds it", || async {
        (!dir.exists()).then_some(())
    })
    .await;
    assert_eq!(domain_active(NS, "after"), Some(true));
    c.stop().await;
}

/// Make the VM `name` in `ns` malformed (the CRD's schema loosened first) and wait until the
/// agent reports it.
async fn make_malformed(c: &Cluster, ns: &str, name: &str) {
    loosen_the_vm_schema(&c.client).await;
    raw_api(c, ns)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"cpu": {"cores": "two"}}})),
        )
        .await
        .expect("the looser schema accepts the bad value");
    wait_for("the malformed VM to be reported", || async {
        let v = raw_vm(c, ns, name).await?;
        let status: ironvisor_crds::vm::VirtualMachineStatus =
            serde_json::from_value(v["status"].clone()).ok()?;
        let ready = find_condition(&status.conditions, condition_type::READY)?;
        (ready.reason == "InvalidObject").then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_malformed_vm_keeps_the_layers_of_its_retained_snapshot() {
    let (node, ns) = ("node-malformed-kept", "it-malformed-kept");
    // A short resync: the leftover sweep removes the directory once nothing holds it.
    let c = Cluster::start(node, URI, |cfg| {
        cfg.resync_interval = std::time::Duration::from_secs(2)
    })
    .await;
    let mut with_disk = spec();
    with_disk["disks"] =
        serde_json::json!([{"name": "data", "size": "16Mi", "source": {"blank": {}}}]);
    c.place(ns, "kept", node, with_disk).await;
    let vm = c.wait_vm(ns, "kept", "kept Running", running).await;
    let uid = vm.metadata.uid.clone().expect("uid");
    let layer = c.vm_dir(&uid).join("disk-data.qcow2");
    assert!(layer.exists(), "{} made", layer.display());
    common::holders::snapshot_taken(
        &c.client,
        ns,
        "keep",
        "Retain",
        ("kept", &uid),
        node,
        "data",
    )
    .await;

    make_malformed(&c, ns, "kept").await;
    raw_api(&c, ns)
        .delete("kept", &DeleteParams::default())
        .await
        .expect("delete accepted");
    wait_for("the malformed VM to be deleted", || async {
        raw_vm(&c, ns, "kept").await.is_none().then_some(())
    })
    .await;
    assert_eq!(domain_active(ns, "kept"), None, "its domain is removed");
    let kept = wait_for("a DisksKept event naming the snapshot", || async {
        c.events(ns, "kept", "DisksKept").await.into_iter().next()
    })
    .await;
    let note = kept.note.unwrap_or_default();
    assert!(note.contains("snapshots keep"), "{note}");
    assert!(
        layer.exists(),
        "the retained snapshot's layer {} stays",
        layer.display()
    );
    let check = std::process::Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(&layer)
        .output()
        .expect("qemu-img runs");
    assert!(
        check.status.success(),
        "the kept layer is intact: {check:?}"
    );

    // The retained snapshot deleted, the leftover sweep lets the directory go.
    Api::<ironvisor_crds::snapshot::VirtualMachineSnapshot>::namespaced(c.client.clone(), ns)
        .delete("keep", &DeleteParams::default())
        .await
        .expect("snapshot deleted");
    let dir = c.vm_dir(&uid);
    wait_for("the deleted VM's directory to be swept", || async {
        (!dir.exists()).then_some(())
    })
    .await;
    c.stop().await;
}
