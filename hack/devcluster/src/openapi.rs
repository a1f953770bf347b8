//! OpenAPI v3: the `/openapi/v3` index and one document per group/version.
//!
//! Each document has a schema per kind tagged with `x-kubernetes-group-version-kind` (what
//! `kubectl explain` reads) and path operations, including PATCH with a `fieldValidation`
//! parameter (what tells `kubectl apply` that the server validates fields itself). Pure.

use crate::builtin_schemas;
use crate::registry::Registry;
use crate::resource::ResourceInfo;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `api/<v>` or `apis/<g>/<v>`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`.
pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let p = gv_path(&g, &v);
            let hash = document(reg, &p)
                .map(|d| hex::encode(&Sha256::digest(d.to_string().as_bytes())[..16]))
                .unwrap_or_default();
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// The schema name of a kind (reversed group, as the apiserver names them).
pub fn schema_name(info: &ResourceInfo) -> String {
    if !info.custom {
        return builtin_schemas::name_of(info);
    }
    let mut parts: Vec<&str> = info.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), info.version, info.kind)
}

fn gvk(info: &ResourceInfo) -> Value {
    json!({"group": info.group, "version": info.version, "kind": info.kind})
}

fn custom_schema(info: &ResourceInfo) -> Value {
    let mut s = info
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
        props.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
            "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
    }
    s
}

fn operation(info: &ResourceInfo, action: &str, schema_ref: &str, with_body: bool) -> Value {
    let mut params = vec![
        json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    ];
    if with_body {
        params.push(json!({"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.", "schema": {"type": "string", "uniqueItems": true}}));
    }
    if action == "patch" {
        params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    let body_ref = json!({"schema": {"$ref": schema_ref}});
    let mut op = json!({
        "operationId": format!("{action}{}", info.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": body_ref}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(info),
    });
    if with_body {
        let content = if action == "patch" {
            json!({"application/apply-patch+yaml": {"schema": {"type": "object"}},
                   "application/json-patch+json": {"schema": {"type": "object"}},
                   "application/merge-patch+json": {"schema": {"type": "object"}}})
        } else {
            json!({"application/json": body_ref})
        };
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

fn paths_for(info: &ResourceInfo, paths: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(&info.group, &info.version));
    let coll = if info.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", info.plural)
    } else {
        format!("{base}/{}", info.plural)
    };
    let r = format!("#/components/schemas/{}", schema_name(info));
    paths.insert(
        coll.clone(),
        json!({
            "get": operation(info, "list", &r, false),
            "post": operation(info, "post", &r, true),
        }),
    );
    let one = json!({
        "get": operation(info, "get", &r, false),
        "put": operation(info, "put", &r, true),
        "patch": operation(info, "patch", &r, true),
        "delete": operation(info, "delete", &r, false),
    });
    paths.insert(format!("{coll}/{{name}}"), one.clone());
    if info.status_subresource {
        paths.insert(format!("{coll}/{{name}}/status"), one);
    }
}

/// The document at `/openapi/v3/<path>` (`api/v1` or `apis/<g>/<v>`).
pub fn document(reg: &Registry, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.split('/').collect();
    let (g, v) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let served = reg.in_group_version(g, v);
    if served.is_empty() {
        return None;
    }
    let mut schemas = builtin_schemas::common();
    let mut paths = Map::new();
    for s in &served {
        let info = &s.info;
        paths_for(info, &mut paths);
        if info.custom {
            let mut schema = custom_schema(info);
            schema["x-kubernetes-group-version-kind"] = json!([gvk(info)]);
            schemas.insert(schema_name(info), schema);
        } else {
            builtin_schemas::add(info, &mut schemas);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
