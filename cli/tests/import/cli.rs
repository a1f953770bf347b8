//! The binaries: command tree, kubectl plugin name, JSON report, exit codes, and the soft
//! cluster lookup.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::fixtures::*;

fn ivctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

fn ovf_bundle(dir: &std::path::Path, os_type: &'static str) -> std::path::PathBuf {
    let raw = raw_disk(dir, "d.raw", 1, 11);
    vmdk_from_raw(&raw, &dir.join("disk.vmdk"), "streamOptimized", "lsilogic");
    let mut spec = OvfSpec::simple(vec![disk("disk.vmdk", 1 << 20, "lsilogic", 0)]);
    spec.os_type = os_type;
    std::fs::write(dir.join("vm.ovf"), ovf_text(&spec)).unwrap();
    dir.join("vm.ovf")
}

#[test]
fn help_lists_import_and_the_kubectl_style_options() {
    let out = ivctl(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["import", "--namespace", "--kubeconfig", "--context"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let out = ivctl(&["import", "vmware", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--network-map",
        "--keep-nic-model",
        "--keep-mac",
        "--dry-run",
        "--report",
        "--force",
        "--images-dir",
        "--storage-quota-remaining",
        "--deployment-option",
        "--vapp-property",
        "--vapp-properties-as-cloud-init",
        "--dry-run-server",
        "--keep-macs",
        "--no-tpm",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn the_kubectl_plugin_binary_is_the_same_program() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-ironvisor"))
        .args(["import", "vmware", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--network-map"));
}

#[test]
fn a_json_dry_run_report_is_one_document_with_the_automated_share() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = ovf_bundle(dir.path(), "ubuntu64Guest");
    let out_dir = dir.path().join("out");
    let out = ivctl(&[
        "import",
        "vmware",
        ovf.to_str().unwrap(),
        "-n",
        "team-a",
        "--out",
        out_dir.to_str().unwrap(),
        "--dry-run",
        "--report",
        "json",
        "--storage-quota-remaining",
        "10Gi",
        "--network-map",
        "VM Network=lan",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["status"], "dry-run");
    assert_eq!(report["vm"]["namespace"], "team-a");
    assert_eq!(report["manifest"]["metadata"]["namespace"], "team-a");
    assert_eq!(report["quota"]["remainingBytes"], 10u64 << 30);
    let automated = report["steps"]["automated"].as_array().unwrap().len();
    let manual = report["steps"]["manual"].as_array().unwrap().len();
    assert_eq!(
        report["steps"]["automatedPercent"],
        (automated * 100 / (automated + manual)) as u64
    );
    assert!(entries(&out_dir).is_empty());
}

#[test]
fn a_blocker_stops_the_import_with_exit_code_3_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = ovf_bundle(dir.path(), "ubuntu64Guest");
    let out_dir = dir.path().join("out");
    let args = |force: bool| {
        let mut a = vec![
            "import",
            "vmware",
            ovf.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--storage-quota-remaining",
            "512Ki",
        ];
        if force {
            a.push("--force");
        }
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let blocked = Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .args(args(false))
        .output()
        .unwrap();
    assert_eq!(blocked.status.code(), Some(3));
    let text = String::from_utf8_lossy(&blocked.stdout);
    assert!(text.contains("[BLOCKER] storage-quota"), "{text}");
    assert!(text.contains("stopped on a blocker"), "{text}");
    assert!(entries(&out_dir).is_empty());
    let forced = Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .args(args(true))
        .output()
        .unwrap();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(String::from_utf8_lossy(&forced.stdout).contains("blockers overridden with --force"));
    assert_eq!(
        entries(&out_dir.join("simple")),
        vec!["simple-scsi0-0.qcow2", "simple.yaml"]
    );
}

#[test]
fn an_unreachable_cluster_leaves_the_quota_unknown_and_the_import_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = ovf_bundle(dir.path(), "ubuntu64Guest");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: from-context\ncurrent-context: x\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .args([
            "import",
            "vmware",
            ovf.to_str().unwrap(),
            "--dry-run",
            "--report",
            "json",
            "--out",
        ])
        .arg(dir.path().join("out"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["vm"]["namespace"], "from-context",
        "the context's namespace is the default"
    );
    assert_eq!(report["quota"]["source"], "unknown");
    assert!(
        report["quota"]["note"]
            .as_str()
            .unwrap()
            .contains("cluster lookup failed"),
        "{}",
        report["quota"]
    );
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "storage-quota-unknown")
    );
}

#[test]
fn a_failed_import_exits_1_with_the_file_named_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = ivctl(&[
        "import",
        "vmware",
        dir.path().join("nothing.iso").to_str().unwrap(),
        "--offline",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("nothing.iso: not an .ovf, .ova or .vmx file")
    );
}

#[test]
fn a_failed_import_with_a_json_report_prints_a_failed_document() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("nothing.ovf");
    std::fs::write(&source, "<not-an-envelope/>").unwrap();
    let out = ivctl(&[
        "import",
        "vmware",
        source.to_str().unwrap(),
        "--offline",
        "--report",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["source"], source.to_str().unwrap());
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|m| m.contains("nothing.ovf")),
        "{doc}"
    );
}

#[test]
fn kubectl_finds_the_plugin_on_path_as_kubectl_ironvisor() {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-ironvisor"))
        .parent()
        .unwrap()
        .to_owned();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new("kubectl")
        .args(["ironvisor", "import", "vmware", "--help"])
        .env("PATH", path)
        .output()
        .expect("kubectl is installed (hack/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--network-map"));
}

#[test]
fn a_network_map_file_maps_port_groups_keeps_macs_and_lists_the_unmapped() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_disk(dir.path(), "d.raw", 1, 12);
    vmdk_from_raw(
        &raw,
        &dir.path().join("disk.vmdk"),
        "streamOptimized",
        "lsilogic",
    );
    let mut spec = OvfSpec::simple(vec![disk("disk.vmdk", 1 << 20, "lsilogic", 0)]);
    spec.nics = vec![
        OvfNic {
            model: "VmxNet3",
            network: "VM Network",
            mac: Some("00:50:56:aa:bb:01"),
        },
        OvfNic {
            model: "VmxNet3",
            network: "DMZ (vlan 20)",
            mac: Some("00:50:56:aa:bb:02"),
        },
        OvfNic {
            model: "E1000",
            network: "Backup",
            mac: None,
        },
    ];
    std::fs::write(dir.path().join("vm.ovf"), ovf_text(&spec)).unwrap();
    let map = dir.path().join("estate.map");
    std::fs::write(
        &map,
        "# port group = Ironvisor network\nVM Network = prod\nDMZ (vlan 20)=bridge:br-dmz\n",
    )
    .unwrap();
    let args = |map: &str| {
        ivctl(&[
            "import",
            "vmware",
            dir.path().join("vm.ovf").to_str().unwrap(),
            "-n",
            "team-a",
            "--offline",
            "--dry-run",
            "--report",
            "json",
            "--network-map",
            map,
            "--keep-macs",
        ])
    };
    let out = args(map.to_str().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nets = &doc["manifest"]["spec"]["networks"];
    assert_eq!(nets[0]["network"]["name"], "prod");
    assert_eq!(nets[0]["macAddress"], "00:50:56:aa:bb:01");
    assert_eq!(nets[1]["bridge"]["name"], "br-dmz");
    assert_eq!(nets[2]["network"]["name"], "default");
    let unmapped = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "unmapped-network")
        .expect("the unmapped port group is a warning");
    assert_eq!(unmapped["severity"], "warning");
    assert_eq!(unmapped["detail"], "Backup");
    // A bad line fails naming the file and the line, with the JSON failure document.
    std::fs::write(&map, "VM Network = prod\nDMZ=bad name\n").unwrap();
    let out = args(map.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "failed");
    assert!(
        doc["error"].as_str().unwrap().contains("estate.map:2"),
        "{doc}"
    );
}

