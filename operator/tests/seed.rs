//! Seed copies against the devcluster, with the operator running as its ServiceAccount under
//! the real `manifests/rbac`: a placed VM's cloud-init Secret is copied into
//! `ironvisor-seeds`, follows changes of the Secret, and goes with the VM; a missing Secret
//! is reported on the VM; the operator cannot read Secrets where no Tenant owns the namespace.
//! The copy's values are sealed to the seed key the host published: only that host's secret
//! key opens them, and a host with no key yet gets no copy.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use crypto_box::SecretKey;
use crypto_box::aead::OsRng;

use common::{Env, Operator, eventually, fast_config, install_manifests};
use ironvisor_crds::seed;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const NS: &str = "acme-apps";

/// Host h1's seed key, as its agent would hold it.
static HOST_KEY: LazyLock<SecretKey> = LazyLock::new(|| SecretKey::generate(&mut OsRng));

/// Publish `key`'s public half as host `node`'s seed key, as its agent does.
async fn publish_key(env: &Env, node: &str, key: &SecretKey) {
    let public = base64::engine::general_purpose::STANDARD.encode(key.public_key().as_bytes());
    let body = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": node}, "status": {"seedKey": public}});
    env.hypervisors()
        .patch_status(
            node,
            &PatchParams::apply("test-seed-key").force(),
            &Patch::Apply(body),
        )
        .await
        .expect("seed key published");
}

/// The environment, the manifests installed, a host (with its seed key), a tenant owning
/// [`NS`], and a client acting as the operator's ServiceAccount.
async fn setup(dir: &std::path::Path) -> (Env, Client, tokio::task::JoinHandle<()>) {
    let env = Env::start().await;
    install_manifests(&env, dir);
    env.host("h1", 16, "64Gi", json!({})).await;
    publish_key(&env, "h1", &HOST_KEY).await;
    let beats = env.keep_alive(&["h1"]);
    env.tenant("acme", &[NS], None).await;
    env.quota("acme-q", "acme", json!({"vcpus": 8})).await;
    let token = env
        .cluster
        .service_account_token("ironvisor-system", "ironvisor-operator", None)
        .expect("the operator's ServiceAccount exists");
    let op = env.cluster.client_with_token(&token).expect("client");
    (env, op, beats)
}

async fn put_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let body = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns}, "stringData": {key: value}});
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(body),
    )
    .await
    .expect("secret written");
}

fn with_secret(name: &str) -> serde_json::Value {
    json!({"cloudInit": {"userDataSecretRef": {"name": name}}})
}

async fn uid_of(env: &Env, name: &str) -> String {
    env.vms(NS)
        .get(name)
        .await
        .ok()
        .and_then(|v| v.uid())
        .expect("the VM exists with a uid")
}

