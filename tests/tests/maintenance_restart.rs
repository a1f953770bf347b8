//! `drainStrategy: Restart` for real: two private hosts (libvirtd in their own network
//! namespaces, each with its agent), a tiny counter guest with a 64 MiB data disk on the
//! first. Data is written into the disk through the running QEMU (`qemu-io` on its monitor),
//! then the host is drained: the guest is shut down, moved with its disk by the migration
//! path (held paused, never run, during the copy) and boots afresh on the other host — a
//! new boot (`startedAt` changed, the counter starts again) with the data on its disk.

use std::process::Command;
use std::time::Duration;

use ironvisor_tests::migration::Cluster;
use ironvisor_tests::system::{uid, wait_for};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(300);
const DRAIN: Duration = Duration::from_secs(600);
/// Where the test writes into the disk, and how much: clear of the start, which nothing
/// writes either.
const OFFSET: usize = 1 << 20;
const LEN: usize = 64 << 10;

fn virsh(uri: &str, args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", uri])
        .args(args)
        .output()
        .expect("virsh");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_hypervisor(c: &Cluster, host: &str, patch: &str) {
    c.sys
        .kubectl_ok(&["patch", "hypervisor", host, "--type", "merge", "-p", patch]);
}

/// The device alias libvirt gave the disk `vda` in `xml`.
fn disk_alias(xml: &str) -> String {
    let at = xml.find("<target dev='vda'").expect("a vda disk");
    let rest = &xml[at..];
    let a = rest.find("<alias name='").expect("an alias") + "<alias name='".len();
    rest[a..a + rest[a..].find('\'').expect("quoted")].to_owned()
}

/// The bytes of `image` (qcow2, shared read while QEMU holds it) at the test's range.
fn written_range(image: &std::path::Path) -> Vec<u8> {
    let raw = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(image)
        .arg(raw.path())
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = std::fs::read(raw.path()).expect("raw image");
    all[OFFSET..OFFSET + LEN].to_vec()
}

fn node_of(vm: &Value) -> String {
    vm["status"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_drain_restarts_a_vm_with_drain_strategy_restart_on_another_host_with_its_disk() {
    let c = Cluster::start(
        "drr",
        2,
        "{virtualMachines: 1, vcpus: 1, memory: 128Mi, storage: 64Mi}",
    );
    let (h1, h2) = (c.hosts[0].agent.node.clone(), c.hosts[1].agent.node.clone());
    set_hypervisor(&c, &h2, r#"{"spec":{"unschedulable":true}}"#);
    let g = c.guest.display();
    c.sys.apply(&format!(
        r#"apiVersion: ironvisor.io/v1alpha1
kind: VirtualMachine
metadata: {{name: batch, namespace: {ns}}}
spec:
  runStrategy: Always
  drainStrategy: Restart
  cpu: {{cores: 1}}
  memory: {{size: 128Mi}}
  terminationGracePeriodSeconds: 2
  kernelBoot:
    kernel: {{hostPath: {{path: {g}/vmlinuz}}}}
    initrd: {{hostPath: {{path: {g}/initrd.gz}}}}
    cmdline: console=ttyS0 panic=-1 quiet ironvisor.counter
  disks:
    - name: data
      bus: virtio
      size: 64Mi
      source: {{blank: {{}}}}
"#,
        ns = c.ns
    ));
    let vm = c.sys.wait_phase(&c.ns, "batch", "Running", BOOT);
    assert_eq!(node_of(&vm), h1);
    let vm_uid = uid(&vm);
    let first_start = vm["status"]["startedAt"]
        .as_str()
        .expect("started")
        .to_owned();
    let log1 = c.hosts[0].agent.vm_dir(&vm_uid).join("console.log");
    wait_for("the counter on the first host", BOOT, || {
        let text = std::fs::read_to_string(&log1).unwrap_or_default();
        if text.contains("IRONVISOR-TICK 20") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });

    // Data into the disk through the running QEMU, as a guest's write would land.
    let uri1 = c.hosts[0].libvirtd.uri();
    let names = virsh(uri1, &["list", "--name"]);
    let dom = names
        .lines()
        .find(|n| n.contains("-batch-"))
        .expect("the domain")
        .to_owned();
    let alias = disk_alias(&virsh(uri1, &["dumpxml", &dom]));
    let cmd = format!(
        "qemu-io -d /machine/peripheral/{alias}/virtio-backend \"write -P 0x5a {OFFSET} {LEN}\""
    );
    let said = virsh(uri1, &["qemu-monitor-command", "--hmp", &dom, &cmd]);
    assert!(said.trim().is_empty(), "qemu-io: {said}");
    // Flushed, so the image file (read beside the running QEMU) holds it with its metadata.
    let flush = format!("qemu-io -d /machine/peripheral/{alias}/virtio-backend \"flush\"");
    let said = virsh(uri1, &["qemu-monitor-command", "--hmp", &dom, &flush]);
    assert!(said.trim().is_empty(), "qemu-io flush: {said}");
    let disk1 = c.hosts[0].agent.vm_dir(&vm_uid).join("disk-data.qcow2");
    assert_eq!(
        written_range(&disk1),
        vec![0x5a; LEN],
        "the data is on the disk"
    );

    set_hypervisor(&c, &h2, r#"{"spec":{"unschedulable":false}}"#);
    set_hypervisor(&c, &h1, r#"{"spec":{"maintenance":true}}"#);
    let vm = wait_for("the VM running on the other host", DRAIN, || {
        let vm = c.sys.vm(&c.ns, "batch");
        if node_of(&vm) == h2 && vm["status"]["phase"] == "Running" {
            Ok(vm)
        } else {
            Err(vm["status"].to_string())
        }
    });
    let second_start = vm["status"]["startedAt"]
        .as_str()
        .expect("started")
        .to_owned();
    assert_ne!(first_start, second_start, "a new boot: {}", vm["status"]);
    let migrations = c
        .sys
        .kubectl_ok(&["get", "vmim", "-n", &c.ns, "-o", "json"]);
    let migrations: Value = serde_json::from_str(&migrations).expect("json");
    let m = &migrations["items"][0];
    assert_eq!(m["spec"]["mode"], "Restart", "{m}");
    assert_eq!(m["status"]["phase"], "Completed", "{m}");
    assert_eq!(m["status"]["target"]["coldBootReady"], true, "{m}");

    // A fresh boot on h2: the banner, and the counter from its start.
    let log2 = c.hosts[1].agent.vm_dir(&vm_uid).join("console.log");
    wait_for("the counter on the second host", BOOT, || {
        let text = std::fs::read_to_string(&log2).unwrap_or_default();
        let from_one = text.lines().any(|l| l.trim() == "IRONVISOR-TICK 1");
        if text.contains("IRONVISOR-GUEST-BOOTED") && from_one {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    let disk2 = c.hosts[1].agent.vm_dir(&vm_uid).join("disk-data.qcow2");
    assert_eq!(
        written_range(&disk2),
        vec![0x5a; LEN],
        "the disk came along, never recreated empty"
    );
    wait_for("the drain to complete", DRAIN, || {
        let hv = c.sys.get("hypervisor", None, &h1).expect("h1");
        match hv["status"]["maintenance"]["phase"].as_str() {
            Some("Ready") => Ok(()),
            _ => Err(hv["status"]["maintenance"].to_string()),
        }
    });
    let events = c.sys.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &c.ns,
        "--field-selector",
        "involvedObject.name=batch",
    ]);
    assert!(events.contains("restarted on"), "{events}");
}
