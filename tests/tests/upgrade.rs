//! Upgrading from the first release (0.1.0) to this build, as docs/release.md tells an
//! operator of a cluster to: the new CRDs applied over the old ones with objects stored,
//! which stay readable; then the agent of a host with running VMs restarted as the new build
//! adopts them without restarting any (domain ids, QEMU processes and `startedAt` unchanged).
//!
//! The new build is the agent inside `dist/images/ironvisor-agent.oci.tar` when
//! `hack/release.sh` has made one, run from the image's root filesystem with the DaemonSet's
//! mounts; otherwise (the suite never builds a release) this build's agent binary.

use std::path::Path;
use std::time::Duration;

use ironvisor_tests::image::{chroot_wrapper, unpack};
use ironvisor_tests::repo_root;
use ironvisor_tests::system::{
    System, describe, domain_id, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest,
    wait_for,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(60);

/// The QEMU process of a running domain, from libvirt's pid file.
fn qemu_pid(uri: &str, domain_uuid: &str) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-c", uri, "domname", domain_uuid])
        .output()
        .expect("virsh");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::fs::read_to_string(format!("/run/libvirt/qemu/{name}.pid"))
        .unwrap_or_else(|e| panic!("no pid file for {name}: {e}"))
        .trim()
        .to_owned()
}

/// What must not change across the upgrade: domain id, QEMU pid, `startedAt` per VM.
fn running_state(sys: &System, ns: &str, names: &[&str]) -> Vec<(String, String, Value)> {
    names
        .iter()
        .map(|n| {
            let vm = wait_for(&format!("{n}'s domain in its status"), QUICK, || {
                let vm = sys.vm(ns, n);
                match vm["status"]["domainUUID"].as_str() {
                    Some(_) if vm["status"]["phase"] == "Running" => Ok(vm),
                    _ => Err(describe(&vm)),
                }
            });
            let uuid = vm["status"]["domainUUID"].as_str().unwrap();
            let id = domain_id("qemu:///system", uuid).expect("the domain runs");
            (
                id,
                qemu_pid("qemu:///system", uuid),
                vm["status"]["startedAt"].clone(),
            )
        })
        .collect()
}

/// `after` is `before` with, at most, fields added that `schema` defaults to exactly the
/// value they have.
fn unchanged_but_defaulted(
    before: &Value,
    after: &Value,
    schema: &Value,
    path: &str,
) -> Result<(), String> {
    let (Value::Object(b), Value::Object(a)) = (before, after) else {
        return (before == after)
            .then_some(())
            .ok_or(format!("{path}: {before} became {after}"));
    };
    for (k, old) in b {
        let new = a.get(k).ok_or(format!("{path}.{k} was removed"))?;
        unchanged_but_defaulted(old, new, &schema["properties"][k], &format!("{path}.{k}"))?;
    }
    for (k, new) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
        let default = &schema["properties"][k]["default"];
        if default != new {
            return Err(format!(
                "{path}.{k} appeared as {new}, not the schema's default {default}"
            ));
        }
    }
    Ok(())
}

/// The new build's agent as a command prefix, and what it says it is.
fn new_build(scratch: &Path) -> (Vec<std::ffi::OsString>, Option<String>) {
    let archive = repo_root().join("dist/images/ironvisor-agent.oci.tar");
    if !archive.is_file() {
        eprintln!(
            "upgrade: no {} (hack/release.sh makes it): the new build is this build's agent binary",
            archive.display()
        );
        return (Vec::new(), None);
    }
    eprintln!(
        "upgrade: the new build is the agent in {}",
        archive.display()
    );
    let rootfs = unpack(&archive, scratch);
    let version = std::process::Command::new("chroot")
        .arg(&rootfs)
        .args(["/usr/local/bin/ironvisor-agent", "--version"])
        .output()
        .expect("chroot");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    // The DaemonSet's mounts, at the same paths inside: the test's directories (kubeconfig,
    // state) live under /tmp and the tiny guest under /var/tmp.
    let binds = [
        ("/run/libvirt", "/var/run/libvirt"),
        ("/etc/passwd", "/etc/passwd"),
        ("/etc/group", "/etc/group"),
        ("/proc", "/proc"),
        ("/dev", "/dev"),
        ("/sys", "/sys"),
        ("/tmp", "/tmp"),
        ("/var/tmp", "/var/tmp"),
    ];
    let wrapper = chroot_wrapper(&rootfs, &binds, "/usr/local/bin/ironvisor-agent");
    let name = version.strip_prefix("ironvisor-agent ").map(str::to_owned);
    (wrapper, name)
}

