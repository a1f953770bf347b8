//! The deployment manifests render with kustomize, every built-in object in them is valid
//! against the official Kubernetes schemas, and every example is valid against our CRDs.

use std::process::Command;

use ironvisor_tests::{KUBERNETES_VALIDATE, repo_root, run, yaml_documents};

fn kustomize() -> String {
    let out = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("manifests")));
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

fn validate_with_official_schemas(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).expect("write rendered manifests");
    let out = run(Command::new(KUBERNETES_VALIDATE)
        .args(["--strict", "--kubernetes-version", "1.32.0"])
        .arg(&file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn kustomize_base_renders_every_component() {
    let docs = yaml_documents(&kustomize());
    let kinds: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("").to_owned(),
                d["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for expected in [
        ("Namespace", "ironvisor-system"),
        ("Namespace", "ironvisor-seeds"),
        ("ClusterRole", "ironvisor-operator-seed-reader"),
        ("Role", "ironvisor-agent-seeds"),
        ("CustomResourceDefinition", "virtualmachines.ironvisor.io"),
        ("CustomResourceDefinition", "hypervisors.ironvisor.io"),
        ("CustomResourceDefinition", "tenants.ironvisor.io"),
        ("CustomResourceDefinition", "quotas.ironvisor.io"),
        ("ClusterRole", "ironvisor-operator"),
        ("ClusterRole", "ironvisor-agent"),
        ("ClusterRole", "ironvisor-admin"),
        ("ClusterRole", "ironvisor-edit"),
        ("ClusterRole", "ironvisor-view"),
        ("Deployment", "ironvisor-operator"),
        ("DaemonSet", "ironvisor-agent"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, n)| k == expected.0 && n == expected.1),
            "{expected:?} missing from the rendered manifests: {kinds:?}"
        );
    }
}

#[test]
fn every_built_in_object_is_valid_against_the_official_kubernetes_schemas() {
    let rendered = kustomize();
    let (ok, report) = validate_with_official_schemas(&rendered);
    assert!(ok, "kubernetes-validate rejected the manifests:\n{report}");
    let objects = yaml_documents(&rendered).len();
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, objects, "every object must be checked:\n{report}");
}

#[test]
fn the_schema_validator_rejects_a_broken_deployment() {
    // Guards the test above: the validator must really validate.
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n";
    let (ok, report) = validate_with_official_schemas(broken);
    assert!(
        !ok,
        "a Deployment with replicas: two must be rejected:\n{report}"
    );
}

#[test]
fn agent_daemonset_gets_its_node_name_from_the_downward_api_and_is_privileged() {
    let docs = yaml_documents(&kustomize());
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("agent DaemonSet");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let node_env = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_env["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(container["securityContext"]["privileged"], true);
    assert!(
        container["readinessProbe"].is_object(),
        "the agent needs a readiness probe"
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(
        mounts.contains(&"/var/run/libvirt") && mounts.contains(&"/var/lib/ironvisor"),
        "{mounts:?}"
    );
}
