//! Calls to the Kubernetes API made as the page's user: a client carrying the user's own
//! bearer token (no impersonation, none of this server's credentials), and the API's
//! refusals passed on with their code and message.

use crate::authn;
use crate::server::AppState;
use crate::status::ApiError;

/// A client that authenticates with the bearer token of the request's `Authorization`
/// header, and nothing else: the server's own identity (service account token, client
/// certificate) is dropped from the configuration.
pub fn client(s: &AppState, headers: &http::HeaderMap) -> Result<kube::Client, ApiError> {
    let token = authn::bearer_token(headers)?
        .ok_or_else(|| ApiError::Unauthorized("log in with a token".into()))?;
    let mut cfg = s.kube_config.clone();
    cfg.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    kube::Client::try_from(cfg)
        .map_err(|e| ApiError::Unavailable(format!("building a client: {e}")))
}

/// The API's answer to a call made as the user, as the page should see it: its code and
/// message (admission and RBAC refusals say what to do), or what failed while `doing`.
pub fn api_error(e: kube::Error, doing: &str) -> ApiError {
    match e {
        kube::Error::Api(s) => match s.code {
            401 => ApiError::Unauthorized(s.message),
            403 => ApiError::Forbidden(s.message),
            404 => ApiError::NotFound(s.message),
            409 => ApiError::Conflict(s.message),
            400 | 422 => ApiError::BadRequest(s.message),
            _ => ApiError::Unavailable(format!("{doing}: {}", s.message)),
        },
        e => ApiError::Unavailable(format!("{doing}: {e}")),
    }
}
