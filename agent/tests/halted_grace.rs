//! The Halted grace period survives an agent restart: the ACPI shutdown time is kept in the
//! VM's directory, so a restarted agent destroys the guest when the original deadline
//! passes instead of sending a new shutdown and waiting a whole grace period again.
//!
//! On `qemu:///system` (libvirtd as root, hack/start-libvirtd.sh): a diskless guest has no OS
//! to honour the ACPI request, so it runs until the agent destroys it. The test driver cannot
//! be used: it powers a guest off at once on shutdown.

mod common;

use common::*;
use ironvisor_agent::hypervisor::Hypervisor;
use ironvisor_agent::lifecycle::VmState;
use ironvisor_crds::vm::{Phase, RunStrategy};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";

/// Removes the test's domain whatever happens.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(conn) = virt::connect::Connect::open(Some(URI))
            && let Ok(d) = conn.lookup_domain_by_name(&self.0)
        {
            let _ = d.destroy();
            let _ = d.undefine();
        }
    }
}

#[tokio::test]
async fn a_restarted_agent_keeps_the_halted_grace_deadline() {
    if let Err(e) = virt::connect::Connect::open(Some(URI)) {
        panic!(
            "this test needs libvirtd on {URI} as root (run hack/start-libvirtd.sh): {}",
            e.message()
        );
    }
    // QEMU runs unprivileged: the state directory must be traversable.
    let tmp = tempfile::Builder::new()
        .prefix("ironvisor-grace-")
        .tempdir_in("/var/tmp")
        .expect("temp dir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let host = Host::in_dir(URI, tmp);
    let ns = format!("grace-{}", std::process::id());
    let vm0 = vm(
        &ns,
        "web",
        &format!("uid-grace-{}", std::process::id()),
        serde_json::json!({"memory": {"size": "64Mi"}, "terminationGracePeriodSeconds": 6}),
    );
    let (vm1, o) = step(&host.engine, vm0).await;
    let _cleanup = Cleanup(o.domain.clone());
    let state = |h: &Host| {
        let lv = h.libvirt.clone();
        let name = o.domain.clone();
        async move { lv.observe(&name).await.expect("observe").map(|o| o.state) }
    };
    assert_eq!(state(&host).await, Some(VmState::Running));

    let mut halted = vm1.clone();
    halted.spec.run_strategy = RunStrategy::Halted;
    let (halted, _) = step(&host.engine, halted).await;
    let sent = Instant::now();
    let marker = host
        .vm_dir(&format!("uid-grace-{}", std::process::id()))
        .join("shutdown-requested");
    let recorded = std::fs::read_to_string(&marker).expect("the shutdown time is recorded");
    assert_eq!(
        state(&host).await,
        Some(VmState::Running),
        "no guest OS: the ACPI request is ignored"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let host = host.restart();
    let (halted, o2) = step(&host.engine, halted).await;
    assert_eq!(state(&host).await, Some(VmState::Running), "still in grace");
    assert!(o2.requeue.is_some(), "a requeue while waiting");
    assert_eq!(
        std::fs::read_to_string(&marker).expect("still recorded"),
        recorded,
        "the wait continues from the first request, not a new one"
    );

    tokio::time::sleep(
        Duration::from_secs(6).saturating_sub(sent.elapsed()) + Duration::from_millis(200),
    )
    .await;
    let (halted, _) = step(&host.engine, halted).await;
    assert!(
        matches!(state(&host).await, Some(VmState::Stopped(_))),
        "destroyed once the original deadline passed (a new shutdown would wait until 9 s): {:?}",
        state(&host).await
    );
    assert_eq!(
        halted.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Stopped)
    );
    assert!(
        !host
            .vm_dir(halted.metadata.uid.as_deref().expect("uid"))
            .join("shutdown-requested")
            .exists(),
        "the record goes with the wait"
    );
    host.engine.remove(&halted).await.expect("removed");
}
