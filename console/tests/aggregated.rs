//! The whole API path: kube-rs (as ivctl) → the devcluster's aggregator (RBAC, then the
//! front-proxy hop with its client certificate and X-Remote-* headers) → the console server
//! (front-proxy authentication, SubjectAccessReview) → an echo agent. Two users with
//! different tokens: each reaches only the consoles RBAC allows; the forbidden one gets 403
//! from the API.

mod support;

use std::time::Duration;

use base64::Engine as _;
use ivctl::vm::remote::{self, Kind, RemoteError};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;
use support::agent::EchoAgent;
use support::{ALICE, BOB, Env, NS};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Registers the console server as APIService v1.subresources.ironvisor.io and waits until
/// the aggregator calls it Available.
async fn register(env: &Env) {
    let port = env.server.addr.port();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "ironvisor-console", "namespace": NS},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "ironvisor-console-1", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": "ironvisor-console"}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
    let ar = ApiResource {
        group: "apiregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiregistration.k8s.io/v1".into(),
        kind: "APIService".into(),
        plural: "apiservices".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(env.client.clone(), &ar);
    let mut obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1.subresources.ironvisor.io"},
        "spec": {
            "group": "subresources.ironvisor.io", "version": "v1",
            "groupPriorityMinimum": 1000, "versionPriority": 15,
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&env.ca.pem),
            "service": {"namespace": NS, "name": "ironvisor-console", "port": 443}
        }
    }))
    .unwrap();
    obj.types = None;
    api.create(&PostParams::default(), &obj).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = api.get("v1.subresources.ironvisor.io").await.unwrap();
        let available = o.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Available" && c["status"] == "True");
        if available {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never Available: {:?}",
            o.data["status"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client of the devcluster's TLS port acting as the owner of `token`.
fn user(env: &Env, token: &str) -> kube::Client {
    let mut cfg = kube::Config::new(env.cluster.tls_url().unwrap().parse().unwrap());
    cfg.root_cert = Some(
        CertificateDer::pem_slice_iter(env.cluster.ca_pem().as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect(),
    );
    cfg.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_api_each_user_reaches_only_the_consoles_rbac_allows() {
    let env = Env::start().await;
    register(&env).await;
    let uid_a = env.vm("team-a", "web", "Running", "host-1").await;
    let agent = EchoAgent::start(
        &env.ca,
        &env.ca.leaf("hypervisor:host-1", &["host-1"]),
        &uid_a,
    )
    .await;
    env.host("host-1", &agent.addr.to_string(), true).await;
    env.vm("team-b", "db", "Running", "host-1").await;
    env.allow("alice", "team-a", &["console"], &[]).await;
    env.allow("bob", "team-b", &["console"], &[]).await;

    // alice, through the API server, to her VM's console and back.
    let conn = remote::open(&user(&env, ALICE), "team-a", "web", Kind::Serial)
        .await
        .expect("alice reaches team-a/web through the API");
    let (mut keyboard, input) = tokio::io::duplex(1024);
    let (output, mut screen) = tokio::io::duplex(1024);
    let session = tokio::spawn(remote::bridge(conn, input, output, Some(0x1d)));
    keyboard.write_all(b"hostname\r").await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.ends_with(b"hostname\r") {
        let n = tokio::time::timeout(support::WAIT, screen.read(&mut buf))
            .await
            .expect("the echo arrives")
            .unwrap();
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    keyboard.write_all(b"\x1d").await.unwrap();
    session.await.unwrap().unwrap();

    // The API refuses bob (and alice elsewhere) before anything reaches the console server.
    for (token, ns, name) in [(BOB, "team-a", "web"), (ALICE, "team-b", "db")] {
        match remote::open(&user(&env, token), ns, name, Kind::Serial).await {
            Err(RemoteError::Refused { code: 403, .. }) => {}
            Err(e) => panic!("{ns}/{name}: expected 403, got {e}"),
            Ok(_) => panic!("{ns}/{name} must be forbidden"),
        }
    }
    // The console server saw alice as the front proxy vouched for her.
    let client = env.client.clone();
    support::eventually("the Event names alice", || {
        let client = client.clone();
        async move {
            support::events(&client, "team-a", "ConsoleConnected")
                .await
                .iter()
                .any(|n| n.contains("user alice"))
        }
    })
    .await;
}
