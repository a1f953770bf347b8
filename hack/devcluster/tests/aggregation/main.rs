//! API aggregation against the real kubectl and a real TLS backend: an APIService + Service +
//! EndpointSlice route `/apis/test.ironvisor.io/v1` to the backend; discovery, RBAC before
//! proxying, the front-proxy identity, impersonation, WebSocket upgrades, availability and
//! hostile paths and headers.

mod backend;
#[path = "../common/mod.rs"]
mod common;

use backend::{Backend, GROUP, VERSION};
use base64::Engine;
use common::Harness;
use ironvisor_devcluster::{AnonymousAccess, Options};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const NS: &str = "aggregation";
const SERVICE: &str = "test-api";
const APISERVICE: &str = "v1.test.ironvisor.io";

/// RBAC: alice and group g1 may get things and their console in t1; nothing else.
const ALICE: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: things\n  namespace: t1\nrules:\n- apiGroups: [test.ironvisor.io]\n  resources: [things, things/console]\n  verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: alice-things\n  namespace: t1\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: things\nsubjects:\n- kind: User\n  name: alice\n- kind: Group\n  name: g1\n";

struct Setup {
    h: Harness,
    backend: Backend,
}

/// The front-proxy CA and allowed names from the published ConfigMap.
async fn trust(h: &Harness) -> (String, Vec<String>) {
    let out = h
        .ok(&[
            "get",
            "configmap",
            "extension-apiserver-authentication",
            "-n",
            "kube-system",
            "-o",
            "json",
        ])
        .await;
    let cm: Value = serde_json::from_str(&out).unwrap();
    let ca = cm["data"]["requestheader-client-ca-file"]
        .as_str()
        .unwrap()
        .to_string();
    let names: Vec<String> =
        serde_json::from_str(cm["data"]["requestheader-allowed-names"].as_str().unwrap()).unwrap();
    (ca, names)
}

fn manifests(backend: &Backend) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(&backend.ca_pem);
    let port = backend.addr.port();
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: {SERVICE}\n  namespace: {NS}\nspec:\n  ports:\n  - name: https\n    port: 443\n    targetPort: {port}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {SERVICE}-1\n  namespace: {NS}\n  labels:\n    kubernetes.io/service-name: {SERVICE}\naddressType: IPv4\nports:\n- name: https\n  port: {port}\nendpoints:\n- addresses: [127.0.0.1]\n  conditions:\n    ready: true\n---\n\
         apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: {APISERVICE}\nspec:\n  group: {GROUP}\n  version: {VERSION}\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n  caBundle: {ca}\n  service:\n    namespace: {NS}\n    name: {SERVICE}\n    port: 443\n"
    )
}

/// A devcluster (tokens required) with the backend registered and Available.
async fn setup() -> Setup {
    let h = Harness::start_with(Options {
        anonymous: AnonymousAccess::Deny,
        ..Options::default()
    })
    .await;
    let (ca, names) = trust(&h).await;
    let backend = Backend::start(&format!("{SERVICE}.{NS}.svc"), &ca, names).await;
    h.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests(&backend)))
        .await;
    h.ok(&["create", "namespace", "t1"]).await;
    h.kubectl_stdin(&["apply", "-f", "-"], Some(ALICE)).await;
    wait_available(&h, "True", "Passed").await;
    Setup { h, backend }
}

