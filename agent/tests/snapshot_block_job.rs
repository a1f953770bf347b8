//! A snapshot requested while a block job runs on its VM's disk waits for the job instead of
//! failing, then is taken once the job ends. Real QEMU through `qemu:///system`: the whole
//! agent against a devcluster, a halted-BIOS guest (nothing to boot: it idles while QEMU
//! keeps the disk open) with one data disk. The operator's part (handing the snapshot to the
//! host: phase InProgress, the node, the VM's uid) is written by the test. The long job is
//! an active commit started through the agent's own block-job wrapper: it stays "ready"
//! until it is ended, so the test decides when it ends and no timing is assumed.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does).

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_agent::hypervisor::libvirt::Libvirt;
use ironvisor_agent::snapshot::domain_disks::parse_live_disks;
use ironvisor_crds::common::{condition_type, find_condition};
use ironvisor_crds::snapshot::{
    Consistency, SnapshotPhase, VirtualMachineSnapshot, snapshot_reason,
};
use ironvisor_crds::vm::Phase;
use kube::Api;
use kube::api::DeleteParams;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const URI: &str = "qemu:///system";

/// Destroys and undefines the domain if the test stops half-way (the system libvirtd is
/// shared with other tests).
struct DomainGuard(String);

impl Drop for DomainGuard {
    fn drop(&mut self) {
        if let Ok(d) = common::admin(URI).lookup_domain_by_name(&self.0) {
            let _ = d.destroy();
            let _ = d.undefine();
        }
    }
}

/// HMP `qemu-io` on the disk whose top is `file`: a write by the "guest", through QEMU.
fn guest_write(domain: &str, xml: &str, file: &Path, pattern: u8) {
    let at = xml
        .find(&format!("<source file='{}'", file.display()))
        .expect("the disk in the live XML");
    let rest = &xml[at..];
    let alias = rest
        .split_once("<alias name='")
        .and_then(|(_, a)| a.split_once('\''))
        .map(|(a, _)| a)
        .expect("the disk's alias");
    let cmd = format!(
        "qemu-io -d /machine/peripheral/{alias}/virtio-backend \"write -P {pattern:#x} 0 64k\""
    );
    let out = Command::new("virsh")
        .args(["-c", URI, "qemu-monitor-command", "--hmp", domain, &cmd])
        .output()
        .expect("virsh runs");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.trim().is_empty(), "qemu-io said {said:?}");
}

/// Whether `file` (read through its backing chain, shared with the running QEMU) holds
/// `pattern` in its first 64 KiB.
fn holds(file: &Path, pattern: u8) -> bool {
    Command::new("qemu-io")
        .args(["-r", "-U", "-c", &format!("read -P {pattern:#x} 0 64k")])
        .arg(file)
        .output()
        .expect("qemu-io runs")
        .status
        .success()
}

fn state_dir() -> PathBuf {
    // QEMU runs unprivileged: the state directory must be traversable.
    let state = tempfile::Builder::new()
        .prefix("ironvisor-snapjob-")
        .tempdir_in("/var/tmp")
        .expect("state dir")
        .keep();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    state
}

/// Hand snapshot `name` of VM `vm` to `node`, as the operator does.
async fn request_snapshot(c: &Cluster, ns: &str, name: &str, vm: (&str, &str), node: &str) {
    common::holders::create_with_status(
        &c.client,
        ns,
        kube::api::ApiResource::erase::<VirtualMachineSnapshot>(&()),
        serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"vmName": vm.0, "freeze": "Never"},
        }),
        serde_json::json!({"phase": "InProgress", "nodeName": node, "vmUid": vm.1}),
    )
    .await;
}

async fn wait_snapshot(
    c: &Cluster,
    ns: &str,
    name: &str,
    what: &str,
    f: impl Fn(&VirtualMachineSnapshot) -> bool,
) -> VirtualMachineSnapshot {
    let api = Api::<VirtualMachineSnapshot>::namespaced(c.client.clone(), ns);
    wait_for(what, || async {
        api.get_opt(name).await.ok().flatten().filter(|s| f(s))
    })
    .await
}

fn phase(s: &VirtualMachineSnapshot) -> SnapshotPhase {
    s.status.as_ref().map(|st| st.phase).unwrap_or_default()
}

