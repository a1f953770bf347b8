//! The command line end to end: exports made here with qemu-img, an inventory naming them,
//! `ivctl import plan` (offline, with the throughput measured on this host), then
//! `ivctl import wave` importing the first wave two VMs at a time.

use std::path::Path;
use std::process::Command;

fn ivctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ivctl"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A VMX with one 8 MiB sparse VMDK of non-zero data.
fn export(dir: &Path, name: &str, extra: &str) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let raw = d.join("disk.raw");
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i % 251) as u8 ^ name.len() as u8)
        .collect();
    std::fs::write(&raw, data).unwrap();
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vmdk"])
        .arg(&raw)
        .arg(d.join("disk.vmdk")));
    std::fs::remove_file(raw).unwrap();
    let vmx = format!(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\ndisplayName = \"{name}\"\nguestOS = \"debian11-64\"\nnumvcpus = \"1\"\nmemsize = \"256\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"disk.vmdk\"\nethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"VM Network\"\n{extra}"
    );
    std::fs::write(d.join(format!("{name}.vmx")), vmx).unwrap();
}

#[test]
fn a_planned_wave_is_imported_with_bounded_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    export(&exports, "app-1", "");
    export(&exports, "app-2", "");
    export(
        &exports,
        "gpu-1",
        "pciPassthru0.present = \"TRUE\"\npciPassthru0.vgpu = \"grid_t4-4q\"\n",
    );
    let inv = dir.path().join("inv");
    std::fs::create_dir_all(&inv).unwrap();
    std::fs::write(
        inv.join("vInfo.csv"),
        "VM,CPUs,Memory,Provisioned MiB,In Use MiB,Folder\napp-1,1,256,8,8,DC/Apps\napp-2,1,256,8,8,DC/Apps\ngpu-1,1,256,8,8,DC/Apps\nold-9,2,4096,20480,900,DC/Apps\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - tenant: apps\n    match: { folder: '*/Apps' }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("hv.yaml"),
        "kind: Hypervisor\napiVersion: ironvisor.io/v1alpha1\nmetadata: { name: h1 }\nspec: {}\nstatus: { allocatable: { vcpus: 8, memory: 8Gi } }\n",
    )
    .unwrap();
    let plan_dir = dir.path().join("plan");
    let stdout = run(ivctl()
        .args([
            "import",
            "plan",
            "--offline",
            "--window",
            "2h",
            "--sample-mib",
            "8",
            "--network-map",
            "VM Network=user",
        ])
        .arg("--inventory")
        .arg(&inv)
        .arg("--exports")
        .arg(&exports)
        .arg("--tenant-rules")
        .arg(dir.path().join("rules.yaml"))
        .arg("--hypervisors")
        .arg(dir.path().join("hv.yaml"))
        .arg("--out")
        .arg(&plan_dir));
    assert!(stdout.contains("Automation:"), "{stdout}");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan_dir.join("plan.json")).unwrap())
            .unwrap();
    assert_eq!(plan["throughput"]["source"], "measured");
    assert!(
        plan["throughput"]["detail"]
            .as_str()
            .unwrap()
            .contains("measured on this host: a 8 MiB VMDK")
    );
    let vm = |n: &str| {
        plan["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == n)
            .unwrap()
            .clone()
    };
    assert!(
        vm("app-1")["export"]
            .as_str()
            .unwrap()
            .ends_with("app-1.vmx")
    );
    assert_eq!(vm("gpu-1")["readiness"], "blocked");
    assert!(
        vm("gpu-1")["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "vgpu")
    );
    assert!(
        vm("old-9")["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "no-export")
    );
    assert_eq!(vm("app-1")["wave"], 1);
    for f in [
        "plan.md",
        "plan.html",
        "wave-01/00-tenants.yaml",
        "wave-01/apps.app-1.yaml",
        "wave-01/apps.app-2.yaml",
    ] {
        assert!(plan_dir.join(f).is_file(), "{f} missing");
    }
    let html = std::fs::read_to_string(plan_dir.join("plan.html")).unwrap();
    assert!(html.contains("<table class=\"summary\">") && html.contains("Automation"));
    let wave1: Vec<String> = plan["waves"][0]["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();

    let out = dir.path().join("out");
    // old-9 has no export yet: the others are imported, it is reported, and the exit
    // status says the wave is not complete.
    let done = ivctl()
        .args(["import", "wave", "--wave", "1", "--parallel", "2", "--json"])
        .arg(plan_dir.join("plan.json"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        done.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let outcomes: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    let outcomes = outcomes.as_array().unwrap();
    assert_eq!(outcomes.len(), wave1.len());
    for o in outcomes {
        let name = o["vm"].as_str().unwrap();
        if name == "old-9" {
            assert_eq!(o["status"], "noExport");
            continue;
        }
        assert_eq!(o["status"], "imported", "{o}");
        assert!(
            out.join(name)
                .join(format!("{name}-scsi0-0.qcow2"))
                .is_file()
        );
        let manifest = o["detail"].as_str().unwrap();
        assert!(manifest.ends_with(".yaml"), "{o}");
        // The plan's --network-map reaches the wave's imports.
        let m: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
        assert!(m["spec"]["networks"][0]["user"].is_object(), "{m}");
        assert_eq!(m["metadata"]["namespace"], "apps");
    }
    assert!(wave1.contains(&"app-1".to_string()) && wave1.contains(&"app-2".to_string()));
    let e = ivctl()
        .args(["import", "wave", "--wave", "9"])
        .arg(plan_dir.join("plan.json"))
        .output()
        .unwrap();
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("no wave 9"));
}

/// `ivctl import plan` of one exported VM with a vTPM onto hosts given by a file.
fn plan_vtpm_vm(dir: &Path, host_tpm: bool) -> serde_json::Value {
    let exports = dir.join("exports");
    export(&exports, "win-1", "vtpm.present = \"TRUE\"\n");
    let inv = dir.join("inv");
    std::fs::create_dir_all(&inv).unwrap();
    std::fs::write(
        inv.join("vInfo.csv"),
        "VM,CPUs,Memory,Provisioned MiB,In Use MiB,Folder\nwin-1,1,256,8,8,DC/Apps\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("hv.yaml"),
        format!(
            "kind: Hypervisor\napiVersion: ironvisor.io/v1alpha1\nmetadata: {{ name: h1 }}\nspec: {{}}\nstatus: {{ allocatable: {{ vcpus: 8, memory: 8Gi }}, tpm: {host_tpm} }}\n"
        ),
    )
    .unwrap();
    let plan_dir = dir.join("plan");
    run(ivctl()
        .args(["import", "plan", "--offline", "--throughput", "100"])
        .args(["--network-map", "VM Network=user"])
        .arg("--inventory")
        .arg(&inv)
        .arg("--exports")
        .arg(&exports)
        .arg("--hypervisors")
        .arg(dir.join("hv.yaml"))
        .arg("--out")
        .arg(&plan_dir));
    serde_json::from_str(&std::fs::read_to_string(plan_dir.join("plan.json")).unwrap()).unwrap()
}

fn finding_ids(plan: &serde_json::Value) -> Vec<String> {
    plan["vms"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_vtpm_is_planned_as_spec_tpm_where_a_host_has_swtpm_and_as_dropped_where_none_has() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_vtpm_vm(dir.path(), true);
    assert!(plan["noTpm"].is_null(), "{}", plan["noTpm"]);
    assert!(finding_ids(&plan).contains(&"vtpm".to_owned()));
    assert_eq!(
        plan["vms"][0]["manifest"]["spec"]["tpm"],
        serde_json::json!({"version": "2.0"})
    );

    let dir = tempfile::tempdir().unwrap();
    let plan = plan_vtpm_vm(dir.path(), false);
    let why = plan["noTpm"]
        .as_str()
        .expect("the reason is recorded for the wave");
    assert!(
        why.starts_with("none of the 1 target hosts reports a TPM emulator"),
        "{why}"
    );
    let ids = finding_ids(&plan);
    assert!(ids.contains(&"vtpm-dropped".to_owned()), "{ids:?}");
    assert!(!ids.contains(&"vtpm".to_owned()), "{ids:?}");
    assert!(plan["vms"][0]["manifest"]["spec"]["tpm"].is_null());
}