/// Waits until the APIService's Available condition has `status` (and `reason`, unless
/// empty); returns the reason.
async fn wait_available(h: &Harness, status: &str, reason: &str) -> String {
    let jp = "-o=jsonpath={.status.conditions[?(@.type==\"Available\")].status}/{.status.conditions[?(@.type==\"Available\")].reason}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = h.ok(&["get", "apiservice", APISERVICE, jp]).await;
        if let Some((s, r)) = out.split_once('/')
            && s == status
            && (reason.is_empty() || r == reason)
        {
            return r.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "APIService never became {status}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_as(h: &Harness, kc: &Path, args: &[&str]) -> (bool, String, String) {
    let out = h.kubectl_as(kc, args, None).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(rest: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregated_api_is_discovered_listed_and_reached_through_kubectl() {
    let Setup { h, backend } = setup().await;
    let table = common::mask_ages(&h.ok(&["get", "apiservice", APISERVICE]).await);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "SERVICE", "AVAILABLE", "AGE"]);
    assert_eq!(
        lines[1],
        [APISERVICE, "aggregation/test-api", "True", "<age>"]
    );
    let groups: Value = serde_json::from_str(&h.ok(&["get", "--raw", "/apis"]).await).unwrap();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == GROUP),
        "{groups}"
    );
    let list: Value = serde_json::from_str(&h.ok(&["get", "--raw", &path("")]).await).unwrap();
    assert_eq!(list["resources"][0]["name"], "things");
    let names = h
        .ok(&["api-resources", "--api-group", GROUP, "-o", "name"])
        .await;
    assert_eq!(names.trim(), "things.test.ironvisor.io");
    // The availability probe asks as nobody; kubectl's discovery as the admin.
    let users = backend.users_of(&path(""));
    assert!(users.contains(&None), "{users:?}");
    assert!(users.contains(&Some("admin".to_string())), "{users:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_sees_the_authorised_caller_never_its_credentials_or_forged_headers() {
    let Setup { h, backend } = setup().await;
    let alice = h.kubeconfig_for("alice", &["tenants"]);
    let (ok, out, err) = run_as(
        &h,
        &alice,
        &["get", "--raw", &path("/namespaces/t1/things/x")],
    )
    .await;
    assert!(ok, "{err}");
    let echo: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(echo["user"], "alice");
    assert_eq!(
        echo["groups"],
        serde_json::json!(["tenants", "system:authenticated"])
    );
    assert_eq!(echo["authorization"], false);
    assert_eq!(echo["clientCN"], "front-proxy-client");

    // A request RBAC refuses is answered by the devcluster and never reaches the backend.
    let (ok, _, err) = run_as(
        &h,
        &alice,
        &["get", "--raw", &path("/namespaces/t2/things/secret-x")],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("Forbidden") && err.contains("cannot get resource \"things\" in API group \"test.ironvisor.io\" in the namespace \"t2\""), "{err}");
    assert!(!backend.all_paths().iter().any(|p| p.contains("secret-x")));

    // Forged front-proxy headers from the caller are dropped; the devcluster's identity wins.
    let client = h.cluster.client_for("alice", &["tenants"]).unwrap();
    let req = axum::http::Request::get(path("/namespaces/t1/things/forged"))
        .header("X-Remote-User", "admin")
        .header("X-Remote-Group", "system:masters")
        .header("X-Remote-Extra-Scopes", "all")
        .body(vec![])
        .unwrap();
    let echo: Value = serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    assert_eq!(echo["user"], "alice");
    assert_eq!(
        echo["groups"],
        serde_json::json!(["tenants", "system:authenticated"])
    );
    assert_eq!(echo["extra"], serde_json::json!({}));

    // Impersonation proxies as the impersonated user (the admin may impersonate).
    let out = h
        .ok(&[
            "get",
            "--raw",
            &path("/namespaces/t1/things/y"),
            "--as",
            "carol",
            "--as-group",
            "g1",
        ])
        .await;
    let echo: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(echo["user"], "carol");
    assert_eq!(
        echo["groups"],
        serde_json::json!(["g1", "system:authenticated"])
    );
    assert_eq!(echo["impersonate"], false);
    // ... and the impersonated user is the one RBAC judges.
    let out = h
        .kubectl(&[
            "get",
            "--raw",
            &path("/namespaces/t1/things/z"),
            "--as",
            "mallory",
        ])
        .await;
    assert!(!out.status.success());
    assert!(!backend.all_paths().iter().any(|p| p.ends_with("/things/z")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_to_the_backend_and_answers_stream_back() {
    let Setup {
        h,
        backend: _backend,
    } = setup().await;
    let client = h.cluster.client().unwrap();
    let body = "x".repeat(256 * 1024);
    let req = axum::http::Request::post(path("/namespaces/t1/things?dryRun=All"))
        .header("Content-Type", "application/json")
        .body(body.clone().into_bytes())
        .unwrap();
    let echo: Value = serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], path("/namespaces/t1/things?dryRun=All"));
    assert_eq!(echo["body"].as_str().map(str::len), Some(body.len()));
    assert_eq!(echo["user"], "admin");
}

mod websocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_round_trips_through_the_proxy_as_the_caller() {
    let Setup {
        h,
        backend: _backend,
    } = setup().await;
    let token = h.cluster.token_for("alice", &["tenants"]);
    let url = h.cluster.tls_url().unwrap();
    let mut ws = websocket::connect(
        &url,
        h.cluster.ca_pem(),
        &token,
        &path("/namespaces/t1/things/x/console"),
    )
    .await
    .expect("upgrade through the devcluster");
    assert_eq!(websocket::next_text(&mut ws).await, "hello alice");
    for payload in [vec![1u8, 2, 3], vec![0u8; 70_000]] {
        assert_eq!(
            websocket::echo_binary(&mut ws, payload.clone()).await,
            payload
        );
    }
    // Without `get` on things/console the upgrade is refused by the devcluster.
    let bob = h.cluster.token_for("bob", &[]);
    let err = websocket::connect(
        &url,
        h.cluster.ca_pem(),
        &bob,
        &path("/namespaces/t1/things/x/console"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("403"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_makes_the_apiservice_unavailable_and_requests_503() {
    let Setup { h, backend } = setup().await;
    h.ok(&["delete", "endpointslice", &format!("{SERVICE}-1"), "-n", NS])
        .await;
    wait_available(&h, "False", "MissingEndpoints").await;
    let table = h.ok(&["get", "apiservice", APISERVICE]).await;
    assert!(table.contains("False (MissingEndpoints)"), "{table}");
    let out = h
        .kubectl(&["get", "--raw", &path("/namespaces/t1/things/x")])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ServiceUnavailable"),
        "{err}"
    );

    // Endpoints back, but the server is down.
    h.kubectl_stdin(&["apply", "-f", "-"], Some(&manifests(&backend)))
        .await;
    wait_available(&h, "True", "Passed").await;
    drop(backend);
    wait_available(&h, "False", "FailedDiscoveryCheck").await;
    let out = h
        .kubectl(&["get", "--raw", &path("/namespaces/t1/things/x")])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ServiceUnavailable"),
        "{err}"
    );

    let msg = h
        .ok(&[
            "get",
            "apiservice",
            APISERVICE,
            "-o=jsonpath={.status.conditions[0].message}",
        ])
        .await;
    assert!(
        msg.starts_with("failing or missing response from https://127.0.0.1:"),
        "{msg}"
    );
    h.ok(&["delete", "service", SERVICE, "-n", NS]).await;
    wait_available(&h, "False", "ServiceNotFound").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_servers_read_the_trust_configmap_through_the_bootstrap_role() {
    let h = Harness::start_with(Options {
        anonymous: AnonymousAccess::Deny,
        ..Options::default()
    })
    .await;
    h.ok(&["create", "namespace", "ironvisor-system"]).await;
    h.ok(&[
        "create",
        "serviceaccount",
        "console",
        "-n",
        "ironvisor-system",
    ])
    .await;
    let sa = "system:serviceaccount:ironvisor-system:console";
    let cm = [
        "get",
        "configmap",
        "extension-apiserver-authentication",
        "-n",
        "kube-system",
        "--as",
        sa,
    ];
    assert!(!h.kubectl(&cm).await.status.success());
    h.ok(&[
        "create",
        "rolebinding",
        "console-auth-reader",
        "-n",
        "kube-system",
        "--role",
        "extension-apiserver-authentication-reader",
        "--serviceaccount",
        "ironvisor-system:console",
    ])
    .await;
    let names = h
        .ok(&[
            &cm[..],
            &["-o", "jsonpath={.data.requestheader-allowed-names}"],
        ]
        .concat())
        .await;
    assert_eq!(names, "[\"front-proxy-client\"]");
    let other = [
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "kube-system",
        "--as",
        sa,
    ];
    let out = h.kubectl(&other).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"));
    let keys = h
        .ok(&[
            "get",
            "configmap",
            "extension-apiserver-authentication",
            "-n",
            "kube-system",
            "-o",
            "go-template={{range $k, $v := .data}}{{$k}} {{end}}",
        ])
        .await;
    assert_eq!(
        keys.trim(),
        "client-ca-file requestheader-allowed-names requestheader-client-ca-file requestheader-extra-headers-prefix requestheader-group-headers requestheader-username-headers"
    );
}

mod hostile;
