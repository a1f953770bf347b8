//! A VM with `spec.tpm` under QEMU (TCG) through `qemu:///system`: libvirt starts swtpm
//! beside the guest, QEMU has a CRB TPM device, the TPM's state outlives a stop and start,
//! and it goes only when the VM is removed.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh) and swtpm (hack/install-deps.sh),
//! as CI has.

mod common;

use common::*;
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_agent::hypervisor::Hypervisor;
use ironvisor_crds::vm::{Phase, VirtualMachine};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";
/// Where libvirt keeps the TPM state of a persistent domain.
const SWTPM_STATE: &str = "/var/lib/libvirt/swtpm";
/// Where libvirt has swtpm_setup and swtpm log, one file per domain name.
const SWTPM_LOGS: &str = "/var/log/swtpm/libvirt/qemu";

/// Command lines of the processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push(cmdline);
        }
    }
    out
}

fn live_xml(domain: &str) -> String {
    admin(URI)
        .lookup_domain_by_name(domain)
        .expect("the domain")
        .xml_desc(0)
        .expect("its XML")
}

fn manufactured(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("Starting vTPM manufacturing")
        .count()
}

async fn wait_phase(host: &Host, vm: VirtualMachine, want: Phase) -> VirtualMachine {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut vm = vm;
    loop {
        let (next, o) = step(&host.engine, vm).await;
        vm = next;
        if o.status.phase == Some(want) {
            return vm;
        }
        assert!(
            Instant::now() < deadline,
            "no {want:?}: {:?}",
            o.status.conditions
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_vm_with_a_tpm_runs_with_swtpm_keeps_its_state_and_loses_it_only_when_removed() {
    let tmp = tempfile::Builder::new()
        .prefix("ironvisor-tpm-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = Host::in_dir(URI, tmp);
    let caps = host.libvirt.probe_capabilities().await.unwrap();
    assert!(
        caps.tpm_emulator,
        "libvirt lists no TPM emulator on this host: run hack/install-deps.sh (swtpm swtpm-tools)"
    );

    let pid = std::process::id();
    let (ns, name, uid) = ("tpm", format!("sealed-{pid}"), format!("tpm-{pid}"));
    let spec = |strategy: &str| {
        serde_json::json!({
            "runStrategy": strategy,
            "memory": {"size": "64Mi"},
            "terminationGracePeriodSeconds": 0,
            "tpm": {}
        })
    };
    let domain = domain_name(ns, &name);
    let log = PathBuf::from(SWTPM_LOGS).join(format!("{domain}-swtpm.log"));
    std::fs::remove_file(&log).ok();

    let v = wait_phase(&host, vm(ns, &name, &uid, spec("Always")), Phase::Running).await;
    let dom_uuid = host.libvirt.observe(&domain).await.unwrap().unwrap().uuid;
    let state = PathBuf::from(SWTPM_STATE).join(&dom_uuid);

    // The definition asks for it, QEMU has the device, swtpm runs on this domain's state.
    let xml = live_xml(&domain);
    assert!(xml.contains("<tpm model='tpm-crb'>"), "{xml}");
    assert!(
        xml.contains("<backend type='emulator' version='2.0'"),
        "{xml}"
    );
    let qemu = processes_with(&format!("guest={domain},"));
    assert_eq!(qemu.len(), 1, "one QEMU for the domain: {qemu:?}");
    assert!(qemu[0].contains("tpm-crb"), "no TPM device: {}", qemu[0]);
    let swtpm = processes_with(&format!("{SWTPM_STATE}/{dom_uuid}/tpm2"));
    assert!(
        swtpm.iter().any(|c| c.starts_with("/usr/bin/swtpm socket")),
        "no swtpm on the domain's state: {swtpm:?}"
    );
    let permall = state.join("tpm2/tpm2-00.permall");
    assert!(permall.exists(), "no TPM state in {}", state.display());
    assert_eq!(manufactured(&log), 1, "one TPM made at first start");

    // Halted and started again: the same TPM (not manufactured anew).
    let v = v_with_spec(v, spec("Halted"));
    let v = wait_phase(&host, v, Phase::Stopped).await;
    assert!(permall.exists(), "a stopped VM keeps its TPM state");
    assert!(processes_with(&format!("{SWTPM_STATE}/{dom_uuid}/tpm2")).is_empty());
    let v = v_with_spec(v, spec("Always"));
    let v = wait_phase(&host, v, Phase::Running).await;
    assert_eq!(
        host.libvirt.observe(&domain).await.unwrap().unwrap().uuid,
        dom_uuid
    );
    assert!(permall.exists());
    assert_eq!(manufactured(&log), 1, "the second start reuses the TPM");

    // Removed (the finalizer's cleanup of a deleted VM): the TPM state goes with it.
    host.engine.remove(&v).await.unwrap();
    assert!(host.libvirt.observe(&domain).await.unwrap().is_none());
    assert!(
        !state.exists(),
        "the TPM state outlived its VM: {}",
        state.display()
    );
    host.libvirt.close();
    std::fs::remove_file(&log).ok();
}

/// The same VM with another spec and the next generation, as after a user's edit.
fn v_with_spec(mut v: VirtualMachine, spec: serde_json::Value) -> VirtualMachine {
    v.spec = serde_json::from_value(spec).unwrap();
    v.metadata.generation = v.metadata.generation.map(|g| g + 1);
    v
}
