//! A real guest under QEMU (TCG) through `qemu:///system`: the tiny guest from
//! hack/build-guest.sh boots by direct kernel boot, mounts its CIDATA seed and prints the
//! user-data it found on the serial console, which the agent logs to the VM's directory.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does).

mod common;

use common::*;
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_agent::hypervisor::Hypervisor;
use ironvisor_agent::lifecycle::VmState;
use ironvisor_agent::reconcile::engine::CloudInitData;
use ironvisor_crds::vm::Phase;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";

#[tokio::test]
async fn a_tiny_guest_boots_reads_its_seed_and_powers_off() {
    let guest = guest_dir();
    // QEMU runs as an unprivileged user: the directories must be traversable.
    let tmp = tempfile::Builder::new()
        .prefix("ironvisor-boot-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state_dir = tmp.path().join("state");
    let (libvirt, engine) = engine(URI, &state_dir, &guest);
    let uid = format!("boot-{}", std::process::id());
    let ns = "boot";
    let name = format!("tiny-{}", std::process::id());
    let marker = format!("ironvisor-e2e-{}", std::process::id());
    let user_data = format!("#cloud-config\nmarker: {marker}\n");
    let spec = serde_json::json!({
        "runStrategy": "Once",
        "memory": {"size": "256Mi"},
        "kernelBoot": {
            "kernel": {"hostPath": {"path": guest.join("vmlinuz").to_str().unwrap()}},
            "initrd": {"hostPath": {"path": guest.join("initrd.gz").to_str().unwrap()}},
            "cmdline": "console=ttyS0 quiet"
        },
        "networks": [{"name": "default", "user": {"portForwards": [{"hostPort": 32022, "guestPort": 22}]}}],
        "cloudInit": {"userData": user_data}
    });
    let v = vm(ns, &name, &uid, spec);
    let ci = CloudInitData {
        user_data: Some(user_data.clone()),
        network_data: None,
        pending: None,
    };
    let o = engine.converge(&v, &ci, now()).await.unwrap();
    assert_eq!(
        o.status.phase,
        Some(Phase::Running),
        "{:?}",
        o.status.conditions
    );
    std::fs::set_permissions(
        state_dir.join("vms"),
        std::fs::Permissions::from_mode(0o755),
    )
    .ok();

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
        text.contains("IRONVISOR-SEED-MOUNTED"),
        "the seed was not mounted:\n{text}"
    );
    assert!(
        text.contains(&format!("marker: {marker}")),
        "the user-data was not printed:\n{text}"
    );
    assert!(
        text.contains(&format!("\"instance-id\":\"{uid}\"")),
        "meta-data lacks the uid:\n{text}"
    );

    // Powered off on its own: Once leaves it stopped.
    let domain = domain_name(ns, &name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && libvirt
            .observe(&domain)
            .await
            .unwrap()
            .is_some_and(|o| o.state.is_up())
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = with_status(v, &o);
    let o2 = engine.converge(&v, &ci, now()).await.unwrap();
    assert_eq!(o2.status.phase, Some(Phase::Stopped));
    assert!(matches!(
        libvirt.observe(&domain).await.unwrap().map(|o| o.state),
        Some(VmState::Stopped(_))
    ));

    engine.remove(&v).await.unwrap();
    assert!(libvirt.observe(&domain).await.unwrap().is_none());
    assert!(!state_dir.join("vms").join(&uid).exists());
    libvirt.close();
}
