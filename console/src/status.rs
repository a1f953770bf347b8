//! Errors as the user sees them: a Kubernetes `Status` object (JSON) with the HTTP code,
//! so kubectl, kube-rs and the browser page all show the reason.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

/// Why a console request was refused or failed, before the WebSocket upgrade.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials, or credentials the cluster does not accept.
    #[error("{0}")]
    Unauthorized(String),
    /// RBAC does not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// The VM (or the path) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The VM exists but has no console to reach now (not running, no display, moving).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed (not a WebSocket upgrade, a bad subprotocol).
    #[error("{0}")]
    BadRequest(String),
    /// The VM's host agent could not be reached or refused the connection.
    #[error("{0}")]
    BadGateway(String),
    /// The server is not ready (its certificates or the cluster's answers are missing).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `Status.reason` Kubernetes uses for the code.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "NotFound",
            ApiError::Conflict(_) => "Conflict",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::BadGateway(_) => "BadGateway",
            ApiError::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `result` metric label of a refused connection (a fixed set).
    pub fn metric_result(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BadGateway(_) => "agent_unreachable",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> serde_json::Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code(), axum::Json(self.to_status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forbidden_error_is_a_kubernetes_status_with_code_403() {
        let s = ApiError::Forbidden("no".into()).to_status();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["code"], 403);
        assert_eq!(s["reason"], "Forbidden");
        assert_eq!(s["message"], "no");
    }
}
