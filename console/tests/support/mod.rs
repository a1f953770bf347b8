//! Shared by the console server's tests: a devcluster with the CRDs and two users (alice,
//! bob) with tokens, the console server started in-process with an operator-style
//! certificate, and a WebSocket client that shows refusals as `Status` objects.
#![allow(dead_code)]

pub mod agent;
pub mod pki;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ironvisor_console::{Options, Running};
use ironvisor_crds::console::{ConsoleCertificate, ConsoleEndpoint};
use ironvisor_crds::{Hypervisor, VirtualMachine};
use ironvisor_devcluster::{DevCluster, Options as ClusterOptions};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub use pki::{Ca, Leaf};

pub const ALICE: &str = "alice-token-0123456789";
pub const BOB: &str = "bob-token-0123456789";
pub const NS: &str = "ironvisor-system";

/// How long an expected state may take.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Env {
    pub cluster: DevCluster,
    pub client: kube::Client,
    pub ca: Ca,
    pub server: Running,
    _dir: tempfile::TempDir,
}

pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create<K>(api: &Api<K>, obj: Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let o: K = serde_json::from_value(obj).unwrap();
    match api.create(&PostParams::default(), &o).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create: {e}"),
    }
}

impl Env {
    pub async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "off".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.csv");
        let mut f = std::fs::File::create(&tokens).unwrap();
        writeln!(f, "{ALICE},alice,uid-alice,\"devs\"").unwrap();
        writeln!(f, "{BOB},bob,uid-bob,\"ops\"").unwrap();
        let cluster = DevCluster::start(ClusterOptions {
            token_file: Some(tokens),
            ..Default::default()
        })
        .await
        .expect("devcluster starts");
        let client = cluster.client().expect("client");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in ironvisor_crds::crdgen::all() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let vms: Api<VirtualMachine> = Api::all(client.clone());
        eventually("the CRDs serve", || async {
            vms.list(&ListParams::default()).await.is_ok()
        })
        .await;
        for ns in [NS, "team-a", "team-b"] {
            create(
                &Api::<Namespace>::all(client.clone()),
                json!({"metadata": {"name": ns}}),
            )
            .await;
        }
        let ca = Ca::new("ironvisor-console-ca");
        let leaf = ca.leaf(
            "ironvisor-console",
            &[
                "localhost",
                "127.0.0.1",
                "ironvisor-console.ironvisor-system.svc",
            ],
        );
        put_tls_secret(&client, &ca, &leaf).await;
        // Token-less requests to the devcluster's plain port act as admin.
        let config = kube::Config::new(cluster.url().parse().unwrap());
        let server = ironvisor_console::start(
            config,
            Options {
                listen: "127.0.0.1:0".parse().unwrap(),
                metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
                namespace: NS.into(),
                instance: "test".into(),
            },
        )
        .await
        .expect("console server starts");
        tokio::time::timeout(WAIT, server.ready())
            .await
            .expect("the server loads its certificate");
        Self {
            cluster,
            client,
            ca,
            server,
            _dir: dir,
        }
    }

    /// `user` may open `subresources` of VMs in `ns` (all VMs, or `names`).
    pub async fn allow(&self, user: &str, ns: &str, subresources: &[&str], names: &[&str]) {
        let role = format!("console-{user}");
        let mut rule = json!({
            "apiGroups": ["subresources.ironvisor.io"],
            "resources": subresources.iter().map(|s| format!("virtualmachines/{s}")).collect::<Vec<_>>(),
            "verbs": ["get"],
        });
        if !names.is_empty() {
            rule["resourceNames"] = json!(names);
        }
        let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(self.client.clone(), ns);
        create(&roles, json!({"metadata": {"name": role}, "rules": [rule]})).await;
        let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
            Api::namespaced(self.client.clone(), ns);
        create(
            &rbs,
            json!({"metadata": {"name": role},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        )
        .await;
    }

    /// A VM in `phase` on `node`; returns its uid.
    pub async fn vm(&self, ns: &str, name: &str, phase: &str, node: &str) -> String {
        let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), ns);
        create(
            &api,
            json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}}}),
        )
        .await;
        self.vm_status(ns, name, phase, node).await;
        api.get(name).await.unwrap().metadata.uid.unwrap()
    }

    pub async fn vm_status(&self, ns: &str, name: &str, phase: &str, node: &str) {
        let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), ns);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "nodeName": node}})),
        )
        .await
        .unwrap();
    }

    /// Host `node` with its console endpoint at `address` (certificate signed when `signed`).
    pub async fn host(&self, node: &str, address: &str, signed: bool) {
        let api: Api<Hypervisor> = Api::all(self.client.clone());
        create(
            &api,
            json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
                   "metadata": {"name": node}, "spec": {}}),
        )
        .await;
        let mut status = json!({"consoleEndpoint": ConsoleEndpoint {
            address: address.into(), csr: "csr".into() }});
        if signed {
            status["consoleCertificate"] = json!(ConsoleCertificate {
                certificate: "cert".into(),
                csr_sha256: "00".into(),
                not_after: None,
            });
        }
        api.patch_status(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    }

    /// `wss://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("wss://localhost:{}{path}", self.server.addr.port())
    }

    /// The console API path of a VM.
    pub fn path(ns: &str, name: &str, sub: &str) -> String {
        format!("/apis/subresources.ironvisor.io/v1/namespaces/{ns}/virtualmachines/{name}/{sub}")
    }
}

