//! The proxy to aggregated servers: a request the devcluster has authenticated and authorised
//! goes to an endpoint of the APIService's Service over TLS (verified with `spec.caBundle`,
//! presenting the front-proxy client certificate), with the caller's credentials,
//! impersonation and `X-Remote-*` headers replaced by the identity the devcluster established.
//! Bodies stream both ways; an HTTP/1.1 Upgrade (WebSocket) is spliced both ways once the
//! server answers 101. Failures are `Status` objects (503 when the service cannot be reached).
//!
//! Owns the connection to the backend; never decides who may do what.

use super::apiservice::{ApiService, ServiceRef};
use super::backend_tls::{self, BackendTlsError};
use super::endpoints::{self, ResolveError};
use super::front_proxy;
use crate::app::App;
use crate::auth::UserInfo;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::Response;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Connecting plus the TLS handshake must finish within this.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why no connection to an aggregated server could be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The Service has no usable endpoint.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The APIService's TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] BackendTlsError),
    /// The endpoint refused or did not answer.
    #[error("connecting to {addr}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Connecting or the handshake took longer than the dial timeout.
    #[error("connecting to {addr} timed out")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// The HTTP/1.1 handshake failed.
    #[error("starting HTTP with {addr}")]
    Http {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

impl DialError {
    /// The endpoint the failure happened with, once one was resolved.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Connect { addr, .. } | Self::Timeout { addr } | Self::Http { addr, .. } => {
                Some(*addr)
            }
            Self::Resolve(_) | Self::Tls(_) => None,
        }
    }
}

/// A connection to an aggregated server, ready for one request.
pub struct Backend {
    /// The endpoint it is connected to.
    pub addr: SocketAddr,
    /// Sends the request.
    pub sender: SendRequest<Body>,
}

/// Connects to an endpoint of `target` with the TLS settings of `svc`.
pub async fn dial(app: &App, svc: &ApiService, target: &ServiceRef) -> Result<Backend, DialError> {
    let addr = endpoints::resolve(app, target)?;
    let config = backend_tls::client_config(
        &app.front_proxy,
        &svc.ca_bundle,
        svc.insecure_skip_tls_verify,
    )?;
    let server_name =
        rustls::pki_types::ServerName::try_from(target.server_name()).map_err(|e| {
            DialError::Connect {
                addr,
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            }
        })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| DialError::Connect { addr, source })?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|source| DialError::Connect { addr, source })
    };
    let tls = tokio::time::timeout(DIAL_TIMEOUT, connect)
        .await
        .map_err(|_| DialError::Timeout { addr })??;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|source| DialError::Http { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, %addr, "connection to an aggregated server ended");
        }
    });
    Ok(Backend { addr, sender })
}

/// kube-aggregator's 503 for a service it cannot reach, with the cause.
fn unavailable(e: &dyn std::error::Error) -> ApiError {
    let mut msg = format!("service unavailable: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    ApiError::service_unavailable(msg)
}

/// Refuses paths a backend could resolve differently from how they were authorised: `.`/`..`
/// segments (also percent-encoded), encoded separators and empty segments.
pub fn check_path(path: &str) -> Result<(), ApiError> {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let lower = seg.to_ascii_lowercase();
        let dots = lower.replace("%2e", ".");
        let bad = dots == "."
            || dots == ".."
            || lower.contains("%2f")
            || lower.contains("%5c")
            || seg.contains('\\')
            || (seg.is_empty() && i + 1 != segs.len());
        if bad {
            return Err(ApiError::bad_request(format!(
                "the path {path:?} has a relative, empty or encoded-separator segment; \
                 send the canonical path"
            )));
        }
    }
    Ok(())
}

/// Whether a request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// The headers forwarded: the caller's minus hop-by-hop and identity headers, plus the
/// identity the devcluster established, the upgrade request, and the endpoint as `Host`.
fn forwarded_headers(
    from: &HeaderMap,
    user: &UserInfo,
    upgrade: bool,
    host: SocketAddr,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in from {
        if HOP_BY_HOP.contains(&name.as_str())
            || name == header::HOST
            || front_proxy::is_caller_identity_header(name)
        {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    for (name, value) in front_proxy::identity_headers(user) {
        h.append(name, value);
    }
    if upgrade && let Some(u) = from.get(header::UPGRADE) {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, u.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&host.to_string()) {
        h.insert(header::HOST, v);
    }
    h
}

/// Proxies `req`, already authorised for `user`, to the server of `svc`.
pub async fn proxy(
    app: &App,
    svc: &ApiService,
    user: &UserInfo,
    mut req: Request,
) -> Result<Response, ApiError> {
    check_path(req.uri().path())?;
    let target = svc.service.as_ref().ok_or_else(ApiError::no_route)?;
    let backend = dial(app, svc, target).await.map_err(|e| unavailable(&e))?;
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = axum::http::Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|_| ApiError::bad_request("the request URI cannot be forwarded"))?;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = forwarded_headers(&parts.headers, user, upgrade, backend.addr);
    let mut sender = backend.sender;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unavailable(&e))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::bad_gateway(
                "the aggregated server switched protocols on a request that did not ask to",
            ));
        };
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(splice(client_upgrade, backend_upgrade));
        let (mut parts, _) = resp.into_parts();
        let (conn, up) = (
            parts.headers.remove(header::CONNECTION),
            parts.headers.remove(header::UPGRADE),
        );
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.extend(
            [(header::CONNECTION, conn), (header::UPGRADE, up)]
                .into_iter()
                .filter_map(|(n, v)| Some((n, v?))),
        );
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(name);
    }
}

/// Copies bytes both ways between the caller's and the server's upgraded connections until
/// either side closes.
async fn splice(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    let (c, b) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "an upgraded aggregated connection failed to start");
            return;
        }
    };
    let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
        tracing::debug!(error = %e, "an upgraded aggregated connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_encoded_separator_segments_are_refused() {
        for p in [
            "/apis/g/v/namespaces/a/../../../api/v1/secrets",
            "/apis/g/v/%2e%2E/x",
            "/apis/g/v/a%2Fb",
            "/apis/g/v/./x",
            "/apis/g/v//x",
            "/apis/g/v/a\\b",
        ] {
            assert_eq!(check_path(p).unwrap_err().code, 400, "{p}");
        }
        for p in [
            "/apis/g/v",
            "/apis/g/v/",
            "/apis/g/v/namespaces/a/things/b...c",
        ] {
            assert!(check_path(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn forwarded_headers_replace_the_callers_identity_and_keep_the_upgrade() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer secret"),
            ("impersonate-user", "root"),
            ("x-remote-user", "root"),
            ("x-remote-group", "system:masters"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("host", "127.0.0.1:1"),
        ] {
            h.append(
                axum::http::HeaderName::from_static(n),
                HeaderValue::from_static(v),
            );
        }
        let user = UserInfo::new("alice", "", &["tenants".to_string()]);
        let out = forwarded_headers(&h, &user, is_upgrade(&h), "10.0.0.1:8443".parse().unwrap());
        assert!(out.get("authorization").is_none());
        assert!(out.get("impersonate-user").is_none());
        assert_eq!(out.get("x-remote-user").unwrap(), "alice");
        let groups: Vec<_> = out.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["tenants", "system:authenticated"]);
        assert_eq!(out.get("upgrade").unwrap(), "websocket");
        assert_eq!(out.get("sec-websocket-key").unwrap(), "k");
        assert_eq!(out.get("host").unwrap(), "10.0.0.1:8443");
    }
}
