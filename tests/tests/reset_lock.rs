//! A reset and the per-VM operation lock, driven with kubectl as a user does: a restart asked
//! for (`ironvisor.io/restartedAt`) and not yet acted on holds the VM, so a snapshot applied
//! meanwhile waits (`VMBusy`, naming the reset and the way out) instead of running under a
//! reset about to happen; once the agent has restarted the guest the snapshot is taken. The
//! agent is stopped for the first part, so the request stays pending for as long as the test
//! needs (a running agent acts on it within a reconcile).

use std::time::Duration;

use ironvisor_tests::system::{
    System, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest, wait_for,
};

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(90);

#[test]
fn a_snapshot_waits_for_a_pending_reset_and_is_taken_once_the_guest_restarted() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let pid = std::process::id();
    let mut agent = sys.agent(&format!("reset-{pid}"), "qemu:///system", &images);
    let ns = format!("e2ereset{pid}");
    sys.tenant(&ns, &ns, "{storage: 128Mi}");
    let disks = "  disks:\n  - name: data\n    size: 64Mi\n    source: {blank: {}}\n";
    sys.apply(&tiny_vm_manifest(&ns, "web", &images, disks));
    let vm = sys.wait_phase(&ns, "web", "Running", BOOT);
    let first_start = vm["status"]["startedAt"].clone();

    agent.proc.kill();
    let asked = "2026-11-30T12:00:00Z";
    sys.kubectl_ok(&[
        "annotate",
        "vm",
        "web",
        "-n",
        &ns,
        &format!("ironvisor.io/restartedAt={asked}"),
    ]);
    sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSnapshot\n\
         metadata: {{name: during-reset, namespace: {ns}}}\nspec: {{vmName: web}}\n"
    ));
    let waiting = wait_for("the snapshot to wait for the reset", QUICK, || {
        let s = sys
            .get("virtualmachinesnapshot", Some(&ns), "during-reset")
            .ok_or("not found")?;
        let ready = &s["status"]["conditions"][0];
        match ready["message"].as_str() {
            Some(m) if ready["reason"] == "VMBusy" => Ok(m.to_owned()),
            _ => Err(s["status"].to_string()),
        }
    });
    assert!(
        waiting.contains(&format!("Reset web holds it since {asked}")),
        "{waiting}"
    );
    assert!(
        waiting.contains("once the VM's agent has restarted the guest"),
        "{waiting}"
    );
    assert!(
        sys.vm(&ns, "web")["status"]["operation"].is_null(),
        "the waiting snapshot took no lock"
    );

    sys.restart_agent(&mut agent);
    wait_for("the reset to be acted on", BOOT, || {
        let vm = sys.vm(&ns, "web");
        let s = &vm["status"];
        if s["lastRestartRequest"] == asked && s["startedAt"] != first_start {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    wait_for("the snapshot taken after the reset", QUICK, || {
        let s = sys
            .get("virtualmachinesnapshot", Some(&ns), "during-reset")
            .ok_or("not found")?;
        if s["status"]["phase"] == "Succeeded" {
            Ok(())
        } else {
            Err(s["status"].to_string())
        }
    });
}
