//! kubectl's generator verbs (`kubectl create namespace|secret|configmap|...`), which send
//! protobuf and prefer protobuf answers, against a running devcluster; kube-rs reads back.

mod common;

use common::Harness;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).expect("kubectl printed JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomers_first_commands_create_a_namespace_a_secret_and_a_configmap() {
    let h = Harness::start().await;
    assert_eq!(
        h.ok(&["create", "namespace", "demo"]).await,
        "namespace/demo created\n"
    );
    assert_eq!(
        h.ok(&[
            "create",
            "secret",
            "generic",
            "user-data",
            "-n",
            "demo",
            "--from-literal=user-data=#cloud-config\npassword: s3cret\n",
            "--from-literal=k=v"
        ])
        .await,
        "secret/user-data created\n"
    );
    assert_eq!(
        h.ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "demo",
            "--from-literal=k=v"
        ])
        .await,
        "configmap/settings created\n"
    );

    let secret = json_of(
        &h.ok(&[
            "get",
            "secret",
            "user-data",
            "-n",
            "demo",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await,
    );
    assert_eq!(
        secret["data"],
        json!({"k": "dg==", "user-data": "I2Nsb3VkLWNvbmZpZwpwYXNzd29yZDogczNjcmV0Cg=="}),
        "data is base64 as kube-apiserver shows it"
    );
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    assert_eq!(
        h.ok(&[
            "get",
            "namespace",
            "demo",
            "-o",
            "jsonpath={.status.phase} {.metadata.labels}"
        ])
        .await,
        r#"Active {"kubernetes.io/metadata.name":"demo"}"#
    );
    assert_eq!(
        h.ok(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data}"
        ])
        .await,
        r#"{"k":"v"}"#
    );

    let client = h.cluster.client().expect("client");
    let s = Api::<Secret>::namespaced(client.clone(), "demo")
        .get("user-data")
        .await
        .expect("kube-rs reads the secret");
    let data = s.data.expect("data");
    assert_eq!(data["k"].0, b"v");
    assert_eq!(data["user-data"].0, b"#cloud-config\npassword: s3cret\n");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "demo")
        .get("settings")
        .await
        .expect("kube-rs reads the configmap");
    assert_eq!(cm.data.expect("data")["k"], "v");
    let ns = Api::<Namespace>::all(client)
        .get("demo")
        .await
        .expect("namespace");
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protobuf_answer_to_create_matches_what_get_returns_in_json() {
    let h = Harness::start().await;
    // kubectl asks for protobuf first, so the created object comes back as protobuf and
    // kubectl prints it as JSON; `get` reads the stored object as JSON.
    let created = json_of(&h.ok(&["create", "namespace", "pb", "-o", "json"]).await);
    let got = json_of(&h.ok(&["get", "namespace", "pb", "-o", "json"]).await);
    assert_eq!(created, got);
    let created = json_of(
        &h.ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=a=b",
            "-o",
            "json",
        ])
        .await,
    );
    let got = json_of(&h.ok(&["get", "secret", "s", "-o", "json"]).await);
    assert_eq!(created, got);
    assert!(got["metadata"]["uid"].is_string() && got["metadata"]["creationTimestamp"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_roles_and_bindings_are_created_by_their_generators() {
    let h = Harness::start().await;
    let runs: [(&[&str], &str); 6] = [
        (
            &["create", "serviceaccount", "builder"],
            "serviceaccount/builder created\n",
        ),
        (
            &[
                "create",
                "role",
                "reader",
                "--verb=get,list",
                "--resource=configmaps,secrets",
            ],
            "role.rbac.authorization.k8s.io/reader created\n",
        ),
        (
            &[
                "create",
                "clusterrole",
                "ns-reader",
                "--verb=get",
                "--resource=namespaces",
            ],
            "clusterrole.rbac.authorization.k8s.io/ns-reader created\n",
        ),
        (
            &[
                "create",
                "rolebinding",
                "builder-reads",
                "--role=reader",
                "--serviceaccount=default:builder",
            ],
            "rolebinding.rbac.authorization.k8s.io/builder-reads created\n",
        ),
        (
            &[
                "create",
                "clusterrolebinding",
                "alice-ns",
                "--clusterrole=ns-reader",
                "--user=alice",
            ],
            "clusterrolebinding.rbac.authorization.k8s.io/alice-ns created\n",
        ),
        (
            &[
                "create",
                "secret",
                "docker-registry",
                "pull",
                "--docker-server=registry.local",
                "--docker-username=u",
                "--docker-password=p",
            ],
            "secret/pull created\n",
        ),
    ];
    for (args, out) in runs {
        assert_eq!(h.ok(args).await, out);
    }
    let c = h.cluster.client().expect("client");
    let sa = Api::<ServiceAccount>::namespaced(c.clone(), "default")
        .get("builder")
        .await
        .expect("service account");
    assert_eq!(sa.metadata.name.as_deref(), Some("builder"));
    let role = Api::<Role>::namespaced(c.clone(), "default")
        .get("reader")
        .await
        .expect("role");
    let rule = &role.rules.expect("rules")[0];
    assert_eq!(
        (
            rule.verbs.clone(),
            rule.resources.clone(),
            rule.api_groups.clone()
        ),
        (
            vec!["get".to_string(), "list".into()],
            Some(vec!["configmaps".to_string(), "secrets".into()]),
            Some(vec![String::new()])
        )
    );
    let cr = Api::<ClusterRole>::all(c.clone())
        .get("ns-reader")
        .await
        .expect("clusterrole");
    assert_eq!(
        cr.rules.expect("rules")[0].resources,
        Some(vec!["namespaces".to_string()])
    );
    let rb = Api::<RoleBinding>::namespaced(c.clone(), "default")
        .get("builder-reads")
        .await
        .expect("rolebinding");
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", "reader")
    );
    let subject = &rb.subjects.expect("subjects")[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "builder", Some("default"))
    );
    let crb = Api::<ClusterRoleBinding>::all(c.clone())
        .get("alice-ns")
        .await
        .expect("clusterrolebinding");
    assert_eq!(crb.subjects.expect("subjects")[0].name, "alice");
    let pull = Api::<Secret>::namespaced(c, "default")
        .get("pull")
        .await
        .expect("secret");
    assert_eq!(
        pull.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let cfg: Value = serde_json::from_slice(&pull.data.expect("data")[".dockerconfigjson"].0)
        .expect("docker config is JSON");
    assert_eq!(cfg["auths"]["registry.local"]["username"], "u");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generators_honour_dry_run_and_report_an_existing_object() {
    let h = Harness::start().await;
    assert_eq!(
        h.ok(&[
            "create",
            "configmap",
            "c",
            "--from-literal=k=v",
            "--dry-run=server"
        ])
        .await,
        "configmap/c created (server dry run)\n"
    );
    let out = h.kubectl(&["get", "configmap", "c"]).await;
    assert!(!out.status.success(), "a dry run stores nothing");
    h.ok(&["create", "configmap", "c", "--from-literal=k=v"])
        .await;
    let out = h
        .kubectl(&["create", "configmap", "c", "--from-literal=k=v"])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: failed to create configmap: configmaps \"c\" already exists\n"
    );
}