/// Writes Secret `ironvisor-console-tls` as the operator does.
pub async fn put_tls_secret(client: &kube::Client, ca: &Ca, leaf: &Leaf) {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    let data = |s: &str| ByteString(s.as_bytes().to_vec());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("ironvisor-console-tls".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("tls.crt".to_owned(), data(&leaf.cert)),
                ("tls.key".to_owned(), data(&leaf.key)),
                ("ca.crt".to_owned(), data(&ca.pem)),
            ]
            .into(),
        ),
        type_: Some("kubernetes.io/tls".into()),
        ..Default::default()
    };
    api.patch(
        "ironvisor-console-tls",
        &PatchParams::apply("test").force(),
        &Patch::Apply(secret),
    )
    .await
    .unwrap();
}

/// Writes ConfigMap kube-system/extension-apiserver-authentication with `front_proxy_ca`.
pub async fn put_front_proxy(client: &kube::Client, front_proxy_ca: &Ca) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": {
            "requestheader-client-ca-file": front_proxy_ca.pem,
            "requestheader-allowed-names": "[\"front-proxy-client\"]",
            "requestheader-username-headers": "[\"X-Remote-User\"]",
            "requestheader-group-headers": "[\"X-Remote-Group\"]",
            "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
        }
    }))
    .unwrap();
    api.patch(
        "extension-apiserver-authentication",
        &PatchParams::apply("test").force(),
        &Patch::Apply(cm),
    )
    .await
    .unwrap();
}

pub type Ws = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// How a test connects.
#[derive(Default)]
pub struct Dial<'a> {
    /// A bearer token, in the subprotocol (as browsers send it).
    pub token: Option<&'a str>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// A client certificate.
    pub cert: Option<&'a Leaf>,
}

fn client_tls(ca: &Ca, cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match cert {
        Some(l) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(l.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(l.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// Opens `path` on the console server; a refusal comes back as (code, Status), a refused
/// TLS handshake as code 0.
pub async fn connect(env: &Env, path: &str, d: Dial<'_>) -> Result<Ws, (u16, Value)> {
    use base64::Engine as _;
    let tcp = tokio::net::TcpStream::connect(env.server.addr)
        .await
        .unwrap();
    // A refused handshake (a client certificate the server does not trust) is code 0.
    let tls = tokio_rustls::TlsConnector::from(client_tls(&env.ca, d.cert))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| (0, json!({"tls": e.to_string()})))?;
    let mut req = env.url(path).into_client_request().unwrap();
    let mut protocols = vec!["binary.ironvisor.io".to_owned()];
    if let Some(t) = d.token {
        protocols.push(format!(
            "base64url.bearer.authorization.k8s.io.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
        ));
    }
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&protocols.join(", ")).unwrap(),
    );
    for (k, v) in d.headers {
        req.headers_mut()
            .append(k, HeaderValue::from_str(&v).unwrap());
    }
    match tokio_tungstenite::client_async(req, tls).await {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()["Sec-WebSocket-Protocol"],
                "binary.ironvisor.io"
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().clone().unwrap_or_default();
            let status = serde_json::from_slice(&body)
                .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&body)}));
            Err((r.status().as_u16(), status))
        }
        // TLS 1.3: the server's refusal of a client certificate arrives after the handshake.
        Err(tokio_tungstenite::tungstenite::Error::Io(e)) => {
            Err((0, json!({"tls": e.to_string()})))
        }
        Err(e) => panic!("WebSocket to {path}: {e}"),
    }
}

/// Sends `bytes` and reads until they came back.
pub async fn round_trip(ws: &mut Ws, bytes: &[u8]) -> Vec<u8> {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::binary(bytes.to_vec())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < bytes.len() {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => got.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!("no echo: {other:?}"),
        }
    }
    got
}

/// The Events on the VM `name` in `ns` with `reason`.
pub async fn events(client: &kube::Client, ns: &str, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}