#[test]
fn upgrading_applies_the_new_crds_over_stored_objects_and_the_new_agent_adopts_running_vms() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let old_crds = repo_root().join("tests/fixtures/v0.1.0/crds.yaml");
    sys.kubectl_ok(&["apply", "-f", old_crds.to_str().unwrap()]);
    let (_operator, _) = sys.operator();
    let node = format!("e2e-upgrade-{}", std::process::id());
    let mut agent = sys.agent(&node, "qemu:///system", &images);
    let ns = format!("e2eupgrade{}", std::process::id());
    sys.tenant(&ns, &ns, "{virtualMachines: 4, vcpus: 4, memory: 1Gi}");
    let names = ["one", "two"];
    for n in names {
        sys.apply(&tiny_vm_manifest(&ns, n, &images, ""));
    }
    for n in names {
        sys.wait_phase(&ns, n, "Running", BOOT);
    }
    let before = running_state(&sys, &ns, &names);
    let stored_before: Value =
        serde_json::from_str(&sys.kubectl_ok(&["get", "vm", "-n", &ns, "-o", "json"])).unwrap();

    // 1. The new CRDs first, over the stored objects.
    let crds = repo_root().join("dist/crds.yaml");
    let crds = if crds.is_file() {
        crds
    } else {
        repo_root().join("manifests/crds")
    };
    let flag = if crds.is_dir() { "-k" } else { "-f" };
    sys.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        flag,
        crds.to_str().unwrap(),
    ]);
    let stored_after: Value =
        serde_json::from_str(&sys.kubectl_ok(&["get", "vm", "-n", &ns, "-o", "json"])).unwrap();
    // As kube-apiserver does, objects read from storage carry the new schema's defaults
    // (fields the old release did not know, such as `drainStrategy`); nothing else changes.
    let crd: Value = serde_json::from_str(&sys.kubectl_ok(&[
        "get",
        "crd",
        "virtualmachines.ironvisor.io",
        "-o",
        "json",
    ]))
    .unwrap();
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["storage"] == true)
        .expect("a storage version");
    let spec_schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for (a, b) in stored_before["items"]
        .as_array()
        .unwrap()
        .iter()
        .zip(stored_after["items"].as_array().unwrap())
    {
        if let Err(e) = unchanged_but_defaulted(&a["spec"], &b["spec"], spec_schema, "spec") {
            panic!(
                "a stored VM's spec changed with the new CRDs: {e}\nbefore {}\nafter {}",
                a["spec"], b["spec"]
            );
        }
    }
    sys.kubectl_ok(&["get", "tenant", &ns]);
    sys.kubectl_ok(&["get", "quota", &format!("{ns}-quota")]);

    // 2. The host's agent restarted as the new build.
    let scratch = tempfile::Builder::new()
        .prefix("ironvisor-upgrade-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (wrapper, version) = new_build(scratch.path());
    let heartbeat = |sys: &System| {
        sys.get("hypervisor", None, &node)
            .map(|hv| hv["status"]["lastHeartbeatTime"].clone())
    };
    let old_heartbeat = heartbeat(&sys);
    agent.wrapper = wrapper;
    sys.restart_agent(&mut agent);
    let want_version = version.unwrap_or_else(|| ironvisor_crds::BUILD_VERSION.to_owned());
    wait_for("the new agent's heartbeat", QUICK, || {
        let hv = sys
            .get("hypervisor", None, &node)
            .ok_or("no Hypervisor yet")?;
        let version = hv["status"]["agentVersion"].as_str();
        if version != Some(want_version.as_str()) {
            return Err(format!("agentVersion {version:?}, want {want_version:?}"));
        }
        if heartbeat(&sys) == old_heartbeat {
            return Err("no heartbeat since the restart yet".into());
        }
        Ok(())
    });
    // Two resyncs of the new agent (--resync-interval 10s): time to restart anything it would.
    std::thread::sleep(Duration::from_secs(22));
    agent.proc.assert_alive();
    let after = running_state(&sys, &ns, &names);
    eprintln!("upgrade: (domain id, QEMU pid, startedAt) before {before:?}, after {after:?}");
    assert_eq!(after, before, "a VM was restarted by the upgrade");
    for n in names {
        let vm = sys.vm(&ns, n);
        assert_eq!(vm["status"]["phase"], "Running", "{}", describe(&vm));
    }
}
