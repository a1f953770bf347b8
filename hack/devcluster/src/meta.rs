//! Object metadata rules: what the server sets on create and carries over on update.
//!
//! Owns uid, creationTimestamp, generation, name validation and the split between the main
//! resource and its status subresource. Pure; never stores anything.

use crate::error::{ApiError, Cause};
use crate::resource::ResourceInfo;
use serde_json::{Value, json};

/// Now, as RFC 3339 with second precision (the Kubernetes `Time` format).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why `name` is not a valid path segment (kube's `IsValidPathSegmentName`), if it is not.
fn invalid_path_segment(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    ["/", "%"]
        .iter()
        .find(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
}

fn random_suffix() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    let alphabet: Vec<char> = "bcdfghjklmnpqrstvwxz2456789".chars().collect();
    u.bytes()
        .take(5)
        .map(|b| alphabet[b as usize % alphabet.len()])
        .collect()
}

/// Fills server-owned metadata of a new object. `ns` is the namespace from the URL.
pub fn prepare_create(info: &ResourceInfo, mut obj: Value, ns: &str) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let kind_name = |o: &Value| {
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    if obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
        && let Some(g) = obj["metadata"]["generateName"].as_str()
    {
        obj["metadata"]["name"] = json!(format!("{g}{}", random_suffix()));
    }
    let name = kind_name(&obj);
    if name.is_empty() {
        return Err(ApiError::invalid(
            &info.group,
            &info.kind,
            "",
            vec![Cause::new(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )],
        ));
    }
    if info.group == "rbac.authorization.k8s.io" || info.group == "apiregistration.k8s.io" {
        // RBAC and APIService names are path segments (`system:masters`, `v1.` for the core
        // group), as the apiserver validates them; an APIService's is `<version>.<group>`.
        let gv = format!(
            "{}.{}",
            obj["spec"]["version"].as_str().unwrap_or_default(),
            obj["spec"]["group"].as_str().unwrap_or_default()
        );
        let why = invalid_path_segment(&name).or_else(|| {
            (info.kind == "APIService" && name != gv)
                .then(|| "must be `spec.version+\".\"+spec.group`".to_string())
        });
        if let Some(why) = why {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.name",
                    format!("Invalid value: \"{name}\": {why}"),
                )],
            ));
        }
    } else if !valid_name(&name) {
        return Err(ApiError::invalid(
            &info.group,
            &info.kind,
            &name,
            vec![Cause::new(
                "FieldValueInvalid",
                "metadata.name",
                format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )],
        ));
    }
    let body_ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if info.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let m = obj["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if info.namespaced {
        m.insert("namespace".into(), json!(ns));
    } else {
        m.remove("namespace");
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now()));
    if info.custom || info.kind == "CustomResourceDefinition" {
        // Only kinds with a spec carry a generation.
        m.insert("generation".into(), json!(1));
    }
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    obj["apiVersion"] = json!(info.api_version());
    obj["kind"] = json!(info.kind);
    if info.status_subresource && info.custom {
        // A create through the main resource cannot set status.
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    Ok(obj)
}

/// The fields that make up "spec" for generation purposes: everything but metadata and status.
fn spec_part(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    c
}

/// Builds the object to store from an update of `old` to `new` through the main resource
/// (`status == false`) or the status subresource.
pub fn prepare_update(
    info: &ResourceInfo,
    old: &Value,
    mut new: Value,
    status: bool,
) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    if status {
        // The status subresource changes status only.
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if out["status"].is_null()
            && let Some(o) = out.as_object_mut()
        {
            o.remove("status");
        }
        out["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
        if out["metadata"]["managedFields"].is_null()
            && let Some(m) = out["metadata"].as_object_mut()
        {
            m.remove("managedFields");
        }
        return Ok(out);
    }
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    if info.status_subresource {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    new["apiVersion"] = json!(info.api_version());
    new["kind"] = json!(info.kind);
    if old["metadata"]["generation"].is_i64() && spec_part(old) != spec_part(&new) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    Ok(new)
}

/// Finalizer of a Foreground deletion: dependents go first.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an Orphan deletion: dependents lose their owner reference and stay.
pub const ORPHAN: &str = "orphan";

/// The finalizers of an object.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an object is being deleted.
pub fn deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// Mark an object that is not yet being deleted as deleting, as kube-apiserver does
/// (`markAsDeleting`, `rest.BeforeDelete`): `deletionTimestamp` now, a grace period of 0 and
/// `generation` bumped, so controllers see a new generation for the change of behaviour.
/// An object already being deleted keeps its timestamp and generation.
pub fn mark_deleting(obj: &mut Value) {
    if deleting(obj) {
        return;
    }
    if let Some(g) = obj["metadata"]["generation"].as_i64().filter(|g| *g > 0) {
        obj["metadata"]["generation"] = json!(g + 1);
    }
    obj["metadata"]["deletionTimestamp"] = json!(now());
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::builtins;

    #[test]
    fn marking_as_deleting_bumps_a_set_generation_once() {
        let mut o = json!({"metadata": {"name": "a", "generation": 3}});
        mark_deleting(&mut o);
        assert!(deleting(&o));
        assert_eq!(o["metadata"]["generation"], 4);
        assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], 0);
        mark_deleting(&mut o);
        assert_eq!(o["metadata"]["generation"], 4);
        let mut ns = json!({"metadata": {"name": "n"}});
        mark_deleting(&mut ns);
        assert!(ns["metadata"].get("generation").is_none());
    }

    fn cm() -> ResourceInfo {
        builtins()
            .into_iter()
            .find(|r| r.kind == "ConfigMap")
            .unwrap()
    }

    #[test]
    fn create_sets_server_owned_metadata() {
        let o = prepare_create(
            &cm(),
            json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
            "default",
        )
        .unwrap();
        assert_eq!(o["metadata"]["namespace"], "default");
        assert!(
            o["metadata"]["generation"].is_null(),
            "config maps have no generation"
        );
        assert!(o["metadata"]["uid"].is_string());
        assert_eq!(o["kind"], "ConfigMap");
    }

    #[test]
    fn generation_moves_only_when_the_spec_changes() {
        let crd = json!({"spec": {"group": "x.io", "scope": "Namespaced",
            "names": {"kind": "Foo", "plural": "foos"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}});
        let foo = crate::resource::from_crd(&crd).remove(0);
        let old = prepare_create(
            &foo,
            json!({"metadata": {"name": "a"}, "spec": {"k": "v"}}),
            "d",
        )
        .unwrap();
        let mut labels = old.clone();
        labels["metadata"]["labels"] = json!({"x": "y"});
        let g = |o: Value| {
            prepare_update(&foo, &old, o, false).unwrap()["metadata"]["generation"].clone()
        };
        assert_eq!(g(labels), 1);
        let mut spec = old.clone();
        spec["spec"]["k"] = json!("w");
        assert_eq!(g(spec), 2);
    }

    #[test]
    fn bad_names_are_invalid() {
        let e = prepare_create(&cm(), json!({"metadata": {"name": "A_b"}}), "d").unwrap_err();
        assert_eq!(e.code, 422);
    }
}
