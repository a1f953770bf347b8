//! Host health through the whole system: an agent on a deliberately broken host reports what
//! is wrong on its Hypervisor (and in `kubectl get hv`), and the operator places no VM there,
//! saying why in the VM's Scheduled message.
//!
//! The broken host is a private system-mode libvirtd (`hack/private-libvirtd.sh`) whose
//! /dev/kvm is root-only, as on a fresh machine without udev: libvirt probes QEMU as root
//! (KVM present) and validates its cache as libvirt-qemu (KVM absent), so every capability
//! call re-probes QEMU for seconds. The agent runs inside that host's mount namespace, so it
//! sees the same device. The shared libvirtd and /dev/kvm are never touched.

use std::time::Duration;

use ironvisor_tests::private_host::PrivateLibvirtd;
use ironvisor_tests::system::{System, describe, require_libvirtd, wait_for};
use serde_json::Value;

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[test]
fn a_host_whose_libvirt_thrashes_reports_why_and_gets_no_new_vms() {
    require_libvirtd();
    let host = PrivateLibvirtd::start("600", "root");
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let node = format!("broken{}", std::process::id());
    let images = sys.dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let _agent = sys.agent_wrapped(&node, host.uri(), &images, &host.exec_prefix());

    // Two slow probes in a row (at start, then at once again) make LibvirtHealthy False.
    let hv = wait_for(
        "the broken host's LibvirtHealthy=False",
        Duration::from_secs(180),
        || {
            let hv = sys
                .get("hypervisor", None, &node)
                .ok_or("no Hypervisor yet")?;
            match condition(&hv, "LibvirtHealthy") {
                Some(c) if c["status"] == "False" => Ok(hv),
                other => Err(format!("LibvirtHealthy: {other:?}")),
            }
        },
    );
    let libvirt = condition(&hv, "LibvirtHealthy").unwrap();
    assert_eq!(libvirt["reason"], "CapabilityProbeSlow", "{libvirt}");
    let kvm = condition(&hv, "KVMAvailable").expect("KVMAvailable reported");
    assert_eq!(kvm["status"], "False", "{kvm}");
    assert_eq!(kvm["reason"], "DeviceNotAccessible", "{kvm}");
    let message = kvm["message"].as_str().unwrap();
    assert!(
        message.contains("crw-------") && message.contains("chmod 0660 /dev/kvm"),
        "the KVM message names the device's mode and the remedy: {message}"
    );
    let storage = condition(&hv, "StorageAccessible").expect("StorageAccessible reported");
    assert_eq!(storage["status"], "True", "{storage}");

    let table = sys.kubectl_ok(&["get", "hv", &node]);
    assert!(
        table.contains("HEALTH") && table.contains("CapabilityProbeSlow,DeviceNotAccessible"),
        "kubectl get hv shows the host's health:\n{table}"
    );

    sys.tenant("hh", "hh", "{virtualMachines: 2, vcpus: 2, memory: 1Gi}");
    sys.apply(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\n\
         metadata: {name: waits, namespace: hh}\n\
         spec: {memory: {size: 64Mi}, runStrategy: Always}\n",
    );
    let vm = wait_for(
        "the VM to say why it is not placed",
        Duration::from_secs(60),
        || {
            let vm = sys.vm("hh", "waits");
            match condition(&vm, "Scheduled") {
                Some(c) if c["status"] == "False" => Ok(vm),
                _ => Err(describe(&vm)),
            }
        },
    );
    let scheduled = condition(&vm, "Scheduled").unwrap();
    let message = scheduled["message"].as_str().unwrap();
    assert!(
        message.contains("1 libvirt unhealthy (see the host's LibvirtHealthy condition)"),
        "{message}"
    );
    assert!(
        vm["metadata"]["labels"]["ironvisor.io/node"].is_null(),
        "never placed: {vm}"
    );

    // A healthy host joins (the shared libvirtd, prepared by hack/start-libvirtd.sh): it says
    // so, and the waiting VM goes there, never to the broken one.
    let good = format!("good{}", std::process::id());
    let _good = sys.agent(&good, "qemu:///system", &images);
    let vm = wait_for(
        "the VM placed on the healthy host",
        Duration::from_secs(60),
        || {
            let vm = sys.vm("hh", "waits");
            match vm["status"]["nodeName"].as_str() {
                Some(n) => Ok(vm.clone()).map(|v| (n.to_owned(), v)),
                None => Err(describe(&vm)),
            }
        },
    );
    assert_eq!(vm.0, good, "{}", describe(&vm.1));
    let hv = sys
        .get("hypervisor", None, &good)
        .expect("the healthy host's Hypervisor");
    let libvirt = condition(&hv, "LibvirtHealthy").expect("LibvirtHealthy reported");
    assert_eq!(libvirt["status"], "True", "{libvirt}");
    let kvm = condition(&hv, "KVMAvailable").expect("KVMAvailable reported");
    assert_ne!(
        kvm["reason"], "DeviceNotAccessible",
        "after hack/start-libvirtd.sh the QEMU user can open /dev/kvm: {kvm}"
    );
}
