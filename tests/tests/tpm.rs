//! A VM with a virtual TPM on two hosts for real: each a private libvirtd (own
//! /var/lib/libvirt, so its own swtpm state directory) on a test switch with its own agent,
//! the devcluster and the operator as processes. The agents report the TPM emulator, the VM
//! runs with swtpm, a live migration carries the TPM (the target does not make a new one),
//! and deleting the VM removes the state.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::migration::{Cluster, Host, domid};
use ironvisor_tests::system::{tiny_vm_manifest, wait_for};

const BOOT: Duration = Duration::from_secs(240);
const MIGRATE: Duration = Duration::from_secs(240);
/// Where libvirt has swtpm_setup log: not inside the private hosts' directories, so one
/// file per domain name for both hosts.
const SWTPM_LOGS: &str = "/var/log/swtpm/libvirt/qemu";

fn virsh(uri: &str, args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("virsh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The agent's domain of `name` on `host`, if any.
fn domain_on(host: &Host, name: &str) -> Option<String> {
    let wanted = format!("-{name}-");
    virsh(host.libvirtd.uri(), &["list", "--all", "--name"])
        .lines()
        .find(|n| n.starts_with("iv-") && n.contains(&wanted))
        .map(str::to_owned)
}

/// The host's TPM state directory of a domain UUID.
fn tpm_state(host: &Host, uuid: &str) -> PathBuf {
    host.libvirtd.dir().join("lib/swtpm").join(uuid)
}

fn manufactured(domain: &str) -> usize {
    std::fs::read_to_string(PathBuf::from(SWTPM_LOGS).join(format!("{domain}-swtpm.log")))
        .unwrap_or_default()
        .matches("Starting vTPM manufacturing")
        .count()
}

#[test]
fn a_vm_with_a_tpm_migrates_with_its_tpm_state_which_goes_when_the_vm_is_deleted() {
    let c = Cluster::start(
        "tpm",
        2,
        "{virtualMachines: 1, vcpus: 1, memory: 128Mi, storage: 64Mi}",
    );
    for h in &c.hosts {
        wait_for("the host to report a TPM emulator", BOOT, || {
            let hv = c
                .sys
                .get("hv", None, &h.agent.node)
                .ok_or("no Hypervisor")?;
            match hv["status"]["tpm"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(format!("status.tpm is {}", hv["status"]["tpm"])),
            }
        });
    }
    c.sys
        .apply(&tiny_vm_manifest(&c.ns, "sealed", &c.guest, "  tpm: {}\n"));
    let vm = c.sys.wait_phase(&c.ns, "sealed", "Running", BOOT);
    let node = vm["status"]["nodeName"]
        .as_str()
        .expect("placed")
        .to_owned();
    let src = c.hosts.iter().position(|h| h.agent.node == node).unwrap();
    let (a, b) = (&c.hosts[src], &c.hosts[1 - src]);
    let dom = domain_on(a, "sealed").expect("the domain on its host");
    let uuid = virsh(a.libvirtd.uri(), &["domuuid", &dom]);
    assert!(
        virsh(a.libvirtd.uri(), &["dumpxml", &dom]).contains("<tpm model='tpm-crb'>"),
        "the domain has the TPM"
    );
    assert!(
        tpm_state(a, &uuid).join("tpm2").exists(),
        "swtpm state on the source"
    );
    assert!(
        domid(a.libvirtd.uri(), &dom).is_some(),
        "running on the source"
    );
    assert_eq!(manufactured(&dom), 1, "one TPM made at first start");

    c.apply_migration("carry", "sealed", None, "");
    let m = c.wait_migration("carry", "Completed", MIGRATE);
    assert_eq!(
        m["status"]["targetNode"],
        b.agent.node.as_str(),
        "{}",
        m["status"]
    );
    assert!(
        domid(b.libvirtd.uri(), &dom).is_some(),
        "the guest runs on the target"
    );
    assert_eq!(
        virsh(b.libvirtd.uri(), &["domuuid", &dom]),
        uuid,
        "the same domain"
    );
    assert!(
        tpm_state(b, &uuid).join("tpm2/tpm2-00.permall").exists(),
        "the TPM state is on the target"
    );
    assert_eq!(
        manufactured(&dom),
        1,
        "the target received the TPM instead of making a new one"
    );
    wait_for("the source's TPM state to go", MIGRATE, || {
        if tpm_state(a, &uuid).exists() {
            Err("still there".to_owned())
        } else {
            Ok(())
        }
    });

    c.sys
        .kubectl_ok(&["delete", "vm", "sealed", "-n", &c.ns, "--wait=true"]);
    wait_for("the domain and its TPM state to go", BOOT, || {
        if domain_on(b, "sealed").is_some() || tpm_state(b, &uuid).exists() {
            Err("still there".to_owned())
        } else {
            Ok(())
        }
    });
    std::fs::remove_file(PathBuf::from(SWTPM_LOGS).join(format!("{dom}-swtpm.log"))).ok();
}
