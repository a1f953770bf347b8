//! The console signer against the devcluster, with the operator running as its
//! ServiceAccount under the real `manifests/rbac`: it makes the CA, publishes its
//! certificate, issues the console server's certificate, signs a host's own request into
//! the Hypervisor's status, and refuses a host asking for another host's name (Event and
//! condition, no certificate).

mod common;

use common::{Env, Operator, eventually, fast_config, install_manifests};
use ironvisor_operator::console::controller::{CA_CONFIGMAP, CA_SECRET, CONSOLE_TLS_SECRET};
use ironvisor_operator::console::sign;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

const NS: &str = "ironvisor-system";

/// A P-256 request with common name `cn` and `names`, as an agent makes it.
fn request(cn: &str, names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

async fn publish_endpoint(env: &Env, host: &str, address: &str, csr: &str) {
    let body = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": host},
        "status": {"consoleEndpoint": {"address": address, "csr": csr}}});
    env.hypervisors()
        .patch_status(
            host,
            &PatchParams::apply(&format!("ironvisor-agent-console/{host}")).force(),
            &Patch::Apply(body),
        )
        .await
        .expect("endpoint published");
}

fn text(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_keeps_the_console_ca_and_signs_only_a_hosts_own_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = Env::start().await;
    install_manifests(&env, dir.path());
    env.host("h1", 8, "16Gi", json!({})).await;
    env.host("h2", 8, "16Gi", json!({})).await;
    let good = request("hypervisor:h1", &["h1", "127.0.0.1"]);
    publish_endpoint(&env, "h1", "127.0.0.1:9443", &good).await;
    let hostile = request("hypervisor:h1", &["h2"]);
    publish_endpoint(&env, "h2", "h2:9443", &hostile).await;

    let token = env
        .cluster
        .service_account_token(NS, "ironvisor-operator", None)
        .expect("the operator's ServiceAccount exists");
    let op_client = env.cluster.client_with_token(&token).expect("client");
    let cfg = ironvisor_operator::run::RunConfig {
        console_period: Duration::from_millis(500),
        ..fast_config("op-1")
    };
    let op = Operator::start(op_client, cfg);

    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    let hvs = env.hypervisors();
    eventually("h1's console certificate is signed", || async {
        hvs.get("h1")
            .await
            .ok()
            .and_then(|h| h.status?.console_certificate)
            .is_some()
    })
    .await;

    let ca = secrets.get(CA_SECRET).await.expect("the CA Secret exists");
    let ca_pem = text(&ca, "tls.crt");
    assert!(text(&ca, "tls.key").contains("PRIVATE KEY"));
    let published = cms
        .get(CA_CONFIGMAP)
        .await
        .expect("the CA ConfigMap exists");
    assert_eq!(
        published.data.unwrap_or_default().get("ca.crt"),
        Some(&ca_pem),
        "the ConfigMap publishes the CA certificate"
    );
    eventually("the console server's certificate is issued", || async {
        secrets
            .get_opt(CONSOLE_TLS_SECRET)
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    let tls = secrets.get(CONSOLE_TLS_SECRET).await.unwrap();
    assert_eq!(text(&tls, "ca.crt"), ca_pem);
    assert!(sign::issued_by(&text(&tls, "tls.crt"), &ca_pem));
    assert!(!text(&tls, "tls.key").is_empty());

    let cert = hvs.get("h1").await.unwrap().status.unwrap();
    let cert = cert.console_certificate.unwrap();
    assert_eq!(Some(cert.csr_sha256.clone()), sign::csr_sha256(&good));
    assert!(sign::issued_by(&cert.certificate, &ca_pem));
    assert!(cert.not_after.is_some());

    // h2 asked for h1's name: refused, said on the Hypervisor, nothing signed.
    eventually("h2's refusal is reported", || async {
        hvs.get("h2")
            .await
            .ok()
            .and_then(|h| h.status)
            .is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "ConsoleCertificateIssued"
                        && c.status == "False"
                        && c.reason == "RequestRefused"
                        && c.message.contains("hypervisor:h2")
                })
            })
    })
    .await;
    let h2 = hvs.get("h2").await.unwrap().status.unwrap();
    assert!(h2.console_certificate.is_none());
    let events: Api<Event> = Api::all(env.client.clone());
    eventually("a Warning Event names the refusal", || async {
        events
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items.iter().any(|e| {
                    e.reason.as_deref() == Some("ConsoleRequestRefused")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("h2")
                })
            })
            .unwrap_or(false)
    })
    .await;

    // A new request from h1 (a new key) is signed anew.
    let renewed = request("hypervisor:h1", &["h1"]);
    publish_endpoint(&env, "h1", "127.0.0.1:9443", &renewed).await;
    let want = sign::csr_sha256(&renewed);
    eventually("h1's new request is signed", || async {
        hvs.get("h1")
            .await
            .ok()
            .and_then(|h| h.status?.console_certificate)
            .map(|c| c.csr_sha256)
            == want
    })
    .await;
    assert!(op.metrics.console.issued.with_label_values(&["host"]).get() >= 2);
    assert!(
        op.metrics
            .console
            .refused
            .with_label_values(&["common_name"])
            .get()
            >= 1
    );
    op.stop().await;
}
