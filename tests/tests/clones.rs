//! Clones and templates through `kubectl apply` and `ivctl clone` on real guests: the local
//! control plane, the operator and an agent on `qemu:///system` run as processes (the tiny
//! guest from `hack/build-guest.sh`, TCG). The guests' writes go through QEMU's own block
//! layer (HMP `qemu-io`); the files are checked with `qemu-io`/`qemu-img` and `sha256sum`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::guest_disk::{domain_of, guest_write, macs, reads_pattern, sha256};
use ironvisor_tests::system::{
    System, console, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest, uid, wait_for,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(90);

fn patch(sys: &System, ns: &str, vm: &str, json: &str) {
    sys.kubectl_ok(&["patch", "vm", vm, "-n", ns, "--type=merge", "-p", json]);
}

fn mtime(f: &Path) -> std::time::SystemTime {
    std::fs::metadata(f).unwrap().modified().unwrap()
}

fn scheduled_message(vm: &Value) -> String {
    vm["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Scheduled"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A template's disk is the frozen base of a linked clone: the clone boots with its own MAC
/// and instance-id, reads the template's data and writes only to its overlay; the base file
/// is never written, not even when the template is set back to `template: false` and runs
/// (it moves onto a new layer first); the VM cannot go while the clone exists; a clone over
/// the storage quota is refused with a message that says how clones count.
#[test]
fn a_linked_clone_of_a_template_boots_with_a_new_identity_and_the_base_stays_frozen() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let uri = "qemu:///system";
    let agent = sys.agent(&format!("cln-{}", std::process::id()), uri, &images);
    let ns = format!("e2ecln{}", std::process::id());
    // The template's 64Mi and one clone's 64Mi fit; a second clone does not.
    sys.tenant(&ns, &ns, "{storage: 128Mi}");
    let extra =
        "  networks:\n  - {name: nic0, user: {}}\n  cloudInit: {userData: \"#cloud-config\"}\n";
    let disks = "  disks:\n  - name: data\n    size: 64Mi\n    source: {blank: {}}\n";
    sys.apply(&tiny_vm_manifest(
        &ns,
        "tpl",
        &images,
        &format!("{disks}{extra}"),
    ));
    let tpl = sys.wait_phase(&ns, "tpl", "Running", BOOT);
    let tpl_domain = domain_of(uri, &uid(&tpl));
    let tpl_macs = macs(uri, &tpl_domain);
    assert_eq!(tpl_macs.len(), 1, "{tpl_macs:?}");
    guest_write(uri, &tpl_domain, 0x41);
    // A template never runs: it is halted as it becomes one.
    patch(
        &sys,
        &ns,
        "tpl",
        r#"{"spec":{"runStrategy":"Halted","template":true}}"#,
    );
    sys.wait_phase(&ns, "tpl", "Stopped", BOOT);
    let refused = sys.kubectl(&[
        "patch",
        "vm",
        "tpl",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Always"}}"#,
    ]);
    assert!(
        !refused.status.success(),
        "a template was set to run: {refused:?}"
    );
    let base = agent.vm_dir(&uid(&tpl)).join("disk-data.qcow2");
    let (base_sum, base_mtime) = (sha256(&base), mtime(&base));
    assert!(reads_pattern(&base, 0x41));

    let clone_disks = "  disks:\n  - name: data\n    size: 64Mi\n    source: {vm: {name: tpl}}\n";
    sys.apply(&tiny_vm_manifest(
        &ns,
        "c1",
        &images,
        &format!("{clone_disks}{extra}"),
    ));
    let c1 = sys.wait_phase(&ns, "c1", "Running", BOOT);
    let c1_uid = uid(&c1);
    let c1_domain = domain_of(uri, &c1_uid);
    let c1_macs = macs(uri, &c1_domain);
    assert_eq!(c1_macs.len(), 1, "{c1_macs:?}");
    assert_ne!(c1_macs, tpl_macs, "the clone has a MAC of its own");
    let meta = wait_for("the clone's guest to print its meta-data", BOOT, || {
        let log = console(&agent, &c1_uid);
        log.lines()
            .find(|l| l.contains("IRONVISOR-META-DATA"))
            .map(str::to_owned)
            .ok_or(log)
    });
    assert!(
        meta.contains(&format!("\"instance-id\":\"{c1_uid}\"")),
        "{meta}"
    );
    assert!(!meta.contains(&uid(&tpl)), "{meta}");
    let seed = agent.vm_dir(&c1_uid).join("seed.iso");
    let listing = Command::new("isoinfo")
        .args(["-R", "-f", "-i"])
        .arg(&seed)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("/vendor-data"),
        "the clone's seed resets the machine-id: {listing:?}"
    );
    // The clone reads the template's data through its overlay, and writes only there.
    let overlay = agent.vm_dir(&c1_uid).join("disk-data.qcow2");
    assert!(reads_pattern(&overlay, 0x41));
    guest_write(uri, &c1_domain, 0x42);
    assert!(reads_pattern(&overlay, 0x42));
    assert!(reads_pattern(&base, 0x41));
    assert_eq!(
        (sha256(&base), mtime(&base)),
        (base_sum.clone(), base_mtime)
    );

    // A second clone does not fit the quota, and the refusal says why clones count.
    sys.apply(&tiny_vm_manifest(
        &ns,
        "c2",
        &images,
        &format!("{clone_disks}{extra}"),
    ));
    let c2 = wait_for("c2 refused by quota", QUICK, || {
        let vm = sys.vm(&ns, "c2");
        (vm["status"]["printableStatus"] == "QuotaExceeded")
            .then_some(vm.clone())
            .ok_or(vm["status"].to_string())
    });
    let msg = scheduled_message(&c2);
    assert!(
        msg.contains("clone disks count their declared size"),
        "{msg}"
    );
    sys.kubectl_ok(&["delete", "vm", "c2", "-n", &ns, "--timeout=60s"]);

    // Set back to template: false and started, the template first moves onto a new, empty
    // layer: its guest writes there, and the base its clone reads stays as it was.
    patch(
        &sys,
        &ns,
        "tpl",
        r#"{"spec":{"template":false,"runStrategy":"Always"}}"#,
    );
    sys.wait_phase(&ns, "tpl", "Running", BOOT);
    let active = std::fs::read_to_string(agent.vm_dir(&uid(&tpl)).join("active-layer")).unwrap();
    let top = agent
        .vm_dir(&uid(&tpl))
        .join(format!("disk-data.{}.qcow2", active.trim()));
    assert!(active.starts_with("t-") && top.exists(), "{active:?}");
    // The template's domain keeps its name (`domain_of` would now also match the clone,
    // whose disk's backing file path holds the template's uid).
    guest_write(uri, &tpl_domain, 0x43);
    assert!(reads_pattern(&top, 0x43));
    assert!(reads_pattern(&base, 0x41) && reads_pattern(&overlay, 0x42));
    assert_eq!(
        (sha256(&base), mtime(&base)),
        (base_sum.clone(), base_mtime)
    );
    let events = sys.kubectl_ok(&["get", "events", "-n", &ns, "-o", "json"]);
    assert!(events.contains("LeftCloneBase"), "{events}");

    // The former template cannot go while the clone reads its old layer.
    sys.kubectl_ok(&["delete", "vm", "tpl", "-n", &ns, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(8));
    let kept = sys.vm(&ns, "tpl");
    assert!(kept["metadata"]["deletionTimestamp"].is_string(), "{kept}");
    assert_eq!((sha256(&base), mtime(&base)), (base_sum, base_mtime));
    let events = sys.kubectl_ok(&["get", "events", "-n", &ns, "-o", "json"]);
    assert!(events.contains("BaseInUse"), "{events}");
    // Once the clone is gone, so is the template.
    sys.kubectl_ok(&["delete", "vm", "c1", "-n", &ns, "--timeout=120s"]);
    wait_for("the template gone after its clone", QUICK, || {
        match sys.get("vm", Some(&ns), "tpl") {
            None => Ok(()),
            Some(v) => Err(v["metadata"].to_string()),
        }
    });
    assert!(!base.exists());
}

/// `ivctl clone --full --from-snapshot` copies the snapshot's disk: the copy stands alone
/// (no backing file) and holds exactly the snapshot's data, not what the source wrote
/// after; a linked clone of the same snapshot keeps the snapshot from going until it is
/// deleted itself.
#[test]
fn clones_of_a_snapshot_hold_its_data_and_a_linked_one_keeps_it() {
    require_libvirtd();
    let t0 = std::time::Instant::now();
    let step = |what: &str| eprintln!("[{:>7.1?}] {what}", t0.elapsed());
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let uri = "qemu:///system";
    let agent = sys.agent(&format!("fcl-{}", std::process::id()), uri, &images);
    let ns = format!("e2efcl{}", std::process::id());
    sys.tenant(&ns, &ns, "{storage: 1Gi}");
    let extra = "  cloudInit: {}\n";
    let disks = "  disks:\n  - name: data\n    size: 64Mi\n    source: {blank: {}}\n";
    sys.apply(&tiny_vm_manifest(
        &ns,
        "src",
        &images,
        &format!("{disks}{extra}"),
    ));
    let src = sys.wait_phase(&ns, "src", "Running", BOOT);
    step("source running");
    let src_dir = agent.vm_dir(&uid(&src));
    let src_domain = domain_of(uri, &uid(&src));
    guest_write(uri, &src_domain, 0x41);
    sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSnapshot\n\
         metadata: {{name: gold, namespace: {ns}}}\nspec: {{vmName: src}}\n"
    ));
    let snap = wait_for("snapshot gold taken", QUICK, || {
        let s = sys.get("vmsnap", Some(&ns), "gold").ok_or("not yet")?;
        (s["status"]["phase"] == "Succeeded")
            .then_some(s.clone())
            .ok_or(s["status"].to_string())
    });
    step("snapshot taken");
    let layer = snap["status"]["disks"][0]["layer"]
        .as_str()
        .unwrap()
        .to_owned();
    let layer_file = if layer == "base" {
        src_dir.join("disk-data.qcow2")
    } else {
        src_dir.join(format!("disk-data.{layer}.qcow2"))
    };
    wait_for("the source's lock released", QUICK, || {
        let vm = sys.vm(&ns, "src");
        vm["status"]["operation"]
            .is_null()
            .then_some(())
            .ok_or(String::new())
    });
    step("lock released");
    guest_write(uri, &src_domain, 0x42);

    let out = sys.ivctl(
        &ns,
        &[
            "clone",
            "src",
            "full",
            "--full",
            "--from-snapshot",
            "gold",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    assert!(out.status.success(), "ivctl clone: {out:?}");
    step("full copy running");
    let full = sys.vm(&ns, "full");
    let copy = agent.vm_dir(&uid(&full)).join("disk-data.qcow2");
    let info = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&copy)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(
        info["backing-filename"].is_null(),
        "a full copy stands alone: {info}"
    );
    let cmp = Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&layer_file)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "the copy differs from the snapshot: {cmp:?}"
    );
    assert!(reads_pattern(&copy, 0x41) && !reads_pattern(&copy, 0x42));

    let out = sys.ivctl(
        &ns,
        &[
            "clone",
            "src",
            "linked",
            "--from-snapshot",
            "gold",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    assert!(out.status.success(), "ivctl clone: {out:?}");
    step("linked clone running");
    let linked = sys.vm(&ns, "linked");
    assert!(reads_pattern(
        &agent.vm_dir(&uid(&linked)).join("disk-data.qcow2"),
        0x41
    ));
    let layer_sum = sha256(&layer_file);
    // The snapshot stays while the linked clone reads its layer; then it goes.
    sys.kubectl_ok(&["delete", "vmsnap", "gold", "-n", &ns, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        sys.get("vmsnap", Some(&ns), "gold").is_some(),
        "the snapshot went under its clone"
    );
    assert_eq!(sha256(&layer_file), layer_sum);
    step("snapshot kept under its clone");
    sys.kubectl_ok(&["delete", "vm", "linked", "-n", &ns, "--timeout=120s"]);
    step("linked clone deleted");
    wait_for("the snapshot gone after its clone", QUICK, || {
        match sys.get("vmsnap", Some(&ns), "gold") {
            None => Ok(()),
            Some(s) => Err(s["status"].to_string()),
        }
    });
    step("snapshot gone");
    // The full copy never depended on it.
    assert!(reads_pattern(&copy, 0x41));
}
