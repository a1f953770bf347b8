//! Running the real `ivctl host check` and reading its JSON.

use std::process::{Command, Output};

use serde_json::Value;

/// The libvirt the tests qualify.
pub const URI: &str = "qemu:///system";

/// `ivctl host check <args>`, with the environment's PATH unless `path` is given.
pub fn host_check(args: &[&str], path: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ivctl"));
    cmd.args(["host", "check", "--libvirt-uri", URI]).args(args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().expect("ivctl runs")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON report of a `-o json` run.
pub fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\nstderr: {}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The check `id` of a JSON report.
pub fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

/// Whether this machine's CPU offers hardware virtualisation.
pub fn cpu_has_virt_flags() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.split_whitespace().any(|w| w == "vmx" || w == "svm")
}

/// libvirtd answers on [`URI`]; the message says how to start it.
pub fn require_libvirtd() {
    let out = Command::new("virsh")
        .args(["-c", URI, "version", "--daemon"])
        .output()
        .expect("virsh runs (apt-get install libvirt-clients)");
    assert!(
        out.status.success(),
        "libvirtd does not answer on {URI}: run hack/start-libvirtd.sh ({})",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test domain's name in the domain-test finding.
pub fn domain_name(report: &Value) -> String {
    let finding = check(report, "domain-test")["finding"].as_str().unwrap();
    finding
        .split_whitespace()
        .find(|w| w.starts_with("ironvisor-hostcheck-"))
        .unwrap_or_else(|| panic!("no domain name in {finding:?}"))
        .to_owned()
}

/// libvirt no longer knows the domain `name`.
pub fn assert_domain_gone(name: &str) {
    let out = Command::new("virsh")
        .args(["-c", URI, "domstate", name])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("failed to get domain"),
        "{name} is still defined: {}{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let all = Command::new("virsh")
        .args(["-c", URI, "list", "--all", "--name"])
        .output()
        .unwrap();
    assert!(!stdout(&all).lines().any(|l| l.trim() == name));
}
