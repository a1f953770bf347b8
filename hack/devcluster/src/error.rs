//! API errors and their `Status` bodies.
//!
//! Owns the mapping from a failure to the HTTP status code, `reason` and `details` a real
//! kube-apiserver would send. It never decides *whether* something failed; callers do.

use serde_json::{Value, json};

/// One `details.causes[]` entry of an Invalid status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine reason such as `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: String,
    /// Human text, e.g. `Invalid value: "32Mi": must be at least 64Mi`.
    pub message: String,
    /// Field path such as `spec.memory.size`.
    pub field: String,
}

impl Cause {
    /// A cause with the given reason, message and field path.
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            message: message.into(),
            field: field.into(),
        }
    }
}

/// A failed API request: everything needed to write a `Status` response.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the apiserver would send one.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut d = json!({ "kind": kind });
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(d);
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 NotFound for a named object of `resource` (plural) in `group`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let gr = qualified(resource, group);
        Self::new(404, "NotFound", format!("{gr} \"{name}\" not found"))
            .with_details(group, resource, name)
    }

    /// 404 NotFound for a path that names no resource.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details("", "", "")
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let gr = qualified(resource, group);
        Self::new(
            409,
            "AlreadyExists",
            format!("{gr} \"{name}\" already exists"),
        )
        .with_details(group, resource, name)
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        let gr = qualified(resource, group);
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {gr} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .with_details(group, resource, name)
    }

    /// 409 Conflict from server-side apply, naming the conflicting managers per field.
    pub fn apply_conflict(group: &str, resource: &str, name: &str, causes: Vec<Cause>) -> Self {
        let n = causes.len();
        let mut message = if n == 1 {
            "Apply failed with 1 conflict: ".to_string()
        } else {
            format!("Apply failed with {n} conflicts: ")
        };
        let list: Vec<String> = causes.iter().map(|c| c.message.clone()).collect();
        message.push_str(&list.join("\n"));
        let mut e = Self::new(409, "Conflict", message).with_details(group, resource, name);
        set_causes(&mut e, &causes, "FieldManagerConflict");
        e
    }

    /// 422 Invalid with causes; `kind` is the Kind (e.g. `VirtualMachine`).
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let gk = qualified(kind, group);
        let parts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let body = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let message = format!("{gk} \"{name}\" is invalid: {body}");
        let mut e = Self::new(422, "Invalid", message).with_details(group, kind, name);
        set_causes(&mut e, &causes, "");
        e
    }

    /// 422 for a patch that cannot be applied.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 401 Unauthorized (missing or invalid credentials).
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden (used for creates in a terminating namespace).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 403 Forbidden for `resource` in `group` (details as `apierrors.NewForbidden` writes them).
    pub fn forbidden_resource(group: &str, resource: &str, name: &str, message: String) -> Self {
        let mut e = Self::new(403, "Forbidden", message);
        if !resource.is_empty() {
            e = e.with_details(group, resource, name);
        }
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 Gone (watch from a compacted resourceVersion).
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"
            ),
        )
    }

    /// 415 UnsupportedMediaType for a well-formed body of a kind that has no such form here.
    pub fn unsupported_kind(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 502 BadGateway (an aggregated server answered in a way that cannot be relayed).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, "BadGateway", message)
    }

    /// 503 ServiceUnavailable (an aggregated API whose service cannot be reached).
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` JSON body.
    pub fn status_body(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

fn set_causes(e: &mut ApiError, causes: &[Cause], default_reason: &str) {
    let list: Vec<Value> = causes
        .iter()
        .map(|c| {
            let reason = if c.reason.is_empty() {
                default_reason
            } else {
                &c.reason
            };
            json!({ "reason": reason, "message": c.message, "field": c.field })
        })
        .collect();
    if let Some(d) = e.details.as_mut() {
        d["causes"] = Value::Array(list);
    }
}

fn qualified(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

/// A success `Status` (used by deletes of collections).
pub fn success_status() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_names_the_field_in_causes() {
        let e = ApiError::invalid(
            "ironvisor.io",
            "VirtualMachine",
            "a",
            vec![Cause::new(
                "FieldValueInvalid",
                "spec.memory.size",
                "Invalid value: \"32Mi\": too small",
            )],
        );
        let b = e.status_body();
        assert_eq!(b["code"], 422);
        assert_eq!(b["details"]["causes"][0]["field"], "spec.memory.size");
        assert_eq!(
            b["message"],
            "VirtualMachine.ironvisor.io \"a\" is invalid: spec.memory.size: Invalid value: \"32Mi\": too small"
        );
    }
}
