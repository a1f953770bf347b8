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
        ("Namespace", "ironvisor-usage"),
        ("Role", "ironvisor-operator-usage"),
        ("CustomResourceDefinition", "usagereports.ironvisor.io"),
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
        ("Role", "ironvisor-operator-leases"),
        ("ValidatingAdmissionPolicy", "ironvisor-vm-status"),
        ("ValidatingAdmissionPolicy", "ironvisor-vm-node-label"),
        ("ValidatingAdmissionPolicy", "ironvisor-agent-node-bound"),
        ("ValidatingAdmissionPolicy", "ironvisor-agent-vms"),
        ("ValidatingAdmissionPolicy", "ironvisor-agent-hypervisor"),
        ("ValidatingAdmissionPolicy", "ironvisor-agent-leases"),
        ("ValidatingAdmissionPolicy", "ironvisor-operator-lease"),
        ("Deployment", "ironvisor-console"),
        ("Service", "ironvisor-console"),
        ("APIService", "v1.subresources.ironvisor.io"),
        ("ClusterRole", "ironvisor-console"),
        (
            "ClusterRoleBinding",
            "ironvisor-console:system:auth-delegator",
        ),
        (
            "RoleBinding",
            "ironvisor-console:extension-apiserver-authentication-reader",
        ),
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
fn every_admission_policy_has_a_binding_that_denies() {
    let docs = yaml_documents(&kustomize());
    let named = |kind: &str| -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
            .collect()
    };
    let policies = named("ValidatingAdmissionPolicy");
    assert!(!policies.is_empty(), "no admission policies rendered");
    for p in &policies {
        let binding = docs
            .iter()
            .find(|d| {
                d["kind"] == "ValidatingAdmissionPolicyBinding"
                    && d["spec"]["policyName"] == p.as_str()
            })
            .unwrap_or_else(|| panic!("policy {p} has no binding"));
        assert_eq!(
            binding["spec"]["validationActions"],
            serde_json::json!(["Deny"]),
            "{p}"
        );
        let policy = docs
            .iter()
            .find(|d| d["metadata"]["name"] == p.as_str())
            .expect("policy");
        assert_eq!(
            policy["spec"]["failurePolicy"], "Fail",
            "{p} must fail closed"
        );
    }
}

fn pod_spec<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    &docs
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))["spec"]["template"]["spec"]
}

#[test]
fn agent_daemonset_is_unprivileged_with_a_node_bound_projected_token() {
    let docs = yaml_documents(&kustomize());
    let spec = pod_spec(&docs, "DaemonSet");
    let container = &spec["containers"][0];
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
    let sc = &container["securityContext"];
    assert_ne!(sc["privileged"], true, "the agent must not be privileged");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN"]),
        "only NET_ADMIN, for the host guard: {sc}"
    );
    assert_eq!(
        spec["hostNetwork"], true,
        "the host guard's rule lives in the host's network namespace"
    );
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
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
    let mut host_paths: Vec<&str> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    host_paths.sort_unstable();
    assert_eq!(
        host_paths,
        [
            "/dev/kvm",
            "/etc/group",
            "/etc/passwd",
            "/var/lib/ironvisor",
            "/var/run/libvirt"
        ]
    );
    // The pod's own token (pod-bound, so it carries the node claim), mounted where kube-rs'
    // in-cluster configuration reads it, with a lifetime the kubelet renews.
    assert_eq!(spec["automountServiceAccountToken"], false);
    let token = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find_map(|v| {
            v["projected"]["sources"]
                .as_array()?
                .iter()
                .find(|s| s["serviceAccountToken"].is_object())
        })
        .expect("a projected service account token");
    assert_eq!(token["serviceAccountToken"]["expirationSeconds"], 3600);
    assert!(mounts.contains(&"/var/run/secrets/kubernetes.io/serviceaccount"));
}

#[test]
fn operator_runs_as_non_root_without_capabilities() {
    let docs = yaml_documents(&kustomize());
    let spec = pod_spec(&docs, "Deployment");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &spec["containers"][0]["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
}
