//! A guest QEMU cannot start shows why, within seconds: the whole agent against a devcluster
//! on `qemu:///system`, with the VM's state directory under a 0700 directory the QEMU user
//! (libvirt-qemu) cannot traverse. The VM reports Ready=False StartFailed with QEMU's own
//! "Permission denied", printableStatus StartFailed, and one Warning Event however often the
//! agent retries; once the directory is opened up, the retry starts the guest and Ready turns
//! True with a Normal Recovered event.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does). The system libvirt
//! is shared with other tests, so this agent does not collect orphans at startup.

mod common;

use common::cluster::{Cluster, wait_for};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_crds::common::{condition_is_true, condition_type, find_condition};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use kube::ResourceExt;
use kube::api::DeleteParams;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

const URI: &str = "qemu:///system";
const NS: &str = "start-failure";

fn chmod(dir: &Path, mode: u32) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn ready(
    vm: &VirtualMachine,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    find_condition(&vm.status.as_ref()?.conditions, condition_type::READY)
}

#[tokio::test]
async fn a_guest_qemu_cannot_open_shows_start_failed_with_qemus_message_until_fixed() {
    let guest = common::guest_dir();
    let node = format!("startfail-node-{}", std::process::id());
    // /var/tmp/…-XXXX (0755) / locked (0700) / state: QEMU cannot reach the VM's seed.
    let outer = tempfile::Builder::new()
        .prefix("ironvisor-start-failure-")
        .tempdir_in("/var/tmp")
        .expect("temp dir");
    chmod(outer.path(), 0o755);
    let locked = outer.path().join("locked");
    std::fs::create_dir(&locked).expect("locked dir");
    chmod(&locked, 0o700);
    let state_dir = locked.join("state");
    let c = Cluster::start(&node, URI, |cfg| {
        cfg.images_dir = guest.clone();
        cfg.collect_orphans = false;
        cfg.state_dir = state_dir.clone();
    })
    .await;
    let name = format!("locked-{}", std::process::id());
    let spec = serde_json::json!({
        "runStrategy": "Always",
        "memory": {"size": "256Mi"},
        "kernelBoot": {
            "kernel": {"hostPath": {"path": guest.join("vmlinuz").to_str().expect("utf-8")}},
            "initrd": {"hostPath": {"path": guest.join("initrd.gz").to_str().expect("utf-8")}},
            "cmdline": "console=ttyS0 quiet"
        },
        "networks": [{"name": "default", "user": {}}],
        "cloudInit": {"userData": "#cloud-config\n"}
    });
    let placed = Instant::now();
    c.place(NS, &name, &node, spec).await;
    let vm = c
        .wait_vm(NS, &name, "Ready=False StartFailed", |v| {
            ready(v).is_some_and(|r| r.status == "False" && r.reason == "StartFailed")
        })
        .await;
    eprintln!("StartFailed shown {:?} after placement", placed.elapsed());
    let status = vm.status.clone().expect("status");
    let message = &ready(&vm).expect("Ready").message;
    assert!(
        message.contains("Permission denied") && message.contains("seed.iso"),
        "QEMU's own words are in the status: {message}"
    );
    assert_eq!(status.printable_status.as_deref(), Some("StartFailed"));
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(status.observed_generation, vm.metadata.generation);

    // Retries (1 s, 2 s, …) add no Event: one Warning, published once. QEMU's log (one
    // "Permission denied" per attempt) counts the attempts.
    let qemu_log =
        PathBuf::from("/var/log/libvirt/qemu").join(format!("{}.log", domain_name(NS, &name)));
    let seed_denied = format!("{}/seed.iso': Permission denied", vm.uid().expect("uid"));
    let attempts = || {
        std::fs::read_to_string(&qemu_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&seed_denied))
            .count()
    };
    wait_for("three failed start attempts", || async {
        (attempts() >= 3).then_some(())
    })
    .await;
    let warnings = c.events(NS, &name, "StartFailed").await;
    assert_eq!(warnings.len(), 1, "one Event: {warnings:#?}");
    let warning = &warnings[0];
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning.series.is_none(),
        "published once, not repeated as a series: {warning:#?}"
    );
    assert!(
        warning
            .note
            .as_deref()
            .is_some_and(|n| n.contains("Permission denied")),
        "{warning:#?}"
    );
    let still = c.vms(NS).get(&name).await.expect("VM");
    assert_eq!(
        ready(&still).map(|r| r.last_transition_time.clone()),
        ready(&vm).map(|r| r.last_transition_time.clone()),
        "the retries did not flip the condition"
    );

    // The administrator fixes the directory; the next retry starts the guest.
    chmod(&locked, 0o755);
    let fixed = Instant::now();
    let running = c
        .wait_vm(NS, &name, "Running and Ready", |v| {
            v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
                && condition_is_true(
                    &v.status.as_ref().expect("status").conditions,
                    condition_type::READY,
                )
        })
        .await;
    eprintln!("Running {:?} after the fix", fixed.elapsed());
    assert_eq!(
        running
            .status
            .as_ref()
            .and_then(|s| s.printable_status.as_deref()),
        Some("Running")
    );
    wait_for("a Normal Recovered event", || async {
        c.events(NS, &name, "Recovered")
            .await
            .iter()
            .any(|e| e.type_.as_deref() == Some("Normal"))
            .then_some(())
    })
    .await;

    c.vms(NS)
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete accepted");
    let api = c.vms(NS);
    wait_for("the VM object to go", || {
        let api = api.clone();
        let name = name.clone();
        async move { matches!(api.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;
    assert!(
        !state_dir
            .join("vms")
            .join(running.uid().expect("uid"))
            .exists(),
        "the VM directory is removed"
    );
    c.stop().await;
}
