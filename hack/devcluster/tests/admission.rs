//! ValidatingAdmissionPolicy against the real kubectl: a policy on `request.userInfo` stops a
//! tenant from setting a label the admin may set, and a node-bound service-account token can
//! write only the VMs of its own node (the `authentication.kubernetes.io/node-name` extra).

mod common;

use common::Harness;
use ironvisor_devcluster::{AnonymousAccess, Options};
use std::path::Path;

const NODE_LABEL_GUARD: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: node-label-guard
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [ironvisor.io]
      apiVersions: ["*"]
      operations: [CREATE, UPDATE]
      resources: [virtualmachines]
  matchConditions:
  - name: not-a-cluster-admin
    expression: "!('system:masters' in request.userInfo.groups)"
  variables:
  - name: node
    expression: "has(object.metadata.labels) && 'ironvisor.io/node' in object.metadata.labels ? object.metadata.labels['ironvisor.io/node'] : ''"
  - name: oldNode
    expression: "oldObject != null && has(oldObject.metadata.labels) && 'ironvisor.io/node' in oldObject.metadata.labels ? oldObject.metadata.labels['ironvisor.io/node'] : ''"
  validations:
  - expression: "variables.node == variables.oldNode"
    messageExpression: "'only the control plane places VMs: ' + request.userInfo.username + ' may not set ironvisor.io/node'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: node-label-guard
spec:
  policyName: node-label-guard
  validationActions: [Deny]
"#;

const OWN_NODE_ONLY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: agent-own-node
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [ironvisor.io]
      apiVersions: ["*"]
      operations: [UPDATE]
      resources: [virtualmachines/status]
  matchConditions:
  - name: is-the-agent
    expression: "request.userInfo.username == 'system:serviceaccount:ironvisor-system:agent'"
  validations:
  - expression: "'authentication.kubernetes.io/node-name' in request.userInfo.extra && object.metadata.labels['ironvisor.io/node'] == request.userInfo.extra['authentication.kubernetes.io/node-name'][0]"
    message: "an agent writes the status of its own node's VMs only"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: agent-own-node
spec:
  policyName: agent-own-node
  validationActions: [Deny]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: agent-status
rules:
- apiGroups: [ironvisor.io]
  resources: [virtualmachines/status]
  verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: agent-status
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: agent-status
subjects:
- kind: ServiceAccount
  name: agent
  namespace: ironvisor-system
"#;

fn vm(name: &str, node: &str) -> String {
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: {name}\n  namespace: t1\n  labels:\n    ironvisor.io/node: {node}\nspec:\n  memory:\n    size: 128Mi\n"
    )
}

async fn cluster() -> Harness {
    let h = Harness::start_with(Options {
        anonymous: AnonymousAccess::Deny,
        ..Options::default()
    })
    .await;
    h.apply_crds().await;
    h.ok(&["create", "namespace", "t1"]).await;
    h
}

async fn run(h: &Harness, kc: &Path, args: &[&str]) -> (bool, String) {
    let out = h.kubectl_as(kc, args, None).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_on_user_info_stops_a_tenant_from_setting_a_label_the_admin_may_set() {
    let h = cluster().await;
    let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/rbac/user-roles.yaml");
    h.ok(&["apply", "-f", roles.to_str().unwrap()]).await;
    h.kubectl_stdin(&["apply", "-f", "-"], Some(NODE_LABEL_GUARD))
        .await;
    h.ok(&[
        "create",
        "rolebinding",
        "bob",
        "-n",
        "t1",
        "--clusterrole",
        "ironvisor-admin",
        "--user",
        "bob",
    ])
    .await;
    let bob = h.kubeconfig_for("bob", &["tenants"]);
    let plain = "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: a\n  namespace: t1\nspec:\n  memory:\n    size: 128Mi\n";
    let file = h.file("plain.yaml", plain);
    let (ok, out) = run(&h, &bob, &["apply", "-f", &file]).await;
    assert!(ok, "a VM without the label is admitted: {out}");
    let label = r#"{"metadata":{"labels":{"ironvisor.io/node":"host-a"}}}"#;
    let (ok, out) = run(
        &h,
        &bob,
        &[
            "patch", "vm", "a", "-n", "t1", "--type", "merge", "-p", label,
        ],
    )
    .await;
    assert!(!ok);
    assert_eq!(
        out.trim(),
        "The virtualmachines \"a\" is invalid: : ValidatingAdmissionPolicy 'node-label-guard' with binding 'node-label-guard' denied request: only the control plane places VMs: bob may not set ironvisor.io/node"
    );
    let file = h.file("labelled.yaml", &vm("b", "host-a"));
    let (ok, out) = run(&h, &bob, &["apply", "-f", &file]).await;
    assert!(
        !ok && out.contains("bob may not set ironvisor.io/node"),
        "{out}"
    );
    // Nothing was written, and the admin passes.
    assert_eq!(
        h.ok(&["get", "vm", "-n", "t1", "-o", "name"]).await,
        "virtualmachine.ironvisor.io/a\n"
    );
    h.ok(&[
        "patch", "vm", "a", "-n", "t1", "--type", "merge", "-p", label,
    ])
    .await;
    let (ok, out) = run(&h, &bob, &["label", "vm", "a", "-n", "t1", "other=x"]).await;
    assert!(ok, "other labels stay the tenant's: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bound_agent_token_writes_only_its_own_nodes_vms() {
    let h = cluster().await;
    h.ok(&["create", "namespace", "ironvisor-system"]).await;
    h.ok(&[
        "create",
        "serviceaccount",
        "agent",
        "-n",
        "ironvisor-system",
    ])
    .await;
    h.kubectl_stdin(&["apply", "-f", "-"], Some(OWN_NODE_ONLY))
        .await;
    for (name, node) in [("on-a", "host-a"), ("on-b", "host-b")] {
        h.kubectl_stdin(&["apply", "-f", "-"], Some(&vm(name, node)))
            .await;
    }
    let token = h
        .ok(&[
            "create",
            "token",
            "agent",
            "-n",
            "ironvisor-system",
            "--bound-object-kind",
            "Node",
            "--bound-object-name",
            "host-a",
        ])
        .await;
    let agent = h.dir.path().join("agent.kubeconfig");
    std::fs::write(
        &agent,
        h.cluster.kubeconfig_with_token("agent", token.trim()),
    )
    .unwrap();
    let status = r#"{"status":{"phase":"Running"}}"#;
    let patch = |name: &'static str| {
        [
            "patch",
            "vm",
            name,
            "-n",
            "t1",
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            status,
        ]
    };
    let (ok, out) = run(&h, &agent, &patch("on-a")).await;
    assert!(ok, "{out}");
    let (ok, out) = run(&h, &agent, &patch("on-b")).await;
    assert!(!ok);
    assert!(
        out.contains("ValidatingAdmissionPolicy 'agent-own-node' with binding 'agent-own-node' denied request: an agent writes the status of its own node's VMs only"),
        "{out}"
    );
    // An unbound token of the same account is refused everywhere.
    let unbound = h
        .ok(&["create", "token", "agent", "-n", "ironvisor-system"])
        .await;
    std::fs::write(
        &agent,
        h.cluster.kubeconfig_with_token("agent", unbound.trim()),
    )
    .unwrap();
    let (ok, _) = run(&h, &agent, &patch("on-a")).await;
    assert!(!ok);
}
