//! The HTTP surface: discovery, health, the console subresources, and the browser page.
//! A console request is authenticated, authorised, located and dialled before the
//! WebSocket upgrade is answered, so every refusal is a Kubernetes `Status`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ironvisor_crds::hypervisor::Hypervisor;
use ironvisor_crds::vm::VirtualMachine;
use kube::api::Api;

use crate::agent::{self, Dial};
use crate::audit::{self, Connection, Metrics};
use crate::authn::{self, Identity};
use crate::listener::Peer;
use crate::pki::Pki;
use crate::status::ApiError;
use crate::target::{self, Kind};
use crate::{authz, bridge, discovery, web};

/// What the handlers share.
pub struct AppState {
    /// The server's own client (TokenReview, SubjectAccessReview, reads, Events).
    pub client: kube::Client,
    /// Its configuration (the page's VM list calls the API with the user's token).
    pub kube_config: kube::Config,
    /// TLS material and the front proxy's settings.
    pub pki: Arc<Pki>,
    /// Metrics.
    pub metrics: Metrics,
    /// This instance's name (Events' reportingInstance).
    pub instance: String,
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let group = ironvisor_crds::console::SUBRESOURCE_GROUP;
    let version = ironvisor_crds::console::SUBRESOURCE_VERSION;
    Router::new()
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .route("/livez", get(ok))
        .route(
            "/apis",
            get(|| async { axum::Json(discovery::group_list()) }),
        )
        .route(
            &format!("/apis/{group}"),
            get(|| async { axum::Json(discovery::group()) }),
        )
        .route(
            &format!("/apis/{group}/{version}"),
            get(|| async { axum::Json(discovery::resource_list()) }),
        )
        .route(
            &format!("/apis/{group}/{version}/namespaces/{{ns}}/virtualmachines/{{name}}/{{sub}}"),
            get(console),
        )
        .merge(web::router())
        .with_state(state)
}

async fn ok() -> &'static str {
    "ok"
}

/// Who is asking: the front proxy's word on a verified connection, else a bearer token.
pub async fn authenticate(
    s: &AppState,
    peer: &Peer,
    headers: &http::HeaderMap,
) -> Result<Identity, ApiError> {
    if let Some(cn) = &peer.client_cn {
        let fp = s.pki.front_proxy();
        if !fp.allows(cn) {
            return Err(ApiError::Unauthorized(format!(
                "client certificate {cn:?} is not an allowed front proxy"
            )));
        }
        return fp.identity(headers);
    }
    match authn::bearer_token(headers)? {
        Some(token) => authn::review_token(&s.client, &token).await,
        None => Err(ApiError::Unauthorized(
            "no credentials: send a bearer token (Authorization header or the \
             base64url.bearer.authorization.k8s.io subprotocol) or come through the API server"
                .into(),
        )),
    }
}

async fn console(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((ns, name, sub)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let Some(kind) = Kind::from_subresource(&sub) else {
        return ApiError::NotFound(format!("no subresource virtualmachines/{sub}")).into_response();
    };
    match open(&s, &peer, &ns, &name, kind, req).await {
        Ok(r) => r,
        Err(e) => {
            s.metrics
                .requests
                .with_label_values(&[kind.label(), e.metric_result()])
                .inc();
            tracing::info!(vm = format!("{ns}/{name}"), kind = kind.label(), error = %e, "console refused");
            e.into_response()
        }
    }
}

async fn open(
    s: &Arc<AppState>,
    peer: &Peer,
    ns: &str,
    name: &str,
    kind: Kind,
    mut req: Request,
) -> Result<Response, ApiError> {
    let who = authenticate(s, peer, req.headers()).await?;
    authz::authorize(&s.client, &who, ns, name, kind).await?;
    let accept = bridge::accept_key(req.headers())?;
    let (protocol, framing) = bridge::choose(req.headers())?;
    let vm = Api::<VirtualMachine>::namespaced(s.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading VM {ns}/{name}: {e}")))?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "virtualmachines.ironvisor.io \"{name}\" not found in namespace {ns}"
            ))
        })?;
    let placement = target::placement(&vm, kind)?;
    let hv = Api::<Hypervisor>::all(s.client.clone())
        .get_opt(&placement.node)
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading host {}: {e}", placement.node)))?;
    let address = target::endpoint(hv.as_ref(), &placement.node)?;
    let cfg = s.pki.client().ok_or_else(|| {
        ApiError::Unavailable(
            "no client certificate or console CA yet (Secret ironvisor-console-tls)".into(),
        )
    })?;
    let dial = Dial {
        address: &address,
        placement: &placement,
        namespace: ns,
        name,
        kind,
    };
    let agent = agent::dial(cfg, &dial).await?;
    let conn = Connection {
        user: who.user,
        kind,
        namespace: ns.into(),
        name: name.into(),
        uid: placement.uid.clone(),
        node: placement.node.clone(),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(run(s.clone(), conn, upgrade, framing, agent));
    Ok(bridge::switching(&accept, protocol))
}

/// One open console, audited from start to end.
async fn run(
    s: Arc<AppState>,
    c: Connection,
    upgrade: hyper::upgrade::OnUpgrade,
    framing: bridge::Framing,
    agent: agent::AgentStream,
) {
    let label = c.kind.label();
    s.metrics
        .requests
        .with_label_values(&[label, "connected"])
        .inc();
    s.metrics.active.with_label_values(&[label]).inc();
    audit::record(
        &s.client,
        &s.instance,
        &c,
        "ConsoleConnected",
        audit::note(&c, None),
    )
    .await;
    let started = Instant::now();
    bridge::pipe(upgrade, framing, agent).await;
    let took = started.elapsed();
    s.metrics.active.with_label_values(&[label]).dec();
    s.metrics
        .duration
        .with_label_values(&[label])
        .observe(took.as_secs_f64());
    let note = audit::note(&c, Some(took));
    audit::record(&s.client, &s.instance, &c, "ConsoleDisconnected", note).await;
}
