//! Patch bodies: JSON merge patch, JSON patch, and strategic merge patch (as merge patch).
//!
//! Pure transformations of JSON values; never looks at schemas or storage.

use crate::error::ApiError;
use serde_json::Value;

/// The patch types the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json` (applied as a merge patch).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media(other)),
        }
    }
}

/// Parses a JSON or YAML document into JSON (400 on malformed input).
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        });
    }
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| {
                !k.starts_with("$setElementOrder/") && k != "$retainKeys" && k != "$patch"
            });
            for (_, c) in m.iter_mut() {
                strip_directives(c);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Applies a non-apply patch to `target`.
pub fn apply_patch(kind: PatchType, target: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            json_patch_like_kubernetes(target, p)
        }
        PatchType::Merge | PatchType::Strategic => {
            let mut p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            if kind == PatchType::Strategic {
                strip_directives(&mut p);
            }
            json_patch::merge(target, &p);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::internal(
            "apply patches are handled by server-side apply",
        )),
    }
}

/// RFC 6902 as the Kubernetes API server applies it: a `test` of `null` passes on a missing
/// path (clients such as kube-rs' finalizer helper test `/metadata/finalizers` against null
/// before adding the first one). All or nothing.
fn json_patch_like_kubernetes(target: &mut Value, p: json_patch::Patch) -> Result<(), ApiError> {
    let mut work = target.clone();
    for (i, op) in p.0.into_iter().enumerate() {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && work.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut work, &[op]).map_err(|e| {
            ApiError::unprocessable(e.to_string().replacen(
                "operation '/0'",
                &format!("operation '/{i}'"),
                1,
            ))
        })?;
    }
    *target = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_json_patch_replaces() {
        let mut v = json!({"a": 1, "b": {"c": 2}});
        apply_patch(PatchType::Merge, &mut v, br#"{"b": null, "d": 3}"#).unwrap();
        assert_eq!(v, json!({"a": 1, "d": 3}));
        apply_patch(
            PatchType::Json,
            &mut v,
            br#"[{"op": "replace", "path": "/a", "value": 9}]"#,
        )
        .unwrap();
        assert_eq!(v["a"], 9);
        let e = apply_patch(
            PatchType::Json,
            &mut v,
            br#"[{"op": "remove", "path": "/zz"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
    }

    #[test]
    fn a_json_patch_test_of_null_passes_on_a_missing_path_and_failures_change_nothing() {
        let mut v = json!({"metadata": {"name": "a"}});
        apply_patch(
            PatchType::Json,
            &mut v,
            br#"[{"op": "test", "path": "/metadata/finalizers", "value": null},
                 {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]"#,
        )
        .unwrap();
        assert_eq!(v["metadata"]["finalizers"], json!(["f"]));
        let e = apply_patch(
            PatchType::Json,
            &mut v,
            br#"[{"op": "add", "path": "/metadata/x", "value": 1},
                 {"op": "test", "path": "/metadata/finalizers", "value": null}]"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(v["metadata"].get("x").is_none(), "all or nothing");
    }

    #[test]
    fn yaml_and_json_bodies_parse_and_garbage_is_a_bad_request() {
        assert_eq!(
            parse_body(b"a: 1\nb: [x]\n").unwrap(),
            json!({"a": 1, "b": ["x"]})
        );
        assert_eq!(parse_body(b"{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert_eq!(parse_body(b"{\"a\": ").unwrap_err().code, 400);
        assert_eq!(parse_body(b"a: [1\n").unwrap_err().code, 400);
    }
}
