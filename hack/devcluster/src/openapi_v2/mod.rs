//! OpenAPI v2 (`/openapi/v2`): the Swagger 2.0 form of the v3 documents, as JSON or as the
//! gnostic protobuf that kubectl 1.28 and older download (`Accept:
//! application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) before `apply`, for
//! client-side validation, `explain --output plaintext-openapiv2`, and to learn which query
//! parameters (dryRun, fieldValidation) a PATCH accepts.
//!
//! Derived from `openapi` (the single source of schemas and operations); pure.

mod gnostic;

use crate::openapi;
use crate::registry::Registry;
use prost::Message;
use serde_json::{Map, Value, json};

/// Content type of the protobuf form.
pub const PROTO_MEDIA: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether an `Accept` header asks for the protobuf form (kubectl writes `@v1.0`, the
/// apiserver answers `.v1.0`; both are accepted).
pub fn wants_protobuf(accept: &str) -> bool {
    accept.contains("application/com.github.proto-openapi.spec.v2")
}

/// The document in protobuf.
pub fn protobuf(reg: &Registry) -> Vec<u8> {
    gnostic::document(&document(reg)).encode_to_vec()
}

/// The Swagger 2.0 document of everything served.
pub fn document(reg: &Registry) -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let Some(doc) = openapi::document(reg, &openapi::gv_path(&g, &v)) else {
                continue;
            };
            // Every document carries every built-in schema, tagged with its kind only in the
            // document of that kind's group/version: keep the tagged one.
            for (name, s) in doc["components"]["schemas"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if s.get("x-kubernetes-group-version-kind").is_some()
                    || !definitions.contains_key(name)
                {
                    definitions.insert(name.clone(), schema(s));
                }
            }
            for (path, item) in doc["paths"].as_object().into_iter().flatten() {
                paths.insert(path.clone(), path_item(path, item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
    })
}

/// An OpenAPI 3.0 schema in Swagger 2.0 terms: references point into `definitions`, and what
/// 2.0 cannot say (`nullable`, `oneOf`, `anyOf`, `not`) is left out, as the apiserver does.
fn schema(s: &Value) -> Value {
    let Some(m) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let v = match k.as_str() {
            "nullable" | "oneOf" | "anyOf" | "not" => continue,
            "$ref" => json!(
                v.as_str()
                    .unwrap_or_default()
                    .replace("#/components/schemas/", "#/definitions/")
            ),
            "properties" => Value::Object(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(p, ps)| (p.clone(), schema(ps)))
                    .collect(),
            ),
            "allOf" => Value::Array(v.as_array().into_iter().flatten().map(schema).collect()),
            "items" | "additionalProperties" => schema(v),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn path_item(path: &str, item: &Value) -> Value {
    let path_params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true}))
        .collect();
    let mut out = Map::new();
    for (method, op) in item.as_object().into_iter().flatten() {
        out.insert(method.clone(), operation(op, &path_params));
    }
    Value::Object(out)
}

fn operation(op: &Value, path_params: &[Value]) -> Value {
    let mut params: Vec<Value> = path_params.to_vec();
    for p in op["parameters"].as_array().into_iter().flatten() {
        let mut q = json!({"name": p["name"], "in": p["in"], "type": p["schema"]["type"],
            "uniqueItems": p["schema"]["uniqueItems"]});
        if let Some(d) = p["description"].as_str() {
            q["description"] = json!(d);
        }
        params.push(q);
    }
    let mut out = json!({
        "operationId": op["operationId"],
        "produces": ["application/json", "application/yaml"],
        "x-kubernetes-action": op["x-kubernetes-action"],
        "x-kubernetes-group-version-kind": op["x-kubernetes-group-version-kind"],
        "responses": {"200": {"description": "OK",
            "schema": schema(&op["responses"]["200"]["content"]["application/json"]["schema"])}},
    });
    if let Some(content) = op["requestBody"]["content"].as_object() {
        out["consumes"] = json!(content.keys().collect::<Vec<_>>());
        let body = content.values().next().map(|c| schema(&c["schema"]));
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": body}));
    }
    out["parameters"] = Value::Array(params);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn references_point_into_definitions_and_openapi3_only_keywords_are_dropped() {
        let s = json!({"type": "object", "nullable": true, "properties": {
            "a": {"allOf": [{"$ref": "#/components/schemas/X"}], "description": "d"},
            "b": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "c": {"type": "array", "items": {"$ref": "#/components/schemas/Y"}}}});
        assert_eq!(
            schema(&s),
            json!({"type": "object", "properties": {
                "a": {"allOf": [{"$ref": "#/definitions/X"}], "description": "d"},
                "b": {"x-kubernetes-int-or-string": true},
                "c": {"type": "array", "items": {"$ref": "#/definitions/Y"}}}})
        );
    }

    #[test]
    fn every_built_in_kind_is_defined_and_patch_operations_list_their_query_parameters() {
        let reg = Registry::build(&[]);
        let doc = document(&reg);
        let secret = &doc["definitions"]["io.k8s.api.core.v1.Secret"];
        assert_eq!(
            secret["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Secret"}])
        );
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "namespace",
                "name",
                "dryRun",
                "fieldManager",
                "fieldValidation",
                "force",
                "body"
            ]
        );
        let decoded = gnostic::Document::decode(protobuf(&reg).as_slice()).unwrap();
        assert_eq!(decoded, gnostic::document(&doc));
        assert_eq!(decoded.swagger, "2.0");
    }
}
