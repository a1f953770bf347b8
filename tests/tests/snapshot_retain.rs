//! Snapshots go with their VM unless retained: `retainPolicy: Delete` (the default) gives a
//! snapshot an ownerReference to its VM (by uid) and garbage collection deletes it with the
//! VM; `Retain` keeps the snapshot, its layer files on the host, and its storage in the
//! tenant's quota. A policy changed later moves the ownerReference to match. The control plane, the operator and an agent on `qemu:///system` run as
//! processes (the tiny guest from `hack/build-guest.sh`, TCG).

use std::time::Duration;

use ironvisor_tests::system::{
    System, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest, uid, wait_for,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(90);

fn snapshot(ns: &str, name: &str, vm: &str, policy: &str) -> String {
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSnapshot\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{vmName: {vm}, retainPolicy: {policy}}}\n"
    )
}

fn wait_snapshot(sys: &System, ns: &str, name: &str, phase: &str, within: Duration) -> Value {
    wait_for(&format!("snapshot {name} {phase}"), within, || {
        let s = sys
            .get("virtualmachinesnapshot", Some(ns), name)
            .ok_or("not found")?;
        if s["status"]["phase"] == phase {
            Ok(s)
        } else {
            Err(s["status"].to_string())
        }
    })
}

/// Wait until snapshot `name`'s ownerReferences are to the VM with uid `owner` (`None`: none).
fn wait_owner(sys: &System, ns: &str, name: &str, owner: Option<&str>) -> Value {
    wait_for(&format!("{name} owned by {owner:?}"), QUICK, || {
        let s = sys
            .get("virtualmachinesnapshot", Some(ns), name)
            .ok_or("not found")?;
        let refs = &s["metadata"]["ownerReferences"];
        let uids: Vec<&str> = refs
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["uid"].as_str()).collect())
            .unwrap_or_default();
        if uids == owner.into_iter().collect::<Vec<_>>() {
            Ok(s)
        } else {
            Err(refs.to_string())
        }
    })
}

fn data_disk(size: &str) -> String {
    format!("  disks:\n  - name: data\n    size: {size}\n    source: {{blank: {{}}}}\n")
}

/// A VM with a retained and a default snapshot (each switched from the other policy after it
/// was taken) is deleted: the default one goes with it, the retained one stays with its
/// layer file on the host and still counts in the quota.
#[test]
fn deleting_a_vm_deletes_its_snapshots_but_the_retained_one() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let uri = "qemu:///system";
    let agent = sys.agent(&format!("keep-{}", std::process::id()), uri, &images);
    let ns = format!("e2ekeep{}", std::process::id());
    // web (32Mi) and its two snapshots (32Mi each) fit in 144Mi.
    sys.tenant(&ns, &ns, "{storage: 144Mi}");
    sys.apply(&tiny_vm_manifest(&ns, "web", &images, &data_disk("32Mi")));
    let vm = sys.wait_phase(&ns, "web", "Running", BOOT);
    let vm_uid = uid(&vm);
    let vm_dir = agent.vm_dir(&vm_uid);

    // Each snapshot is taken with the other policy and switched afterwards: the operator
    // moves the ownerReference to match.
    sys.apply(&snapshot(&ns, "keep", "web", "Delete"));
    let keep = wait_snapshot(&sys, &ns, "keep", "Succeeded", QUICK);
    assert_eq!(keep["status"]["disks"][0]["layer"], "base", "{keep}");
    sys.apply(&snapshot(&ns, "goes", "web", "Retain"));
    wait_snapshot(&sys, &ns, "goes", "Succeeded", BOOT);
    wait_owner(&sys, &ns, "keep", Some(&vm_uid));
    wait_owner(&sys, &ns, "goes", None);

    sys.apply(&snapshot(&ns, "keep", "web", "Retain"));
    sys.apply(&snapshot(&ns, "goes", "web", "Delete"));
    // The default one is owned by the VM (its uid), the retained one by nothing.
    let goes = wait_owner(&sys, &ns, "goes", Some(&vm_uid));
    assert_eq!(
        goes["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
    assert_eq!(goes["metadata"]["ownerReferences"][0]["name"], "web");
    wait_owner(&sys, &ns, "keep", None);

    sys.kubectl_ok(&["delete", "vm", "web", "-n", &ns, "--timeout=120s"]);
    wait_for("goes deleted with its VM", QUICK, || {
        match sys.get("virtualmachinesnapshot", Some(&ns), "goes") {
            None => Ok(()),
            Some(s) => Err(s["metadata"].to_string()),
        }
    });
    let keep = sys
        .get("virtualmachinesnapshot", Some(&ns), "keep")
        .expect("the retained snapshot stays");
    assert_eq!(keep["status"]["phase"], "Succeeded", "{keep}");
    // Its layer (the disk's base) stays on the host, readable.
    let base = vm_dir.join("disk-data.qcow2");
    let check = std::process::Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{} is gone or broken: {check:?}",
        base.display()
    );

    // Still counted: web2 (64Mi) fits, but a 64Mi snapshot of it does not (64 + 32 kept +
    // 64 > 144); without the retained 32Mi it would.
    sys.apply(&tiny_vm_manifest(&ns, "web2", &images, &data_disk("64Mi")));
    sys.apply(&snapshot(&ns, "more", "web2", "Delete"));
    let refused = wait_snapshot(&sys, &ns, "more", "Failed", BOOT);
    let ready = &refused["status"]["conditions"][0];
    assert_eq!(ready["reason"], "QuotaExceeded", "{refused}");
    let msg = ready["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("requested: storage=64Mi, used: storage=96Mi, limited: storage=144Mi"),
        "{msg}"
    );

    // Deleting the retained snapshot lets its layers go (the leftover sweep).
    sys.kubectl_ok(&["delete", "vmsnap", "keep", "-n", &ns, "--timeout=90s"]);
    wait_for("the deleted VM's directory removed", BOOT, || {
        if vm_dir.exists() {
            Err(format!("{} still exists", vm_dir.display()))
        } else {
            Ok(())
        }
    });
}
