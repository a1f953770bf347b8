//! A deleted VM's directory stays while the API names something that reads its layers, asked
//! by the VM's uid: here a backup of it still being written. A snapshot that goes with its VM
//! (`retainPolicy: Delete`) holds nothing. Once the backup ends, the leftover sweep removes
//! the directory. In-process agent and devcluster on `test:///default`.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use kube::Api;
use kube::api::DeleteParams;
use std::time::Duration;

const URI: &str = "test:///default";

fn running(v: &VirtualMachine) -> bool {
    v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
}

#[tokio::test]
async fn a_deleted_vm_keeps_its_disks_while_a_backup_of_it_is_written() {
    let (node, ns) = ("node-held", "it-held");
    // A short resync: the leftover sweep removes the directory once nothing holds it.
    let c = Cluster::start(node, URI, |cfg| {
        cfg.resync_interval = Duration::from_secs(2)
    })
    .await;
    let spec = serde_json::json!({
        "memory": {"size": "64Mi"},
        "terminationGracePeriodSeconds": 0,
        "disks": [{"name": "data", "size": "16Mi", "source": {"blank": {}}}],
    });
    c.place(ns, "web", node, spec).await;
    let vm = c.wait_vm(ns, "web", "web Running", running).await;
    let uid = vm.metadata.uid.clone().expect("uid");
    let layer = c.vm_dir(&uid).join("disk-data.qcow2");
    assert!(layer.exists(), "{} made", layer.display());
    common::holders::snapshot_taken(&c.client, ns, "goes", "Delete", ("web", &uid), node, "data")
        .await;
    // Written by another host's agent in this test, so this one's backup controller leaves
    // it alone; the VM's cleanup asks by the VM's uid whoever writes it.
    common::holders::backup_of(
        &c.client,
        ns,
        "nightly",
        ("web", &uid),
        "elsewhere",
        "InProgress",
    )
    .await;

    Api::<VirtualMachine>::namespaced(c.client.clone(), ns)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete accepted");
    wait_for("the VM to be deleted", || async {
        c.vms(ns).get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    let kept = wait_for("a DisksKept event naming the backup", || async {
        c.events(ns, "web", "DisksKept").await.into_iter().next()
    })
    .await;
    let note = kept.note.unwrap_or_default();
    assert!(note.contains("backups being written nightly"), "{note}");
    assert!(
        !note.contains("goes"),
        "a Delete snapshot holds nothing: {note}"
    );
    assert!(layer.exists(), "the layer the backup reads stays");

    // Two sweeps later it is still there: the backup still runs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(layer.exists(), "the sweep keeps it while the backup runs");

    common::holders::set_backup_phase(&c.client, ns, "nightly", "Succeeded").await;
    let dir = c.vm_dir(&uid);
    wait_for("the deleted VM's directory to be swept", || async {
        (!dir.exists()).then_some(())
    })
    .await;
    c.stop().await;
}
