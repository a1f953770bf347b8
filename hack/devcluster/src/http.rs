//! HTTP front: routes Kubernetes API paths to discovery, OpenAPI and the verbs, and turns
//! errors into `Status` responses. Logs one line per request at debug level.
//!
//! Owns path parsing and content negotiation; the semantics live in `ops` and `watch`.

use crate::app::{App, Params, Target};
use crate::auth::{UserInfo, attributes, reviews};
use crate::error::ApiError;
use crate::table::{self, Form};
use crate::{aggregator, discovery, openapi, openapi_v2, ops, protobuf, watch};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest request body accepted (the apiserver's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The router for an app listening at `addr`.
pub fn router(app: Arc<App>, addr: String) -> Router {
    Router::new()
        .fallback(handle)
        .with_state((app, Arc::new(addr)))
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status_body())
}

/// Authenticates and authorises a request (401 or kube-apiserver's 403), returning the user.
fn admit_request(app: &App, req: &Request) -> Result<UserInfo, ApiError> {
    let authz = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = app.authenticate(authz)?;
    let user =
        crate::auth::impersonation::resolve(caller, req.headers(), &|u, a| app.allows(u, a))?;
    if user.in_group(crate::auth::MASTERS) {
        return Ok(user);
    }
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let a = attributes::of_request(req.method().as_str(), req.uri().path(), &query);
    app.authorize(&user, &a)?;
    Ok(user)
}