#[test]
fn force_past_a_blocker_never_writes_a_manifest_the_api_would_reject() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_disk(dir.path(), "d.raw", 1, 13);
    vmdk_from_raw(
        &raw,
        &dir.path().join("disk.vmdk"),
        "streamOptimized",
        "lsilogic",
    );
    let mut spec = OvfSpec::simple(vec![disk("disk.vmdk", 1 << 20, "lsilogic", 0)]);
    spec.memory_mib = 32; // the memory-too-small blocker; the CRD wants at least 64Mi
    std::fs::write(dir.path().join("vm.ovf"), ovf_text(&spec)).unwrap();
    let out_dir = dir.path().join("out");
    let out = ivctl(&[
        "import",
        "vmware",
        dir.path().join("vm.ovf").to_str().unwrap(),
        "--offline",
        "--out",
        out_dir.to_str().unwrap(),
        "--force",
        "--report",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.contains("rejected by the API") && err.contains("at least 64Mi"),
        "{err}"
    );
    assert!(entries(&out_dir).is_empty(), "nothing is written");
}

#[test]
fn dry_run_server_with_no_reachable_cluster_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = ovf_bundle(dir.path(), "ubuntu64Guest");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = ivctl(&[
        "import",
        "vmware",
        ovf.to_str().unwrap(),
        "--offline",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--dry-run-server",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("API server refuses") || err.contains("request to the cluster failed"),
        "{err}"
    );
    assert!(entries(&out_dir).is_empty());
}
