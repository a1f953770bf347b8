//! The desktop portal's API ("my desktops"): the signed-in user's DesktopClaims, the pools
//! they may claim from, claiming a desktop and releasing it.
//!
//! Every call is made to the Kubernetes API as the user, with their own token
//! ([`as_user`]): RBAC and the admission policy `ironvisor-desktop-claims` decide, exactly as
//! for `kubectl` or `ivctl desktop`. This server never reads or writes claims or pools as
//! itself. The user's name comes from a SelfSubjectReview (the API server's view of the
//! token), never from the browser.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use ironvisor_crds::desktop::{DesktopClaim, DesktopPool};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::as_user::{self, api_error};
use crate::portal_view::{claim_name_stem, claim_view, is_live, pool_view, valid_name};
use crate::server::AppState;
use crate::status::ApiError;

/// The portal's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui/desktops", get(overview).post(claim))
        .route("/ui/desktops/{ns}/{name}", delete(release))
}

fn answer(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Who the API server says the token belongs to.
pub async fn whoami(client: &Client) -> Result<String, ApiError> {
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
    }))
    .map_err(|e| ApiError::Unavailable(format!("building a SelfSubjectReview: {e}")))?;
    let answer = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| api_error(e, "asking who you are (SelfSubjectReview)"))?;
    answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::Unavailable("the SelfSubjectReview named no user".into()))
}

/// Lists the claims of `user` (in `ns`, or everywhere): filtered by the selectable field
/// `spec.user` on the server when the name needs no escaping, and always here as well.
async fn claims_of(
    client: &Client,
    ns: Option<&str>,
    user: &str,
) -> Result<Vec<DesktopClaim>, kube::Error> {
    let api: Api<DesktopClaim> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut lp = ListParams::default();
    // Field selector values escape `\`, `,` and `=`; names with them are filtered here only.
    if !user.contains(['\\', ',', '=']) {
        lp = lp.fields(&format!("spec.user={user}"));
    }
    let mut items = api.list(&lp).await?.items;
    items.retain(|c| c.spec.user == user);
    Ok(items)
}

async fn pools_in(client: &Client, ns: Option<&str>) -> Result<Vec<DesktopPool>, kube::Error> {
    let api: Api<DesktopPool> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    Ok(api.list(&ListParams::default()).await?.items)
}

/// Whether the user may create claims in `ns` (a SelfSubjectAccessReview).
async fn may_claim(client: &Client, ns: &str) -> Result<bool, ApiError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("ironvisor.io".into()),
                resource: Some("desktopclaims".into()),
                verb: Some("create".into()),
                namespace: Some(ns.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| api_error(e, "asking whether you may claim (SelfSubjectAccessReview)"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[derive(Deserialize)]
struct OverviewQuery {
    /// Comma-separated namespaces; empty: all the user may list.
    namespaces: Option<String>,
}

async fn overview(
    State(s): State<Arc<AppState>>,
    Query(q): Query<OverviewQuery>,
    headers: http::HeaderMap,
) -> Response {
    let wanted: Vec<String> = q
        .namespaces
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    answer(overview_of(&s, &headers, wanted).await)
}

/// The user, and per namespace their claims, the pools and whether they may claim there.
async fn overview_of(
    s: &AppState,
    headers: &http::HeaderMap,
    wanted: Vec<String>,
) -> Result<Value, ApiError> {
    let client = as_user::client(s, headers)?;
    let user = whoami(&client).await?;
    let mut sections = Vec::new();
    if wanted.is_empty() {
        let everywhere = "you may not list desktop claims and pools in all namespaces: \
                          name the namespaces of your desktop pools";
        let claims = claims_of(&client, None, &user).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => ApiError::Forbidden(everywhere.into()),
            e => api_error(e, "listing your desktop claims"),
        })?;
        let pools = pools_in(&client, None).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => ApiError::Forbidden(everywhere.into()),
            e => api_error(e, "listing desktop pools"),
        })?;
        let namespaces: BTreeSet<String> = claims
            .iter()
            .filter_map(|c| c.namespace())
            .chain(pools.iter().filter_map(|p| p.namespace()))
            .collect();
        for ns in namespaces {
            let c = claims
                .iter()
                .filter(|c| c.namespace().as_deref() == Some(&ns));
            let p = pools
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(&ns));
            let mine: Vec<DesktopClaim> = c.cloned().collect();
            let theirs: Vec<DesktopPool> = p.cloned().collect();
            sections.push(section(&client, &ns, Ok((mine, theirs))).await);
        }
    } else {
        for ns in wanted {
            if !valid_name(&ns, 63) {
                sections.push(json!({"namespace": ns, "error": "not a namespace name"}));
                continue;
            }
            let read = async {
                let claims = claims_of(&client, Some(&ns), &user)
                    .await
                    .map_err(|e| api_error(e, "listing your desktop claims"))?;
                let pools = pools_in(&client, Some(&ns))
                    .await
                    .map_err(|e| api_error(e, "listing desktop pools"))?;
                Ok((claims, pools))
            };
            let read = read.await;
            sections.push(section(&client, &ns, read).await);
        }
    }
    Ok(json!({"user": user, "namespaces": sections}))
}