async fn handle(State((app, addr)): State<(Arc<App>, Arc<String>)>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let started = std::time::Instant::now();
    let result = match admit_request(&app, &req) {
        Ok(user) => match aggregated(&app, &req) {
            Some(svc) => aggregator::proxy::proxy(&app, &svc, &user, req).await,
            None => dispatch(app, &addr, req, user).await,
        },
        Err(e) => Err(e),
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(
        method = %method,
        uri = %uri,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// The APIService proxying this request's `/apis/<group>/<version>`, if any.
fn aggregated(app: &App, req: &Request) -> Option<aggregator::apiservice::ApiService> {
    let mut segs = req.uri().path().split('/').skip(1);
    let (Some("apis"), Some(g), Some(v)) = (segs.next(), segs.next(), segs.next()) else {
        return None;
    };
    if g.is_empty() || v.is_empty() {
        return None;
    }
    aggregator::apiservice::remote(app, g, v)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn read_body(req: Request) -> Result<(HeaderMap, Vec<u8>), ApiError> {
    let (parts, body) = req.into_parts();
    let ct = header_str(&parts.headers, header::CONTENT_TYPE).to_string();
    // CBOR is not spoken; clients fall back to JSON on 415. Patches are never protobuf.
    let pb_allowed = parts.method != Method::PATCH;
    if ct.contains("cbor")
        || (ct.contains("protobuf") && !(pb_allowed && protobuf::is_protobuf(&ct)))
    {
        return Err(ApiError::unsupported_media(&ct));
    }
    let declared: Option<usize> = header_str(&parts.headers, header::CONTENT_LENGTH)
        .parse()
        .ok();
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::too_large())?;
    if protobuf::is_protobuf(&ct) {
        // The rest of the server speaks JSON: hand it the object the protobuf stands for.
        let obj = protobuf::decode(&bytes).map_err(|e| protobuf_error(&e))?;
        return Ok((parts.headers, obj.to_string().into_bytes()));
    }
    Ok((parts.headers, bytes.to_vec()))
}

fn protobuf_error(e: &protobuf::ProtoError) -> ApiError {
    if e.is_unsupported_kind() {
        return ApiError::unsupported_kind(e.to_string());
    }
    let mut msg = format!("the protobuf body could not be decoded: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    ApiError::bad_request(msg)
}

/// A single object in the representation the client prefers: protobuf when its `Accept` puts
/// protobuf first and the kind has a protobuf form (as kube-apiserver answers kubectl's typed
/// clients), JSON otherwise. Lists, tables, watches and `Status` bodies are always JSON; clients
/// decode by the response's `Content-Type`.
fn object_response(code: u16, body: &Value, accept: &str) -> Response {
    if protobuf::prefers_protobuf(accept) {
        match protobuf::encode(body) {
            Some(Ok(bytes)) => {
                let mut r = Response::new(Body::from(bytes));
                *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(protobuf::MEDIA_TYPE),
                );
                return r;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "answering in JSON: protobuf encoding failed")
            }
            None => {}
        }
    }
    json_response(code, body)
}

/// A parsed API path.
struct PathInfo {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(segs: &[&str]) -> Option<PathInfo> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let mut p = PathInfo {
        group,
        version,
        namespace: None,
        plural: None,
        name: None,
        sub: None,
    };
    let rest: Vec<&str> = match rest {
        ["namespaces", ns, r, tail @ ..] if *r != "status" && *r != "finalize" => {
            p.namespace = Some(ns.to_string());
            std::iter::once(*r).chain(tail.iter().copied()).collect()
        }
        other => other.to_vec(),
    };
    match rest.as_slice() {
        [] => {}
        [r] => p.plural = Some(r.to_string()),
        [r, n] => {
            p.plural = Some(r.to_string());
            p.name = Some(n.to_string());
        }
        [r, n, s] => {
            p.plural = Some(r.to_string());
            p.name = Some(n.to_string());
            p.sub = Some(s.to_string());
        }
        _ => return None,
    }
    Some(p)
}

async fn dispatch(
    app: Arc<App>,
    addr: &str,
    req: Request,
    user: UserInfo,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let reg = app.registry();
    let get = req.method() == Method::GET;
    match segs.as_slice() {
        ["version"] if get => return Ok(json_response(200, &discovery::version())),
        ["healthz" | "livez" | "readyz", ..] if get => {
            return Ok((StatusCode::OK, "ok").into_response());
        }
        ["api"] if get => return Ok(json_response(200, &discovery::core_versions(addr))),
        ["apis"] if get => {
            let services = aggregator::apiservice::all(&app);
            let list = aggregator::discovery::group_list(&reg, &services);
            return Ok(json_response(200, &list));
        }
        ["apis", g] if get => {
            let services = aggregator::apiservice::all(&app);
            return aggregator::discovery::group(&reg, &services, g)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route);
        }
        ["openapi", "v2"] if get => {
            let accept = header_str(req.headers(), header::ACCEPT);
            if !openapi_v2::wants_protobuf(accept) {
                return Ok(json_response(200, &openapi_v2::document(&reg)));
            }
            let mut r = Response::new(Body::from(openapi_v2::protobuf(&reg)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(openapi_v2::PROTO_MEDIA),
            );
            return Ok(r);
        }
        ["openapi", "v3", rest @ ..] if get => {
            let doc = if rest.is_empty() {
                Some(openapi::index(&reg))
            } else {
                openapi::document(&reg, &rest.join("/"))
            };
            return doc
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route);
        }
        _ => {}
    }
    let info = parse_path(&segs).ok_or_else(ApiError::no_route)?;
    let Some(plural) = info.plural.clone() else {
        if !get {
            return Err(ApiError::method_not_allowed());
        }
        return discovery::resource_list(&reg, &info.group, &info.version)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::no_route);
    };
    if req.method() == Method::POST && is_special_post(&info, &plural) {
        return special_post(&app, &info, &plural, &user, req).await;
    }
    let served = reg
        .find(&info.group, &info.version, &plural)
        .ok_or_else(ApiError::no_route)?;
    if served.info.namespaced != info.namespace.is_some()
        && (info.name.is_some() || !served.info.namespaced)
    {
        return Err(ApiError::no_route());
    }
    if let Some(s) = &info.sub
        && !(s == "status" && served.info.status_subresource)
    {
        return Err(ApiError::no_route());
    }
    let t = Target {
        served,
        namespace: info.namespace,
        name: info.name,
        subresource: info.sub,
    };
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut p = Params::from_query(&query);
    p.user = user;
    let accept = header_str(req.headers(), header::ACCEPT).to_string();
    let form = Form::negotiate(&accept, p.include_object.as_deref());
    let ua = header_str(req.headers(), header::USER_AGENT).to_string();
    let method = req.method().clone();
    match method {
        Method::GET if p.watch => {
            let mut p = p;
            if let Some(n) = &t.name {
                let fs = format!("metadata.name={n}");
                p.field_selector = Some(match p.field_selector {
                    Some(f) => format!("{f},{fs}"),
                    None => fs,
                });
            }
            let t = Target { name: None, ..t };
            let body = watch::start(app.clone(), &t, &p, form)?;
            let mut r = Response::new(body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        Method::GET if t.name.is_some() => {
            let o = ops::get(&app, &t)?;
            Ok(match form {
                Form::Table(inc) => json_response(
                    200,
                    &table::table(t.info(), &[o], app.store.current_rv(), None, inc),
                ),
                Form::Metadata => json_response(200, &table::partial(&o)),
                Form::Full => object_response(200, &o, &accept),
            })
        }
        Method::GET => {
            if form == Form::Full {
                return Ok(json_response(200, &ops::list(&app, &t, &p)?));
            }
            let (items, rv, cont) = ops::list_items(&app, &t, &p)?;
            let shown: Vec<Value> = items
                .iter()
                .map(|o| crate::app::present(o, t.info()))
                .collect();
            Ok(json_response(
                200,
                &match form {
                    Form::Table(inc) => table::table(t.info(), &shown, rv, cont, inc),
                    _ => table::partial_list(&shown, rv, cont),
                },
            ))
        }
        Method::POST if t.name.is_none() && t.subresource.is_none() => {
            if t.info().namespaced && t.namespace.is_none() {
                return Err(ApiError::no_route());
            }
            let (_, body) = read_body(req).await?;
            outcome(ops::create(&app, &t, &body, &p, &ua)?, &accept)
        }
        Method::PUT if t.name.is_some() => {
            let (_, body) = read_body(req).await?;
            outcome(ops::update(&app, &t, &body, &p, &ua)?, &accept)
        }
        Method::PATCH if t.name.is_some() => {
            let (headers, body) = read_body(req).await?;
            let ct = header_str(&headers, header::CONTENT_TYPE).to_string();
            outcome(ops::patch(&app, &t, &ct, &body, &p, &ua)?, &accept)
        }
        Method::DELETE if t.subresource.is_none() => {
            let (_, body) = read_body(req).await?;
            let opts = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                crate::patch::parse_body(&body)?
            };
            let mut p = p;
            if let Some(pp) = opts["propagationPolicy"].as_str() {
                p.propagation_policy = Some(pp.to_string());
            }
            if t.name.is_some() {
                outcome(ops::delete(&app, &t, &opts, &p)?, &accept)
            } else {
                outcome(ops::delete_collection(&app, &t, &p)?, &accept)
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn is_review(info: &PathInfo, plural: &str) -> bool {
    info.version == "v1" && info.name.is_none() && reviews::is_review(&info.group, plural)
}

/// Whether a POST creates nothing: a review or a token request.
fn is_special_post(info: &PathInfo, plural: &str) -> bool {
    let token = info.group.is_empty()
        && plural == "serviceaccounts"
        && info.sub.as_deref() == Some("token");
    token || is_review(info, plural)
}

/// Answers a review or a token request (see [`is_special_post`]).
async fn special_post(
    app: &App,
    info: &PathInfo,
    plural: &str,
    user: &UserInfo,
    req: Request,
) -> Result<Response, ApiError> {
    let accept = header_str(req.headers(), header::ACCEPT).to_string();
    let review = is_review(info, plural);
    let (_, body) = read_body(req).await?;
    let body = crate::patch::parse_body(&body)?;
    let answer = if review {
        reviews::review(
            app,
            user,
            &info.group,
            plural,
            info.namespace.as_deref(),
            body,
        )?
    } else {
        let (Some(ns), Some(name)) = (&info.namespace, &info.name) else {
            return Err(ApiError::no_route());
        };
        reviews::token_request(app, ns, name, body)?
    };
    Ok(object_response(201, &answer, &accept))
}

fn outcome(o: ops::Outcome, accept: &str) -> Result<Response, ApiError> {
    let mut r = object_response(o.code, &o.body, accept);
    for w in o.warnings {
        let text = format!("299 - {}", Value::String(w));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_status_is_a_subresource_not_a_resource_named_status() {
        let p = parse_path(&["api", "v1", "namespaces", "a", "status"]).unwrap();
        assert_eq!(p.plural.as_deref(), Some("namespaces"));
        assert_eq!(p.name.as_deref(), Some("a"));
        assert_eq!(p.sub.as_deref(), Some("status"));
        let p = parse_path(&[
            "apis",
            "x.io",
            "v1",
            "namespaces",
            "a",
            "foos",
            "b",
            "status",
        ])
        .unwrap();
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.plural.as_deref(),
                p.name.as_deref()
            ),
            (Some("a"), Some("foos"), Some("b"))
        );
        assert!(parse_path(&["apis", "x.io", "v1", "a", "b", "c", "d"]).is_none());
    }
}
