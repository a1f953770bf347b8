//! Validates objects against the generated CRD schemas the way the API server does at apply
//! time: the OpenAPI structural schema (types, enums, ranges, patterns, required fields),
//! `x-kubernetes-list-type: map` key uniqueness, and the CEL `x-kubernetes-validations`.
//! Shared by several test binaries; each uses only part of it.
#![allow(dead_code)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// The openAPIV3Schema of a CRD as JSON.
pub fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// Every error the API server would report, as `path: message` lines.
pub fn errors(crd: &CustomResourceDefinition, object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema_of(crd);
    let mut out = Vec::new();

    let structural = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .expect("schema compiles");
    for e in structural.iter_errors(object) {
        out.push(format!("{}: {}", dotted(&e.instance_path().to_string()), e));
    }
    list_map_duplicates(&schema, object, "", &mut out);
    if out.is_empty() {
        // The API server runs CEL rules only on structurally valid objects.
        if let Err(errs) = kube::core::cel::Validator::new().validate(&schema, object, old) {
            for e in errs.into_vec() {
                out.push(format!("{}: {}", e.field_path, e.message));
            }
        }
    }
    out
}

fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

fn list_map_duplicates(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(k)) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    list_map_duplicates(sub, v, &p, out);
                }
            }
        }
        Value::Array(items) => {
            let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<Value> = keys.iter().map(|k| item[*k].clone()).collect();
                    if seen.contains(&key) {
                        out.push(format!("{path}[{i}]: Duplicate value: {key:?}"));
                    }
                    seen.push(key);
                }
            }
            for (i, item) in items.iter().enumerate() {
                list_map_duplicates(&item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Set `value` at a dotted path (`spec.disks.0.name`), creating objects on the way.
pub fn set(object: &mut Value, path: &str, value: Value) {
    let mut cur = object;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        cur = match part.parse::<usize>() {
            Ok(idx) => {
                let arr = cur.as_array_mut().expect("path goes through an array");
                if last {
                    arr[idx] = value;
                    return;
                }
                &mut arr[idx]
            }
            Err(_) => {
                let obj = cur.as_object_mut().expect("path goes through an object");
                if last {
                    obj.insert((*part).to_owned(), value);
                    return;
                }
                obj.entry((*part).to_owned())
                    .or_insert_with(|| Value::Object(Default::default()))
            }
        };
    }
}

/// Remove the value at a dotted path.
pub fn remove(object: &mut Value, path: &str) {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut cur = object;
    if !parent.is_empty() {
        for part in parent.split('.') {
            cur = match part.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[part],
            };
        }
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.remove(last);
    }
}
