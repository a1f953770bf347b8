//! Two replicas electing a leader through a Lease, against a minimal in-process stand-in for
//! the API server's Lease endpoints (GET, POST, PUT with resourceVersion preconditions, as the
//! real one enforces them), on loopback. The devcluster will replace the stand-in.
//!
//! Checks: exactly one leader; never two at the same instant; when the leader dies the other
//! takes over within lease duration + retry period.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ironvisor_operator::leader::{self, Leadership, Timing};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use serde_json::json;

#[derive(Default)]
struct Store {
    lease: Option<Lease>,
    rv: u64,
}

type Shared = Arc<Mutex<Store>>;

fn status(code: u16, reason: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": reason, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

fn store(s: &mut Store, mut lease: Lease) -> Lease {
    s.rv += 1;
    lease.metadata.resource_version = Some(s.rv.to_string());
    lease.metadata.namespace = Some("ironvisor-system".into());
    s.lease = Some(lease.clone());
    lease
}

async fn get_lease(State(st): State<Shared>, Path(_name): Path<String>) -> Response {
    let s = st.lock().unwrap();
    match &s.lease {
        Some(l) => Json(l.clone()).into_response(),
        None => status(404, "NotFound"),
    }
}

async fn put_lease(
    State(st): State<Shared>,
    Path(_name): Path<String>,
    Json(lease): Json<Lease>,
) -> Response {
    let mut s = st.lock().unwrap();
    let current = s
        .lease
        .as_ref()
        .and_then(|l| l.metadata.resource_version.clone());
    if current.is_none() {
        return status(404, "NotFound");
    }
    if lease.metadata.resource_version != current {
        return status(409, "Conflict");
    }
    Json(store(&mut s, lease)).into_response()
}

async fn post_lease(State(st): State<Shared>, Json(lease): Json<Lease>) -> Response {
    let mut s = st.lock().unwrap();
    if s.lease.is_some() {
        return status(409, "AlreadyExists");
    }
    (StatusCode::CREATED, Json(store(&mut s, lease))).into_response()
}

async fn api_server() -> (String, Shared) {
    let st: Shared = Arc::default();
    let base = "/apis/coordination.k8s.io/v1/namespaces/ironvisor-system/leases";
    let app = Router::new()
        .route(&format!("{base}/{{name}}"), get(get_lease).put(put_lease))
        .route(base, axum::routing::post(post_lease))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), st)
}

fn replica(url: &str, me: &str, t: Timing) -> (Leadership, tokio::task::JoinHandle<()>) {
    let config = kube::Config::new(url.parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    let api: Api<Lease> = Api::namespaced(client, "ironvisor-system");
    let (leadership, sender) = Leadership::new();
    let task = tokio::spawn(leader::run(
        api,
        "ironvisor-operator".into(),
        me.into(),
        t,
        sender,
        tokio::sync::watch::channel(None).0,
    ));
    (leadership, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_the_standby_takes_over_when_the_leader_dies() {
    let (url, st) = api_server().await;
    let t = Timing {
        lease_duration: Duration::from_millis(1200),
        renew_deadline: Duration::from_millis(800),
        retry_period: Duration::from_millis(200),
    };
    let (a, task_a) = replica(&url, "a", t);
    let (b, task_b) = replica(&url, "b", t);

    let watch = |until: Duration| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let start = Instant::now();
            while start.elapsed() < until {
                assert!(!(a.is_leader() && b.is_leader()), "two leaders at once");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    watch(Duration::from_millis(1000)).await;
    assert!(a.is_leader() ^ b.is_leader(), "exactly one leader");
    let (leader_task, standby, standby_name) = if a.is_leader() {
        (task_a, b.clone(), "b")
    } else {
        (task_b, a.clone(), "a")
    };

    leader_task.abort();
    let died = Instant::now();
    while !standby.is_leader() {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders at once");
        assert!(died.elapsed() < Duration::from_secs(4), "no takeover");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = died.elapsed();
    assert!(
        took <= t.lease_duration + t.retry_period * 3,
        "takeover took {took:?}"
    );
    assert!(
        took >= t.renew_deadline,
        "took over before the old leader stopped writing: {took:?}"
    );
    let s = st.lock().unwrap();
    let spec = s
        .lease
        .as_ref()
        .and_then(|l| l.spec.clone())
        .expect("lease");
    assert_eq!(spec.holder_identity.as_deref(), Some(standby_name));
    assert_eq!(spec.lease_transitions, Some(1));
}
