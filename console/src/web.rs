//! The browser console: the page, its script and the third-party code (noVNC, xterm.js)
//! compiled into the binary from `console/web` (npm ci, locked), never fetched at run time;
//! and the VM list the page shows, read from the API with the user's own token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use ironvisor_crds::vm::VirtualMachine;
use kube::api::{Api, ListParams};
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde_json::json;

use crate::as_user;
use crate::portal;
use crate::server::AppState;
use crate::status::ApiError;

#[derive(RustEmbed)]
#[folder = "web/static/"]
struct Page;

#[derive(RustEmbed)]
#[folder = "web/node_modules/@novnc/novnc/"]
#[include = "core/**/*.js"]
#[include = "vendor/pako/**/*.js"]
#[include = "LICENSE.txt"]
struct NoVnc;

#[derive(RustEmbed)]
#[folder = "web/node_modules/@xterm/xterm/"]
#[include = "lib/xterm.js"]
#[include = "css/xterm.css"]
#[include = "LICENSE"]
struct Xterm;

/// Scripts and styles from this server only; WebSockets back to it.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'";

fn asset<E: RustEmbed>(path: &str) -> Response {
    let Some(file) = E::get(path) else {
        return ApiError::NotFound(format!("no file {path}")).into_response();
    };
    let mime = file.metadata.mimetype().to_owned();
    let mut r = (StatusCode::OK, file.data.into_owned()).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The page's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { asset::<Page>("index.html") }))
        .route(
            "/static/{*path}",
            get(|Path(p): Path<String>| async move { asset::<Page>(&p) }),
        )
        .route(
            "/novnc/{*path}",
            get(|Path(p): Path<String>| async move { asset::<NoVnc>(&p) }),
        )
        .route(
            "/xterm/{*path}",
            get(|Path(p): Path<String>| async move { asset::<Xterm>(&p) }),
        )
        .route("/ui/virtualmachines", get(list_vms))
        .merge(portal::router())
}

#[derive(Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

/// The VMs the token's owner may list (in one namespace, or all), read from the API as that
/// user (their own token, no impersonation: this server holds no right to list VMs).
async fn list_vms(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
    headers: http::HeaderMap,
) -> Response {
    match list(&s, q.namespace.filter(|n| !n.is_empty()), &headers).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(
    s: &AppState,
    namespace: Option<String>,
    headers: &http::HeaderMap,
) -> Result<serde_json::Value, ApiError> {
    let client = as_user::client(s, headers)?;
    let api: Api<VirtualMachine> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let vms = api
        .list(&ListParams::default())
        .await
        .map_err(|e| as_user::api_error(e, "listing VMs"))?;
    let items: Vec<_> = vms
        .items
        .iter()
        .map(|vm| {
            let st = vm.status.clone().unwrap_or_default();
            json!({
                "namespace": vm.metadata.namespace,
                "name": vm.metadata.name,
                "phase": st.phase.map(|p| p.as_str()),
                "node": st.node_name,
                "graphics": vm.spec.has_display(),
            })
        })
        .collect();
    Ok(json!({ "items": items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_third_party_code_are_compiled_in() {
        assert!(Page::get("index.html").is_some());
        assert!(Page::get("app.js").is_some());
        assert!(Page::get("portal.js").is_some());
        assert!(NoVnc::get("core/rfb.js").is_some());
        assert!(NoVnc::get("vendor/pako/lib/zlib/inflate.js").is_some());
        assert!(Xterm::get("lib/xterm.js").is_some());
        // Only what the page needs: no sources maps, docs or tests.
        assert!(Xterm::get("lib/xterm.js.map").is_none());
    }

    #[test]
    fn assets_carry_a_content_security_policy_and_unknown_paths_are_404() {
        let r = asset::<Page>("index.html");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        assert_eq!(
            asset::<Page>("../Cargo.toml").status(),
            StatusCode::NOT_FOUND
        );
    }
}
