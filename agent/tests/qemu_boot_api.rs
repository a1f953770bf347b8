//! The whole agent against a devcluster on `qemu:///system`: a VM applied through the API
//! boots the tiny guest from hack/build-guest.sh under QEMU (TCG), and its serial log shows
//! the guest's marker and the user-data it read from its seed.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does). The system libvirt
//! is shared with other tests, so this agent does not collect orphans at startup.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_crds::common::{condition_is_true, condition_type};
use ironvisor_crds::vm::Phase;
use kube::api::DeleteParams;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";

#[tokio::test]
async fn a_vm_applied_through_the_api_boots_and_prints_its_user_data() {
    let guest = common::guest_dir();
    let node = format!("qemu-node-{}", std::process::id());
    let c = Cluster::start(&node, URI, |cfg| {
        cfg.images_dir = guest.clone();
        cfg.collect_orphans = false;
        // QEMU runs unprivileged: the state directory must be traversable.
        let state = tempfile::Builder::new()
            .prefix("ironvisor-api-boot-")
            .tempdir_in("/var/tmp")
            .expect("state dir")
            .keep();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        cfg.state_dir = state;
    })
    .await;
    let state_dir = c.state_dir.clone();
    let ns = "boot-api";
    let name = format!("tiny-{}", std::process::id());
    let marker = format!("ironvisor-api-e2e-{}", std::process::id());
    let spec = serde_json::json!({
        "runStrategy": "Once",
        "memory": {"size": "256Mi"},
        "kernelBoot": {
            "kernel": {"hostPath": {"path": guest.join("vmlinuz").to_str().expect("utf-8")}},
            "initrd": {"hostPath": {"path": guest.join("initrd.gz").to_str().expect("utf-8")}},
            "cmdline": "console=ttyS0 quiet"
        },
        "networks": [{"name": "default", "user": {}}],
        "cloudInit": {"userData": format!("#cloud-config\nmarker: {marker}\n")}
    });
    c.place(ns, &name, &node, spec).await;
    let vm = c
        .wait_vm(ns, &name, "Running", |v| {
            v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
                && condition_is_true(
                    &v.status.as_ref().expect("status").conditions,
                    condition_type::READY,
                )
        })
        .await;
    let uid = vm.metadata.uid.clone().expect("uid");
    let log = state_dir.join("vms").join(&uid).join("console.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("IRONVISOR-GUEST-POWEROFF") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        text.contains("IRONVISOR-GUEST-BOOTED"),
        "no boot marker in the console log:\n{text}"
    );
    assert!(
        text.contains(&format!("marker: {marker}")),
        "the user-data was not printed:\n{text}"
    );
    assert!(
        text.contains(&format!("\"instance-id\":\"{uid}\"")),
        "meta-data lacks the uid:\n{text}"
    );
    // Once: it powers off and stays Stopped.
    c.wait_vm(ns, &name, "Stopped after the guest powered off", |v| {
        v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Stopped)
    })
    .await;

    c.vms(ns)
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete accepted");
    let api = c.vms(ns);
    wait_for("the VM object to go", || {
        let api = api.clone();
        let name = name.clone();
        async move { matches!(api.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;
    let conn = common::admin(URI);
    assert!(
        conn.lookup_domain_by_name(&domain_name(ns, &name)).is_err(),
        "domain undefined"
    );
    assert!(!state_dir.join("vms").join(&uid).exists());
    c.stop().await;
    let _ = std::fs::remove_dir_all(&state_dir);
}
