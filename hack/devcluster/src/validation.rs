//! Admission of custom resources: pruning, defaulting, structural validation and CEL rules
//! (`x-kubernetes-validations`, including `oldSelf` transition rules).
//!
//! Owns the order the apiserver uses (prune, default, validate, CEL) and the Invalid status.
//! Pure; the CEL engine is kube-cel.

use crate::error::{ApiError, Cause};
use crate::resource::ResourceInfo;
use crate::schema;
use serde_json::Value;

/// A CRD version's schema, ready to validate objects.
pub struct Compiled {
    schema: Value,
    cel: kube_cel::CompiledSchema,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").finish_non_exhaustive()
    }
}

impl Compiled {
    /// Compiles a schema and its CEL rules.
    pub fn new(schema: &Value) -> Self {
        Self {
            schema: schema.clone(),
            cel: kube_cel::compile_schema(schema),
        }
    }

    /// The schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }
}

/// How to treat unknown fields (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop silently.
    Ignore,
    /// Drop and warn.
    Warn,
    /// Reject.
    Strict,
}

thread_local! {
    // The validator registers every Kubernetes CEL function once per thread.
    static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

/// The schema node at a dotted path (`spec.memory.size`, `spec.disks[0].name`).
fn node_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (name, idx) = match seg.find('[') {
            Some(i) => (&seg[..i], Some(&seg[i..])),
            None => (seg, None),
        };
        if !name.is_empty() {
            cur = cur
                .get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| cur.get("additionalProperties"))?;
        }
        if let Some(idx) = idx {
            for _ in idx.matches('[') {
                cur = cur
                    .get("items")
                    .or_else(|| cur.get("additionalProperties"))?;
            }
        }
    }
    Some(cur)
}

/// The type shown in a CEL failure: the type of the schema node that declares the rule.
fn rule_type(root: &Value, field: &str, rule: &str) -> String {
    let mut path = field.to_string();
    loop {
        if let Some(n) = node_at(root, &path) {
            let declares = n["x-kubernetes-validations"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["rule"].as_str() == Some(rule)));
            if declares {
                return n["type"].as_str().unwrap_or("string").to_string();
            }
        }
        match path.rfind(['.', '[']) {
            Some(i) => path.truncate(i),
            None if !path.is_empty() => path.clear(),
            None => return "object".into(),
        }
    }
}

fn cel_causes(c: &Compiled, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let result = VALIDATOR.with(|v| v.validate_compiled(&c.cel, obj, old));
    let Err(errors) = result else { return vec![] };
    errors
        .iter()
        .map(|e| {
            let ty = rule_type(&c.schema, &e.field_path, &e.rule);
            let reason = e
                .reason
                .clone()
                .unwrap_or_else(|| "FieldValueInvalid".into());
            Cause::new(
                &reason,
                e.field_path.clone(),
                format!("Invalid value: \"{ty}\": {}", e.message),
            )
        })
        .collect()
}

/// Admits `obj` (old version `old` for updates): returns the pruned, defaulted object and
/// warnings, or 400 (strict unknown fields) / 422 Invalid.
pub fn admit(
    info: &ResourceInfo,
    compiled: Option<&Compiled>,
    mut obj: Value,
    old: Option<&Value>,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let Some(c) = compiled else {
        return Ok((obj, vec![]));
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut unknown = vec![];
    schema::prune(&c.schema, &mut obj, "", true, &mut unknown);
    let mut warnings = vec![];
    match fv {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                list.join(", "),
                kind = info.kind,
                v = info.version
            )));
        }
        FieldValidation::Warn => {
            warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")))
        }
        _ => {}
    }
    let mut obj = kube_cel::apply_defaults(&c.schema, &obj);
    // Defaults may carry fields the schema prunes; they never count as unknown.
    schema::prune(&c.schema, &mut obj, "", true, &mut vec![]);
    let mut causes = vec![];
    if let Some(m) = obj.as_object() {
        let props = c.schema.get("properties").and_then(Value::as_object);
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = props.and_then(|p| p.get(k)) {
                schema::validate(s, v, k, &mut causes);
            }
        }
        if let Some(req) = c.schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    causes.push(Cause::new("FieldValueRequired", r, "Required value"));
                }
            }
        }
    }
    if causes.is_empty() {
        causes = cel_causes(c, &obj, old);
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
    }
    Ok((obj, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info_and_schema() -> (ResourceInfo, Compiled) {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "memory": {"type": "object", "required": ["size"], "properties": {"size": {"x-kubernetes-int-or-string": true}},
                "x-kubernetes-validations": [{"rule": "quantity(string(self.size)).compareTo(quantity('64Mi')) >= 0",
                    "message": "size must be at least 64Mi", "fieldPath": ".size"}]},
            "tenant": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "tenant is immutable"}]},
            "cores": {"type": "integer", "default": 1}}}}});
        let crd = json!({"spec": {"group": "x.io", "names": {"kind": "Vm", "plural": "vms"}, "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema.clone()}}]}});
        let info = crate::resource::from_crd(&crd).remove(0);
        (info, Compiled::new(&schema))
    }

    #[test]
    fn a_cel_rule_with_field_path_names_the_field() {
        let (info, c) = info_and_schema();
        let obj = json!({"metadata": {"name": "a"}, "spec": {"memory": {"size": "32Mi"}}});
        let e = admit(&info, Some(&c), obj, None, FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 422);
        let body = e.status_body();
        assert_eq!(body["details"]["causes"][0]["field"], "spec.memory.size");
        assert_eq!(
            body["details"]["causes"][0]["message"],
            "Invalid value: \"object\": size must be at least 64Mi"
        );
    }

    #[test]
    fn transition_rules_see_the_old_object() {
        let (info, c) = info_and_schema();
        let old = json!({"metadata": {"name": "a"}, "spec": {"tenant": "t1"}});
        let new = json!({"metadata": {"name": "a"}, "spec": {"tenant": "t2"}});
        assert!(admit(&info, Some(&c), new.clone(), None, FieldValidation::Strict).is_ok());
        let e = admit(&info, Some(&c), new, Some(&old), FieldValidation::Strict).unwrap_err();
        assert_eq!(
            e.status_body()["details"]["causes"][0]["field"],
            "spec.tenant"
        );
    }

    #[test]
    fn defaults_fill_and_unknown_fields_follow_field_validation() {
        let (info, c) = info_and_schema();
        let obj = json!({"metadata": {"name": "a"}, "spec": {"bogus": 1}});
        let (out, warnings) =
            admit(&info, Some(&c), obj.clone(), None, FieldValidation::Warn).unwrap();
        assert_eq!(out["spec"], json!({"cores": 1}));
        assert_eq!(warnings, vec!["unknown field \"spec.bogus\"".to_string()]);
        let e = admit(&info, Some(&c), obj, None, FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .contains("strict decoding error: unknown field \"spec.bogus\""),
            "{}",
            e.message
        );
    }
}