async fn section(
    client: &Client,
    ns: &str,
    read: Result<(Vec<DesktopClaim>, Vec<DesktopPool>), ApiError>,
) -> Value {
    let (claims, pools) = match read {
        Ok(r) => r,
        Err(e) => return json!({"namespace": ns, "error": e.to_string()}),
    };
    let can_claim = if pools.is_empty() {
        false
    } else {
        match may_claim(client, ns).await {
            Ok(b) => b,
            Err(e) => return json!({"namespace": ns, "error": e.to_string()}),
        }
    };
    let mut claims: Vec<&DesktopClaim> = claims.iter().collect();
    claims.sort_by_key(|c| (c.metadata.creation_timestamp.clone(), c.name_any()));
    json!({
        "namespace": ns,
        "canClaim": can_claim,
        "claims": claims.iter().map(|c| claim_view(c)).collect::<Vec<_>>(),
        "pools": pools.iter().map(pool_view).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
struct ClaimRequest {
    namespace: String,
    pool: String,
}

async fn claim(
    State(s): State<Arc<AppState>>,
    headers: http::HeaderMap,
    Json(r): Json<ClaimRequest>,
) -> Response {
    answer(claim_as_user(&s, &headers, &r).await)
}

/// Claims a desktop of the pool for the user (`spec.user` = their own name, as admission
/// requires), or returns their live claim there, as `ivctl desktop get` does.
async fn claim_as_user(
    s: &AppState,
    headers: &http::HeaderMap,
    r: &ClaimRequest,
) -> Result<Value, ApiError> {
    if !valid_name(&r.namespace, 63) || !valid_name(&r.pool, 253) {
        return Err(ApiError::BadRequest(
            "namespace and pool must be Kubernetes object names".into(),
        ));
    }
    let client = as_user::client(s, headers)?;
    let user = whoami(&client).await?;
    let mine = claims_of(&client, Some(&r.namespace), &user)
        .await
        .map_err(|e| api_error(e, "listing your desktop claims"))?;
    if let Some(c) = mine
        .iter()
        .find(|c| c.spec.pool_name == r.pool && is_live(c))
    {
        return Ok(json!({"created": false, "claim": claim_view(c)}));
    }
    let claim: DesktopClaim = serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
        "metadata": {"generateName": format!("{}-", claim_name_stem(&r.pool, &user))},
        "spec": {"poolName": r.pool, "user": user},
    }))
    .map_err(|e| ApiError::BadRequest(format!("building the claim: {e}")))?;
    let made = Api::<DesktopClaim>::namespaced(client, &r.namespace)
        .create(&PostParams::default(), &claim)
        .await
        .map_err(|e| api_error(e, "creating the desktop claim"))?;
    Ok(json!({"created": true, "claim": claim_view(&made)}))
}

async fn release(
    State(s): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    headers: http::HeaderMap,
) -> Response {
    let run = async {
        if !valid_name(&ns, 63) || !valid_name(&name, 253) {
            return Err(ApiError::BadRequest(
                "namespace and claim must be Kubernetes object names".into(),
            ));
        }
        let client = as_user::client(&s, &headers)?;
        // Admission lets only the claim's user (and the operator, cluster admins) delete it.
        Api::<DesktopClaim>::namespaced(client, &ns)
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| api_error(e, "releasing the desktop claim"))?;
        Ok(json!({"released": name}))
    };
    answer(run.await)
}