/// The copy's user data, opened with host h1's key (`None`: no copy, or not for that key).
async fn copy_value(copies: &Api<Secret>, uid: &str) -> Option<String> {
    let s = copies.get_opt(&seed::secret_name(uid)).await.ok()??;
    let v = s.data?.get("userData")?.0.clone();
    let opened = HOST_KEY.unseal(&v).ok()?;
    Some(String::from_utf8_lossy(&opened).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_vms_secret_is_copied_follows_changes_and_goes_with_the_vm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (env, op_client, beats) = setup(dir.path()).await;
    put_secret(
        &env.client,
        NS,
        "init",
        "userdata",
        "#cloud-config\nmarker: one\n",
    )
    .await;
    // A long resync: a change of the Secret must arrive through the watch, not a resync.
    let cfg = ironvisor_operator::run::RunConfig {
        resync: Duration::from_secs(120),
        ..fast_config("op-1")
    };
    let op = Operator::start(op_client, cfg);
    env.vm(NS, "db", 1, "1Gi", with_secret("init")).await;
    let uid = uid_of(&env, "db").await;
    let copies: Api<Secret> = Api::namespaced(env.client.clone(), seed::NAMESPACE);
    eventually("the copy holds the Secret's user data", || async {
        copy_value(&copies, &uid).await.as_deref() == Some("#cloud-config\nmarker: one\n")
    })
    .await;
    let copy = copies.get(&seed::secret_name(&uid)).await.expect("copy");
    assert_eq!(copy.type_.as_deref(), Some("ironvisor.io/seed"));
    assert_eq!(copy.labels()["ironvisor.io/vm-uid"], uid);
    assert_eq!(copy.labels()["ironvisor.io/vm-namespace"], NS);
    assert_eq!(copy.labels()["ironvisor.io/node"], "h1");
    assert_eq!(copy.annotations()["ironvisor.io/user-data-secret"], "init");
    // Sealed: not in the clear, and another host's key cannot open it.
    let raw = copy.data.as_ref().unwrap()["userData"].0.clone();
    assert!(!raw.windows(10).any(|w| w == b"marker: on"));
    assert!(SecretKey::generate(&mut OsRng).unseal(&raw).is_err());
    assert_eq!(
        copy.data
            .as_ref()
            .map(|d| d.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["userData".to_string()]),
        "exactly the referenced value"
    );
    let (status, reason, _) = env
        .condition(NS, "db", "SeedReady")
        .await
        .expect("SeedReady");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Copied"));

    put_secret(
        &env.client,
        NS,
        "init",
        "userdata",
        "#cloud-config\nmarker: two\n",
    )
    .await;
    eventually("the copy follows the Secret", || async {
        copy_value(&copies, &uid).await.as_deref() == Some("#cloud-config\nmarker: two\n")
    })
    .await;

    env.vms(NS)
        .delete("db", &DeleteParams::default())
        .await
        .expect("VM deleted");
    eventually("the copy goes with the VM", || async {
        matches!(copies.get_opt(&seed::secret_name(&uid)).await, Ok(None))
    })
    .await;
    op.stop().await;
    beats.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_on_the_vm_and_copied_once_it_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (env, op_client, beats) = setup(dir.path()).await;
    let op = Operator::start(op_client, fast_config("op-1"));
    env.vm(NS, "web", 1, "1Gi", with_secret("absent")).await;
    eventually("SeedReady=False SecretNotFound", || async {
        env.condition(NS, "web", "SeedReady")
            .await
            .is_some_and(|(s, r, _)| s == "False" && r == "SecretNotFound")
    })
    .await;
    let (_, _, message) = env
        .condition(NS, "web", "SeedReady")
        .await
        .expect("condition");
    assert!(
        message.contains("Secret acme-apps/absent") && message.contains("\"userdata\""),
        "names namespace, name and key: {message}"
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), NS);
    eventually("a Warning Event SecretNotFound", || async {
        events.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some("SecretNotFound")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
            })
        })
    })
    .await;
    let uid = uid_of(&env, "web").await;
    put_secret(
        &env.client,
        NS,
        "absent",
        "userData",
        "#cloud-config\nlate\n",
    )
    .await;
    let copies: Api<Secret> = Api::namespaced(env.client.clone(), seed::NAMESPACE);
    eventually("copied once the Secret exists", || async {
        copy_value(&copies, &uid).await.as_deref() == Some("#cloud-config\nlate\n")
    })
    .await;
    eventually("SeedReady=True Copied", || async {
        env.condition(NS, "web", "SeedReady")
            .await
            .is_some_and(|(s, r, _)| s == "True" && r == "Copied")
    })
    .await;
    op.stop().await;
    beats.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_a_seed_key_gets_no_copy_until_it_publishes_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (env, op_client, beats) = setup(dir.path()).await;
    env.host("h2", 16, "64Gi", json!({})).await;
    let beats2 = env.keep_alive(&["h2"]);
    put_secret(&env.client, NS, "init", "userdata", "#cloud-config\n").await;
    let op = Operator::start(op_client, fast_config("op-1"));
    env.vm(
        NS,
        "pinned",
        1,
        "1Gi",
        json!({"nodeName": "h2",
        "cloudInit": {"userDataSecretRef": {"name": "init"}}}),
    )
    .await;
    eventually("SeedReady=False WaitingForHostKey", || async {
        env.condition(NS, "pinned", "SeedReady")
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == "WaitingForHostKey" && m.contains("h2"))
    })
    .await;
    let uid = uid_of(&env, "pinned").await;
    let copies: Api<Secret> = Api::namespaced(env.client.clone(), seed::NAMESPACE);
    assert!(
        copies
            .get_opt(&seed::secret_name(&uid))
            .await
            .unwrap()
            .is_none()
    );
    let h2_key = SecretKey::generate(&mut OsRng);
    publish_key(&env, "h2", &h2_key).await;
    eventually("copied, sealed to h2's key", || async {
        let Ok(Some(c)) = copies.get_opt(&seed::secret_name(&uid)).await else {
            return false;
        };
        let v = c.data.unwrap_or_default()["userData"].0.clone();
        h2_key.unseal(&v).is_ok_and(|p| p == b"#cloud-config\n") && HOST_KEY.unseal(&v).is_err()
    })
    .await;
    op.stop().await;
    beats.abort();
    beats2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reads_secrets_only_in_tenant_namespaces_and_collects_orphan_copies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (env, op_client, beats) = setup(dir.path()).await;
    env.namespace("no-tenant").await;
    put_secret(&env.client, "no-tenant", "keys", "userdata", "private").await;
    put_secret(&env.client, NS, "init", "userdata", "#cloud-config\n").await;
    // A copy whose VM never existed (left by a deletion no replica saw).
    let orphan = seed::secret_name("00000000-dead-beef-0000-000000000000");
    let body: Secret = serde_json::from_value(json!({
        "metadata": {"name": orphan, "namespace": seed::NAMESPACE,
            "labels": {"ironvisor.io/vm-uid": "00000000-dead-beef-0000-000000000000",
                       "ironvisor.io/vm-namespace": NS},
            "annotations": {"ironvisor.io/vm-name": "gone"}},
        "type": "ironvisor.io/seed", "stringData": {"userData": "x"}}))
    .expect("secret");
    let copies: Api<Secret> = Api::namespaced(env.client.clone(), seed::NAMESPACE);
    copies
        .create(&PostParams::default(), &body)
        .await
        .expect("orphan created");
    let op = Operator::start(op_client.clone(), fast_config("op-1"));

    // The tenant controller binds the operator to the Secret reader in the tenant's namespace.
    let own: Api<Secret> = Api::namespaced(op_client.clone(), NS);
    eventually(
        "the operator may read Secrets in the tenant namespace",
        || async { own.get("init").await.is_ok() },
    )
    .await;
    let forbidden =
        |r: Result<Secret, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let other: Api<Secret> = Api::namespaced(op_client.clone(), "no-tenant");
    assert!(
        forbidden(other.get("keys").await),
        "no Tenant owns no-tenant"
    );
    let all: Api<Secret> = Api::all(op_client.clone());
    assert!(
        matches!(all.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403),
        "no cluster-wide Secret list"
    );
    eventually("the orphan copy is collected", || async {
        matches!(copies.get_opt(&orphan).await, Ok(None))
    })
    .await;
    op.stop().await;
    beats.abort();
}
