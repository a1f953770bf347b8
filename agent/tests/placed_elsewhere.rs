//! A VM whose placement moves away from a host keeps its disks there: the old host's agent
//! stops (never deletes) its local copy, a tenant's label edit stops nothing, an agent
//! restarted under another `--node-name` on the same state directory removes nothing, and
//! the leftovers go only once the API confirms the VM is gone.
//!
//! The whole agent in-process against an in-process devcluster on libvirt's `test:///default`
//! driver (its state is shared by the process: one test here). The test plays the operator.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_agent::reconcile::leftovers::STOPPED_LOCAL_COPY;
use ironvisor_crds::common::{condition_is_true, condition_type};
use ironvisor_crds::labels::NODE;
use ironvisor_crds::vm::{Phase, VirtualMachine};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use std::time::Duration;

const URI: &str = "test:///default";
const NS: &str = "it-elsewhere";
/// The sweep runs every resync period; short here so the test is.
const RESYNC: Duration = Duration::from_secs(1);

fn spec() -> serde_json::Value {
    serde_json::json!({
        "memory": {"size": "128Mi"},
        "disks": [{"name": "root", "size": "16Mi", "source": {"blank": {}}}],
        "cloudInit": {"userData": "#cloud-config\n"},
        "terminationGracePeriodSeconds": 0,
    })
}

/// `None` when undefined, else whether the domain is active.
fn domain_active(name: &str) -> Option<bool> {
    common::admin(URI)
        .lookup_domain_by_name(&domain_name(NS, name))
        .ok()
        .map(|d| d.is_active().expect("domain state"))
}

fn running(vm: &VirtualMachine) -> bool {
    vm.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Running) && condition_is_true(&s.conditions, condition_type::READY)
    })
}

async fn wait_domain(name: &str, want: Option<bool>) {
    wait_for(&format!("domain {name} to be {want:?}"), || async move {
        (domain_active(name) == want).then_some(())
    })
    .await;
}

async fn relabel(c: &Cluster, name: &str, node: &str) {
    c.merge(
        NS,
        name,
        serde_json::json!({"metadata": {"labels": {NODE: node}}}),
    )
    .await;
}

/// The VM's agent finalizer removed, as the agent of the node it now runs on would.
/// This agent may have done so already for a VM still labelled for it: a 404 is fine.
async fn release(c: &Cluster, name: &str) {
    let patch = serde_json::json!({"metadata": {"finalizers": null}});
    match c
        .vms(NS)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("removing the finalizer of {name}: {e}"),
    }
}

#[tokio::test]
async fn a_vm_placed_elsewhere_is_stopped_here_and_its_disks_stay_until_it_is_deleted() {
    // The test driver keeps its domains while a connection is open: this one outlives the
    // agents restarted below (a real host's libvirtd outlives its agent too).
    let _host = common::admin(URI);
    let mut c = Cluster::start("node-a", URI, |cfg| cfg.resync_interval = RESYNC).await;
    let mut uids = Vec::new();
    for name in ["moved", "relabelled"] {
        c.place(NS, name, "node-a", spec()).await;
        let vm = c.wait_vm(NS, name, "Running", running).await;
        uids.push(vm.uid().expect("uid"));
    }
    let state_dir = c.state_dir.clone();
    let disk = |uid: &str| state_dir.join("vms").join(uid).join("disk-root.qcow2");
    assert!(uids.iter().all(|u| disk(u).exists()));

    // A tenant moves the label: the VM leaves this agent's watch, but its status still
    // places it here, so the guest runs on through several sweeps.
    relabel(&c, "relabelled", "node-b").await;
    tokio::time::sleep(RESYNC * 3).await;
    assert_eq!(
        domain_active("relabelled"),
        Some(true),
        "a label edit stops nothing"
    );

    // The operator places both on node-b (host-loss restart): a running copy here would be
    // a second, unmetered guest. "moved" still carries this node's label (the operator
    // rewrites it after the status), "relabelled" is seen only by the sweep.
    c.confirm(NS, "moved", "node-b").await;
    c.confirm(NS, "relabelled", "node-b").await;
    wait_domain("moved", Some(false)).await;
    wait_domain("relabelled", Some(false)).await;
    for (name, uid) in ["moved", "relabelled"].iter().zip(&uids) {
        assert!(disk(uid).exists(), "{name}: the disk stays");
        let ev = wait_for("a StoppedLocalCopy Warning", || async {
            c.events(NS, name, STOPPED_LOCAL_COPY)
                .await
                .into_iter()
                .next()
        })
        .await;
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        let note = ev.note.unwrap_or_default();
        assert!(
            note.contains("node-a") && note.contains("node-b"),
            "the note names both nodes: {note}"
        );
    }
    // Stopped, not started again by a later sweep or resync.
    tokio::time::sleep(RESYNC * 2).await;
    assert_eq!(domain_active("moved"), Some(false));

    // The same host's agent restarted under another --node-name on the same state
    // directory: nothing is removed (the VMs exist), nothing it does not own is touched.
    c.restart_agent_as("node-c", URI, |cfg| cfg.resync_interval = RESYNC)
        .await;
    tokio::time::sleep(RESYNC * 3).await;
    for (name, uid) in ["moved", "relabelled"].iter().zip(&uids) {
        assert!(disk(uid).exists(), "{name}: kept under another node name");
        assert_eq!(domain_active(name), Some(false), "{name}: still defined");
    }

    // The VMs are deleted (node-b's agent would drop the finalizer): now the API confirms
    // they are gone, and node-a's agent removes what it held.
    c.restart_agent_as("node-a", URI, |cfg| cfg.resync_interval = RESYNC)
        .await;
    for name in ["moved", "relabelled"] {
        c.vms(NS)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete accepted");
        release(&c, name).await;
    }
    for (name, uid) in ["moved", "relabelled"].iter().zip(&uids) {
        wait_domain(name, None).await;
        wait_for("the VM directory to go", || async {
            (!c.vm_dir(uid).exists()).then_some(())
        })
        .await;
    }
    c.stop().await;
}
