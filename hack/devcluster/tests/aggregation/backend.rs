//! A small aggregated API server for the tests: TLS with a certificate for
//! `<service>.<namespace>.svc`, a client certificate REQUIRED and verified against the
//! front-proxy CA the devcluster publishes, the CN checked against the allowed names. It serves
//! a discovery document, echoes what it was sent (identity headers, path, body) as JSON, and
//! echoes WebSocket frames after greeting with the user it was given.

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The group and version served.
pub const GROUP: &str = "test.ironvisor.io";
/// The version served.
pub const VERSION: &str = "v1";

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request path (with the query).
    pub path: String,
    /// `X-Remote-User`, when sent.
    pub user: Option<String>,
}

/// A running backend.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its CA (PEM), for the APIService's caBundle.
    pub ca_pem: String,
    /// Every request that reached the handler.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts on a free loopback port, serving as `server_name`, trusting client certificates
    /// of `front_proxy_ca_pem` whose CN is in `allowed_names`.
    pub async fn start(
        server_name: &str,
        front_proxy_ca_pem: &str,
        allowed_names: Vec<String>,
    ) -> Self {
        let (config, ca_pem) = server_config(server_name, front_proxy_ca_pem);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(vec![]));
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let state = Arc::new((allowed_names, seen.clone()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| common_name(c.as_ref()))
                        .unwrap_or_default();
                    let svc = hyper::service::service_fn(move |req| {
                        let (state, cn) = (state.clone(), cn.clone());
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &cn, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem,
            seen,
            task,
        }
    }

    /// The users (`X-Remote-User`) requests for `path` came with; `None` for none.
    pub fn users_of(&self, path: &str) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.user.clone())
            .collect()
    }

    /// Every path that reached the handler.
    pub fn all_paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }
}

fn common_name(der: &[u8]) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn server_config(server_name: &str, client_ca_pem: &str) -> (rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test-backend-ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![server_name.to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (config, ca_cert.pem())
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    r
}

fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect()
}

async fn handle(
    mut req: Request<Incoming>,
    cn: &str,
    state: &(Vec<String>, Arc<Mutex<Vec<Seen>>>),
) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let user = header_values(&req, "x-remote-user").first().cloned();
    state.1.lock().unwrap().push(Seen {
        path: path.clone(),
        user: user.clone(),
    });
    if !state.0.iter().any(|n| n == cn) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": format!("client CN {cn:?} is not allowed")}),
        );
    }
    if req.uri().path() == format!("/apis/{GROUP}/{VERSION}") {
        return json_response(StatusCode::OK, &discovery());
    }
    if req.headers().contains_key(header::UPGRADE) {
        return websocket(&mut req, user.unwrap_or_default());
    }
    let extra: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .filter_map(|(n, v)| {
            let k = n.as_str().strip_prefix("x-remote-extra-")?;
            Some((k.to_string(), json!(v.to_str().ok()?)))
        })
        .collect();
    let echo = json!({
        "method": req.method().as_str(),
        "path": path,
        "user": user,
        "groups": header_values(&req, "x-remote-group"),
        "extra": extra,
        "authorization": req.headers().contains_key(header::AUTHORIZATION),
        "impersonate": req.headers().keys().any(|k| k.as_str().starts_with("impersonate-")),
        "clientCN": cn,
    });
    let body = axum::body::to_bytes(Body::new(req.into_body()), 1 << 20)
        .await
        .unwrap_or_default();
    let mut echo = echo;
    echo["body"] = json!(String::from_utf8_lossy(&body));
    json_response(StatusCode::OK, &echo)
}

fn discovery() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
    "resources": [
        {"name": "things", "singularName": "thing", "namespaced": true, "kind": "Thing", "verbs": ["get", "list"]},
        {"name": "things/console", "singularName": "", "namespaced": true, "kind": "Thing", "verbs": ["get"]},
    ]})
}

/// Answers a WebSocket upgrade: greets with `hello <user>`, then echoes every frame.
fn websocket(req: &mut Request<Incoming>, user: String) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return json_response(StatusCode::BAD_REQUEST, &json!({"error": "no key"}));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let protocol = req.headers().get("sec-websocket-protocol").cloned();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let Ok(up) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            Role::Server,
            None,
        )
        .await;
        if ws
            .send(Message::text(format!("hello {user}")))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() || ws.send(m).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
    h.insert(header::UPGRADE, "websocket".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    if let Some(p) = protocol {
        let first = p
            .to_str()
            .unwrap_or_default()
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        h.insert("sec-websocket-protocol", first.parse().unwrap());
    }
    r
}
