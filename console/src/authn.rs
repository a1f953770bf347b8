//! Who is asking: the identity a front proxy (the Kubernetes API server's aggregator)
//! vouches for with its client certificate and `X-Remote-*` headers, or the owner of a
//! bearer token (an `Authorization` header, or the WebSocket subprotocol browsers use),
//! which the cluster confirms with a TokenReview.
//!
//! The `X-Remote-*` headers are read only on a connection whose client certificate the
//! front-proxy CA signed and whose common name is allowed; anywhere else they are ignored.

use std::collections::BTreeMap;

use base64::Engine as _;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::status::ApiError;

/// The WebSocket subprotocol prefix that carries a bearer token (base64url, unpadded), as
/// kube-apiserver accepts it from browsers.
pub const BEARER_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// An authenticated user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The user's uid, when known.
    pub uid: Option<String>,
    /// The groups.
    pub groups: Vec<String>,
    /// Extra attributes (scopes, ...).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// How the front proxy passes the identity (ConfigMap
/// `kube-system/extension-apiserver-authentication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxy {
    /// Common names a front-proxy client certificate may carry; empty: any.
    pub allowed_names: Vec<String>,
    /// Headers holding the user name (the first present wins).
    pub username_headers: Vec<String>,
    /// Headers holding groups (repeated).
    pub group_headers: Vec<String>,
    /// Prefixes of the extra headers.
    pub extra_prefixes: Vec<String>,
}

impl Default for FrontProxy {
    /// kube-apiserver's usual flags.
    fn default() -> Self {
        Self {
            allowed_names: vec!["front-proxy-client".into()],
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
        }
    }
}

impl FrontProxy {
    /// Reads the ConfigMap's data (values are JSON arrays in strings, as kube writes them).
    pub fn from_configmap(data: &BTreeMap<String, String>) -> Self {
        let list = |k: &str| -> Option<Vec<String>> {
            data.get(k).and_then(|v| serde_json::from_str(v).ok())
        };
        let d = Self::default();
        Self {
            allowed_names: list("requestheader-allowed-names").unwrap_or(d.allowed_names),
            username_headers: list("requestheader-username-headers").unwrap_or(d.username_headers),
            group_headers: list("requestheader-group-headers").unwrap_or(d.group_headers),
            extra_prefixes: list("requestheader-extra-headers-prefix").unwrap_or(d.extra_prefixes),
        }
    }

    /// Whether a verified front-proxy certificate's common name may vouch for users.
    pub fn allows(&self, common_name: &str) -> bool {
        self.allowed_names.is_empty() || self.allowed_names.iter().any(|n| n == common_name)
    }

    /// The identity in the headers of a request on a verified front-proxy connection.
    pub fn identity(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let value = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let user = self
            .username_headers
            .iter()
            .find_map(|h| value(h).into_iter().find(|v| !v.is_empty()))
            .ok_or_else(|| {
                ApiError::Unauthorized("the front proxy sent no user name header".into())
            })?;
        let groups = self.group_headers.iter().flat_map(|h| value(h)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, v) in headers {
            let lower = name.as_str();
            let Some(key) = self.extra_prefixes.iter().find_map(|p| {
                lower
                    .strip_prefix(p.to_ascii_lowercase().as_str())
                    .filter(|k| !k.is_empty())
            }) else {
                continue;
            };
            if let Ok(v) = v.to_str() {
                extra.entry(percent_decode(key)).or_default().push(v.into());
            }
        }
        Ok(Identity {
            user,
            uid: None,
            groups,
            extra,
        })
    }
}

/// Decodes `%XX` escapes (kube escapes extra keys this way); malformed escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || std::str::from_utf8(b.get(i + 1..i + 3)?).ok();
        match (b[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(c)) => {
                out.push(c);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The bearer token of a request: the `Authorization` header, else the WebSocket
/// subprotocol `base64url.bearer.authorization.k8s.io.<token>`.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or_default();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header is not a bearer token".into())
            })?;
        return Ok(Some(token.to_owned()));
    }
    for proto in offered_protocols(headers) {
        if let Some(encoded) = proto.strip_prefix(BEARER_PROTOCOL_PREFIX) {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .map_err(|_| {
                    ApiError::Unauthorized("the bearer subprotocol is not base64url".into())
                })?;
            let token = String::from_utf8(bytes).map_err(|_| {
                ApiError::Unauthorized("the bearer subprotocol is not a UTF-8 token".into())
            })?;
            return Ok(Some(token));
        }
    }
    Ok(None)
}

/// The WebSocket subprotocols a request offers, in its order.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Asks the cluster who owns `token` (TokenReview).
pub async fn review_token(client: &kube::Client, token: &str) -> Result<Identity, ApiError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: None,
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the TokenReview failed: {e}")))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status
            .error
            .unwrap_or_else(|| "the token is not valid".into());
        return Err(ApiError::Unauthorized(format!(
            "authentication failed: {why}"
        )));
    }
    let user = status.user.unwrap_or_default();
    Ok(Identity {
        user: user.username.unwrap_or_default(),
        uid: user.uid,
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    })
}

#[cfg(test)]
#[path = "authn_tests.rs"]
mod tests;
