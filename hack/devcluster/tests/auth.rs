//! Identity and RBAC against the real kubectl: tokens, service-account tokens from
//! `kubectl create token`, Roles and aggregated ClusterRoles enforced with kube-apiserver's
//! messages, `kubectl auth can-i`, TokenReview and SubjectAccessReview, 401 without a token.

mod common;

use common::Harness;
use ironvisor_devcluster::{AnonymousAccess, Options};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use std::path::Path;

const VM: &str = "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: x\nspec:\n  memory:\n    size: 128Mi\n";

const READER: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: vm-reader\n  namespace: t1\nrules:\n- apiGroups: [ironvisor.io]\n  resources: [virtualmachines]\n  verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: alice-reads\n  namespace: t1\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: vm-reader\nsubjects:\n- kind: User\n  name: alice\n";

async fn two_tenants() -> Harness {
    let h = Harness::start_with(Options {
        anonymous: AnonymousAccess::Deny,
        ..Options::default()
    })
    .await;
    h.apply_crds().await;
    for ns in ["t1", "t2"] {
        h.ok(&["create", "namespace", ns]).await;
        h.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(VM))
            .await;
    }
    h
}

async fn as_user(h: &Harness, kc: &Path, args: &[&str]) -> (bool, String, String) {
    let out = h.kubectl_as(kc, args, None).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_grants_its_namespace_only_and_refusals_read_as_kube_apiserver_writes_them() {
    let h = two_tenants().await;
    h.kubectl_stdin(&["apply", "-f", "-"], Some(READER)).await;
    let alice = h.kubeconfig_for("alice", &["tenants"]);
    let (ok, out, err) = as_user(&h, &alice, &["get", "vm", "-n", "t1", "-o", "name"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "virtualmachine.ironvisor.io/x\n");
    let (ok, _, err) = as_user(&h, &alice, &["get", "vm", "x", "-n", "t1"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = as_user(&h, &alice, &["get", "vm", "-n", "t2"]).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): virtualmachines.ironvisor.io is forbidden: User \"alice\" cannot list resource \"virtualmachines\" in API group \"ironvisor.io\" in the namespace \"t2\""
    );
    let patch = [
        "patch",
        "vm",
        "x",
        "-n",
        "t1",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"a":"b"}}}"#,
    ];
    let (ok, _, err) = as_user(&h, &alice, &patch).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): virtualmachines.ironvisor.io \"x\" is forbidden: User \"alice\" cannot patch resource \"virtualmachines\" in API group \"ironvisor.io\" in the namespace \"t1\""
    );
    let (ok, _, err) = as_user(&h, &alice, &["get", "secrets", "-n", "t1"]).await;
    assert!(
        !ok && err.contains("cannot list resource \"secrets\""),
        "{err}"
    );
    // The admin kubeconfig still does everything.
    h.ok(&[
        "patch",
        "vm",
        "x",
        "-n",
        "t1",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"a":"b"}}}"#,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_answers_from_the_stored_roles() {
    let h = two_tenants().await;
    h.kubectl_stdin(&["apply", "-f", "-"], Some(READER)).await;
    let alice = h.kubeconfig_for("alice", &[]);
    let can = |args: &'static [&'static str]| {
        let h = &h;
        let alice = &alice;
        async move { as_user(h, alice, args).await.1.trim().to_string() }
    };
    assert_eq!(
        can(&["auth", "can-i", "get", "vm", "-n", "t1"]).await,
        "yes"
    );
    assert_eq!(can(&["auth", "can-i", "get", "vm", "-n", "t2"]).await, "no");
    assert_eq!(
        can(&["auth", "can-i", "delete", "vm", "-n", "t1"]).await,
        "no"
    );
    assert_eq!(
        h.ok(&["auth", "can-i", "delete", "vm", "-n", "t2"])
            .await
            .trim(),
        "yes"
    );
    // Impersonation: the admin may act as alice; alice may not act as the admin.
    let as_alice = |ns: &'static str| {
        let h = &h;
        async move {
            let out = h
                .kubectl(&["auth", "can-i", "get", "vm", "-n", ns, "--as", "alice"])
                .await;
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(as_alice("t1").await.trim(), "yes");
    assert_eq!(as_alice("t2").await.trim(), "no");
    let (ok, _, err) = as_user(&h, &alice, &["get", "vm", "-n", "t2", "--as", "admin"]).await;
    assert!(!ok);
    assert!(
        err.contains("users \"admin\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_cluster_roles_pick_up_the_rules_of_labelled_roles() {
    let h = two_tenants().await;
    let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/rbac/user-roles.yaml");
    h.ok(&["apply", "-f", roles.to_str().unwrap()]).await;
    h.ok(&[
        "create",
        "rolebinding",
        "bob-admin",
        "-n",
        "t1",
        "--clusterrole",
        "ironvisor-admin",
        "--user",
        "bob",
    ])
    .await;
    h.ok(&[
        "create",
        "rolebinding",
        "carol-view",
        "-n",
        "t1",
        "--clusterrole",
        "view",
        "--user",
        "carol",
    ])
    .await;
    let bob = h.kubeconfig_for("bob", &[]);
    let carol = h.kubeconfig_for("carol", &[]);
    let ask = |kc: &Path, verb: &str, what: &str, ns: &str| {
        let args: Vec<String> = ["auth", "can-i", verb, what, "-n", ns]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let kc = kc.to_path_buf();
        let h = &h;
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            as_user(h, &kc, &a).await.1.trim().to_string()
        }
    };
    // ironvisor-admin aggregates ironvisor-view and ironvisor-edit by label.
    assert_eq!(
        ask(&bob, "create", "virtualmachines.ironvisor.io", "t1").await,
        "yes"
    );
    assert_eq!(ask(&bob, "delete", "secrets", "t1").await, "yes");
    assert_eq!(
        ask(&bob, "create", "virtualmachines.ironvisor.io", "t2").await,
        "no"
    );
    assert_eq!(ask(&bob, "create", "configmaps", "t1").await, "no");
    // Kubernetes' edit does not pick up ironvisor-edit: VMs come from Tenant owners only.
    h.ok(&[
        "create",
        "rolebinding",
        "eddie-edit",
        "-n",
        "t1",
        "--clusterrole",
        "edit",
        "--user",
        "eddie",
    ])
    .await;
    let eddie = h.kubeconfig_for("eddie", &[]);
    assert_eq!(
        ask(&eddie, "create", "virtualmachines.ironvisor.io", "t1").await,
        "no"
    );
    assert_eq!(
        ask(&eddie, "list", "virtualmachines.ironvisor.io", "t1").await,
        "yes"
    );
    // Kubernetes' view picks up ironvisor-view through aggregate-to-view.
    assert_eq!(
        ask(&carol, "list", "virtualmachines.ironvisor.io", "t1").await,
        "yes"
    );
    assert_eq!(
        ask(&carol, "delete", "virtualmachines.ironvisor.io", "t1").await,
        "no"
    );
    // A new labelled role is aggregated at once.
    let extra = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: cm-editor\n  labels:\n    ironvisor.io/aggregate-to-admin: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [create]\n";
    h.kubectl_stdin(&["apply", "-f", "-"], Some(extra)).await;
    assert_eq!(ask(&bob, "create", "configmaps", "t1").await, "yes");
    // The aggregation controller writes the union into the stored role, as on a cluster.
    let mut shown = String::new();
    for _ in 0..50 {
        shown = h
            .ok(&[
                "get",
                "clusterrole",
                "ironvisor-admin",
                "-o",
                "jsonpath={.rules[*].resources}",
            ])
            .await;
        if shown.contains("configmaps") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        shown.contains("\"virtualmachines\"")
            && shown.contains("\"secrets\"")
            && shown.contains("\"configmaps\""),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_kubectl_create_token_authenticates_as_the_service_account() {
    let h = two_tenants().await;
    h.ok(&["create", "serviceaccount", "agent", "-n", "t1"])
        .await;
    let token = h.ok(&["create", "token", "agent", "-n", "t1"]).await;
    let kc = h.dir.path().join("agent.kubeconfig");
    std::fs::write(&kc, h.cluster.kubeconfig_with_token("agent", token.trim())).unwrap();
    let (ok, out, err) = as_user(
        &h,
        &kc,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "system:serviceaccount:t1:agent [\"system:serviceaccounts\",\"system:serviceaccounts:t1\",\"system:authenticated\"]"
    );
    let (ok, _, err) = as_user(&h, &kc, &["get", "vm", "-n", "t1"]).await;
    assert!(!ok);
    assert!(
        err.contains("User \"system:serviceaccount:t1:agent\" cannot list"),
        "{err}"
    );
    // A node-bound token carries the node in the user's extra.
    let bound = h
        .ok(&[
            "create",
            "token",
            "agent",
            "-n",
            "t1",
            "--bound-object-kind",
            "Node",
            "--bound-object-name",
            "host-a",
        ])
        .await;
    std::fs::write(&kc, h.cluster.kubeconfig_with_token("agent", bound.trim())).unwrap();
    let (_, out, _) = as_user(
        &h,
        &kc,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.extra.authentication\\.kubernetes\\.io/node-name}",
        ],
    )
    .await;
    assert_eq!(out, "[\"host-a\"]");
    // Deleting the service account revokes its tokens.
    h.ok(&["delete", "serviceaccount", "agent", "-n", "t1"])
        .await;
    let (ok, _, err) = as_user(&h, &kc, &["auth", "whoami"]).await;
    assert!(!ok && err.contains("Unauthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_or_with_a_bad_token_are_401_when_anonymous_access_is_denied() {
    let h = two_tenants().await;
    // Over TLS kubectl would prompt for a password; the plain port gets no credentials at all.
    let nobody = kube_text_without_token(&h.cluster.url());
    let kc = h.dir.path().join("nobody.kubeconfig");
    std::fs::write(&kc, nobody).unwrap();
    let (ok, _, err) = as_user(&h, &kc, &["get", "namespaces"]).await;
    assert!(!ok);
    assert!(
        err.contains("error: You must be logged in to the server"),
        "{err}"
    );
    std::fs::write(&kc, h.cluster.kubeconfig_with_token("x", "not-a-token")).unwrap();
    let (ok, _, err) = as_user(&h, &kc, &["get", "namespaces"]).await;
    assert!(!ok && err.contains("Unauthorized"), "{err}");
}

fn kube_text_without_token(url: &str) -> String {
    let with = ironvisor_devcluster::kubeconfig_text(url, "nobody", "x", None);
    let without = with.replace("  user:\n    token: x\n", "  user: {}\n");
    assert_ne!(with, without, "the token line is gone");
    without
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_and_subject_access_review_answer_for_other_users() {
    let h = two_tenants().await;
    h.kubectl_stdin(&["apply", "-f", "-"], Some(READER)).await;
    let client = h.cluster.client().unwrap();
    let token = h.cluster.token_for("alice", &["tenants"]);
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = |t: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(t.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let st = reviews
        .create(&PostParams::default(), &review(&token))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.authenticated, Some(true));
    let u = st.user.unwrap();
    assert_eq!(u.username.as_deref(), Some("alice"));
    assert_eq!(u.groups.unwrap(), vec!["tenants", "system:authenticated"]);
    let bad = reviews
        .create(&PostParams::default(), &review("nope"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(bad.authenticated, Some(false));

    let sars: Api<SubjectAccessReview> = Api::all(client);
    let sar = |verb: &str, ns: &str| SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("alice".into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some("ironvisor.io".into()),
                resource: Some("virtualmachines".into()),
                namespace: Some(ns.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    for (verb, ns, allowed) in [
        ("get", "t1", true),
        ("get", "t2", false),
        ("delete", "t1", false),
    ] {
        let st = sars
            .create(&PostParams::default(), &sar(verb, ns))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(st.allowed, allowed, "{verb} in {ns}");
    }
    // Alice herself may not ask about others.
    let as_alice: Api<SubjectAccessReview> = Api::all(h.cluster.client_with_token(&token).unwrap());
    let e = as_alice
        .create(&PostParams::default(), &sar("get", "t1"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot create resource \"subjectaccessreviews\""),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_escalation_is_refused_unless_the_role_is_held_or_bind_is_granted() {
    let h = two_tenants().await;
    let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/rbac/user-roles.yaml");
    h.ok(&["apply", "-f", roles.to_str().unwrap()]).await;
    h.ok(&[
        "create",
        "rolebinding",
        "carol-admin",
        "-n",
        "t1",
        "--clusterrole",
        "admin",
        "--user",
        "carol",
    ])
    .await;
    let carol = h.kubeconfig_for("carol", &[]);
    let bind = |name: &'static str, role: &'static str| {
        [
            "create",
            "rolebinding",
            name,
            "-n",
            "t1",
            "--clusterrole",
            role,
            "--user",
            "dave",
        ]
    };
    let (ok, _, err) = as_user(&h, &carol, &bind("dave-view", "view")).await;
    assert!(ok, "admin holds everything view grants: {err}");
    let (ok, _, err) = as_user(&h, &carol, &bind("dave-root", "cluster-admin")).await;
    assert!(!ok);
    assert!(
        err.contains("rolebindings.rbac.authorization.k8s.io \"dave-root\" is forbidden: user \"carol\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:"),
        "{err}"
    );
    // The operator's pattern: `bind` on one ClusterRole by name is enough to bind it.
    let binder = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: binder\nrules:\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [rolebindings]\n  verbs: [create]\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [clusterroles]\n  verbs: [bind]\n  resourceNames: [ironvisor-admin]\n";
    h.kubectl_stdin(&["apply", "-f", "-"], Some(binder)).await;
    h.ok(&[
        "create",
        "clusterrolebinding",
        "op-binder",
        "--clusterrole",
        "binder",
        "--user",
        "op",
    ])
    .await;
    let op = h.kubeconfig_for("op", &[]);
    let as_op = |name: &'static str, role: &'static str| {
        [
            "create",
            "rolebinding",
            name,
            "-n",
            "t2",
            "--clusterrole",
            role,
            "--user",
            "erin",
        ]
    };
    let (ok, _, err) = as_user(&h, &op, &as_op("erin-admin", "ironvisor-admin")).await;
    assert!(ok, "{err}");
    let (ok, _, err) = as_user(&h, &op, &as_op("erin-edit", "edit")).await;
    assert!(
        !ok && err.contains("attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_survive_a_restart_on_the_same_data_dir() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        data_dir: Some(dir.path().to_path_buf()),
        anonymous: AnonymousAccess::Deny,
        ..Options::default()
    };
    let c = ironvisor_devcluster::DevCluster::start(opts.clone())
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.client().unwrap(), "default");
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some("bot".into());
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let token = c.service_account_token("default", "bot", None).unwrap();
    c.shutdown().await;
    let key = dir.path().join("service-account.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let c = ironvisor_devcluster::DevCluster::start(opts).await.unwrap();
    let reviews: Api<TokenReview> = Api::all(c.client().unwrap());
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            ..Default::default()
        },
        ..Default::default()
    };
    let st = reviews
        .create(&PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(
        st.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:default:bot")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_on_the_tls_port_holds_up_nobody() {
    let h = Harness::start().await;
    let tls = h.cluster.tls_url().unwrap();
    let addr = tls.trim_start_matches("https://").to_string();
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let alice = h.kubeconfig_for("alice", &[]);
    let started = std::time::Instant::now();
    let (ok, out, err) = as_user(
        &h,
        &alice,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "alice");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