#[tokio::test]
async fn a_snapshot_waits_for_a_block_job_on_its_disk_and_is_taken_once_it_ends() {
    let node = format!("snapjob-{}", std::process::id());
    let c = Cluster::start(&node, URI, |cfg| {
        cfg.collect_orphans = false;
        cfg.state_dir = state_dir();
    })
    .await;
    let state = c.state_dir.clone();
    let ns = "snapjob";
    let name = format!("busy-{}", std::process::id());
    let domain = domain_name(ns, &name);
    let _guard = DomainGuard(domain.clone());
    let spec = serde_json::json!({
        "memory": {"size": "64Mi"},
        "terminationGracePeriodSeconds": 0,
        "disks": [{"name": "data", "size": "16Mi", "source": {"blank": {}}}],
    });
    c.place(ns, &name, &node, spec).await;
    let vm = c
        .wait_vm(ns, &name, "Running", |v| {
            v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await;
    let uid = vm.metadata.uid.clone().expect("uid");
    let vm_dir = state.join("vms").join(&uid);
    let base = vm_dir.join("disk-data.qcow2");
    let lv = Libvirt::new(URI);
    guest_write(
        &domain,
        &lv.live_xml(&domain).await.expect("xml"),
        &base,
        0x41,
    );

    // A first snapshot puts a layer on top of the base: a chain a commit can run on.
    request_snapshot(&c, ns, "first", (&name, &uid), &node).await;
    let first = wait_snapshot(&c, ns, "first", "first Succeeded", |s| {
        phase(s) == SnapshotPhase::Succeeded
    })
    .await;
    let first_uid = first.metadata.uid.clone().expect("uid");
    let top = vm_dir.join(format!("disk-data.s-{first_uid}.qcow2"));
    let live = parse_live_disks(&lv.live_xml(&domain).await.expect("xml")).expect("disks");
    let disk = live
        .iter()
        .find(|d| d.source.as_deref() == Some(top.as_path()))
        .expect("the data disk writes to the first snapshot's new layer");
    let target = disk.target.clone();

    // The long job: an active commit of the (empty) top layer into the base. It mirrors the
    // guest's writes and stays until it is ended.
    lv.block_commit(&domain, target.clone(), base.display().to_string(), None)
        .await
        .expect("block commit started");
    assert!(
        lv.block_job(&domain, target.clone())
            .await
            .expect("job info")
            .is_some()
    );

    request_snapshot(&c, ns, "second", (&name, &uid), &node).await;
    let waiting = wait_snapshot(&c, ns, "second", "second waiting for the job", |s| {
        s.status
            .as_ref()
            .and_then(|st| find_condition(&st.conditions, condition_type::READY))
            .is_some_and(|r| r.reason == snapshot_reason::WAITING_FOR_BLOCK_JOB)
    })
    .await;
    let st = waiting.status.clone().expect("status");
    assert_eq!(st.phase, SnapshotPhase::InProgress);
    assert!(!st.ready_to_use);
    assert!(st.disks.is_empty(), "nothing taken yet: {st:?}");
    let ready = find_condition(&st.conditions, condition_type::READY).expect("Ready");
    assert!(ready.message.contains(&target), "{}", ready.message);
    let second_uid = waiting.metadata.uid.clone().expect("uid");
    let second_layer = vm_dir.join(format!("disk-data.s-{second_uid}.qcow2"));
    assert!(
        !second_layer.exists(),
        "no layer is left while the snapshot waits"
    );

    // The job ends (cancelled, not pivoted: the guest stays on its layer).
    lv.end_block_job(&domain, target.clone(), false)
        .await
        .expect("job ended");
    let taken = wait_snapshot(&c, ns, "second", "second Succeeded", |s| {
        phase(s) == SnapshotPhase::Succeeded
    })
    .await;
    let st = taken.status.expect("status");
    assert!(st.ready_to_use);
    assert_eq!(st.consistency, Some(Consistency::Crash));
    assert_eq!(st.disks[0].layer, format!("s-{first_uid}"));
    let live = parse_live_disks(&lv.live_xml(&domain).await.expect("xml")).expect("disks");
    let disk = live.iter().find(|d| d.target == target).expect("data disk");
    assert_eq!(disk.source.as_deref(), Some(second_layer.as_path()));
    assert_eq!(disk.backing.first(), Some(&top));

    // The data is intact: both snapshots read A; the guest's new write lands on top only.
    guest_write(
        &domain,
        &lv.live_xml(&domain).await.expect("xml"),
        &second_layer,
        0x42,
    );
    assert!(holds(&base, 0x41), "the first snapshot's layer");
    assert!(holds(&top, 0x41), "the second snapshot's layer");
    assert!(holds(&second_layer, 0x42), "the VM's active layer");
    lv.close();

    c.vms(ns)
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete accepted");
    let api = c.vms(ns);
    wait_for("the VM to go", || async {
        matches!(api.get_opt(&name).await, Ok(None)).then_some(())
    })
    .await;
    c.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}
