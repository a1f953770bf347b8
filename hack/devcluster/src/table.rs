//! `meta.k8s.io/v1` Table rendering: printer columns for custom resources, sensible columns
//! for built-ins, and the human ages kubectl shows.
//!
//! Pure; takes objects and returns JSON.

use crate::resource::{PrinterColumn, ResourceInfo};
use serde_json::{Value, json};

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// The representation a client asked for with its Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The objects themselves.
    Full,
    /// `as=Table`, rows carrying `Include`.
    Table(Include),
    /// `as=PartialObjectMetadata(List)`: metadata only.
    Metadata,
}

impl Form {
    /// From an Accept header and the `includeObject` parameter.
    pub fn negotiate(accept: &str, include: Option<&str>) -> Self {
        if accept.contains("as=Table") {
            Self::Table(Include::parse(include))
        } else if accept.contains("as=PartialObjectMetadata") {
            Self::Metadata
        } else {
            Self::Full
        }
    }
}

/// An object reduced to `PartialObjectMetadata`.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A list of `PartialObjectMetadata`.
pub fn partial_list(objs: &[Value], rv: u64, cont: Option<String>) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "items": objs.iter().map(partial).collect::<Vec<_>>()})
}

/// What each row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// From the `includeObject` parameter.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

fn col(name: &str, type_: &str, json_path: &str, desc: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: desc.into(),
        priority: 0,
        json_path: json_path.into(),
    }
}

/// The columns (after Name) for a resource.
pub fn columns(info: &ResourceInfo) -> Vec<PrinterColumn> {
    let age = col(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    if info.custom {
        if info.columns.is_empty() {
            return vec![age];
        }
        return info.columns.clone();
    }
    match info.kind.as_str() {
        "Namespace" => vec![
            col(
                "Status",
                "string",
                ".status.phase",
                "The status of the namespace",
            ),
            age,
        ],
        "ConfigMap" => vec![col("Data", "integer", "#data", "Number of data items"), age],
        "Node" => vec![
            col(
                "Unschedulable",
                "boolean",
                ".spec.unschedulable",
                "Cordoned: no new pods are scheduled here",
            ),
            age,
        ],
        "Secret" => vec![
            col("Type", "string", ".type", "The type of the secret"),
            col("Data", "integer", "#data", "Number of data items"),
            age,
        ],
        "ServiceAccount" => vec![
            col("Secrets", "integer", "#secrets", "Number of secrets"),
            age,
        ],
        "Lease" => vec![
            col(
                "Holder",
                "string",
                ".spec.holderIdentity",
                "The holder of the lease",
            ),
            age,
        ],
        "Event" => vec![
            col(
                "Last Seen",
                "date",
                "#lastSeen",
                "Time of the last occurrence",
            ),
            col("Type", "string", ".type", "Type of the event"),
            col("Reason", "string", ".reason", "Why the event happened"),
            col(
                "Object",
                "string",
                "#object",
                "The object the event is about",
            ),
            col("Message", "string", "#message", "What happened"),
        ],
        "APIService" => vec![
            col(
                "Service",
                "string",
                "#service",
                "The service the API is proxied to, or Local",
            ),
            col(
                "Available",
                "string",
                "#available",
                "Whether the API is available, with the reason when it is not",
            ),
            age,
        ],
        "Service" => vec![
            col("Type", "string", ".spec.type", "The type of the service"),
            col("Cluster-IP", "string", ".spec.clusterIP", "The cluster IP"),
            col("Ports", "string", "#ports", "The ports of the service"),
            age,
        ],
        "EndpointSlice" => vec![
            col(
                "AddressType",
                "string",
                ".addressType",
                "The type of the addresses",
            ),
            col("Ports", "string", "#ports", "The ports of the slice"),
            col(
                "Endpoints",
                "string",
                "#endpoints",
                "The first addresses of the slice",
            ),
            age,
        ],
        "CustomResourceDefinition" => vec![col(
            "Created At",
            "date",
            "#createdAt",
            "When the CRD was created",
        )],
        _ => vec![age],
    }
}

/// A duration in kubectl's short human form (`5s`, `3m2s`, `4h`, `2d5h`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age_of(ts: &str) -> Value {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => json!(human_duration(
            jiff::Timestamp::now().as_second() - t.as_second()
        )),
        Err(_) => Value::Null,
    }
}

/// Evaluates a kubectl-style JSONPath (`.status.conditions[?(@.type=="Ready")].status`).
pub fn eval_path(obj: &Value, path: &str) -> Option<Value> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let full = if p.starts_with('$') {
        p.to_string()
    } else {
        format!("${p}")
    };
    let found = jsonpath_rust::query::js_path_vals(&full, obj).ok()?;
    found.first().map(|v| (*v).clone())
}

fn special(obj: &Value, key: &str) -> Value {
    match key {
        "#data" => {
            let n = obj["data"].as_object().map_or(0, |m| m.len())
                + obj["binaryData"].as_object().map_or(0, |m| m.len());
            json!(n)
        }
        "#secrets" => json!(obj["secrets"].as_array().map_or(0, |a| a.len())),
        "#lastSeen" => {
            let ts = ["lastTimestamp", "eventTime", "deprecatedLastTimestamp"]
                .iter()
                .find_map(|k| obj[*k].as_str())
                .or_else(|| obj["metadata"]["creationTimestamp"].as_str())
                .unwrap_or_default();
            age_of(ts)
        }
        "#object" => {
            let r = if obj["involvedObject"].is_object() {
                &obj["involvedObject"]
            } else {
                &obj["regarding"]
            };
            json!(format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or_default().to_lowercase(),
                r["name"].as_str().unwrap_or_default()
            ))
        }
        "#message" => obj["message"]
            .as_str()
            .or_else(|| obj["note"].as_str())
            .map(|s| json!(s))
            .unwrap_or(Value::Null),
        "#createdAt" => obj["metadata"]["creationTimestamp"].clone(),
        "#service" => crate::aggregator::apiservice::service_column(obj),
        "#available" => crate::aggregator::apiservice::available_column(obj),
        "#ports" => ports_column(obj),
        "#endpoints" => {
            let addrs: Vec<&str> = obj["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            json!(if addrs.is_empty() {
                "<unset>".to_string()
            } else {
                addrs.join(",")
            })
        }

        _ => Value::Null,
    }
}

fn cell(obj: &Value, c: &PrinterColumn) -> Value {
    let v = if c.json_path.starts_with('#') {
        special(obj, &c.json_path)
    } else {
        eval_path(obj, &c.json_path).unwrap_or(Value::Null)
    };
    if c.json_path.starts_with('#') && c.json_path != "#lastSeen" {
        return v;
    }
    match (c.type_.as_str(), &v) {
        ("date", Value::String(s)) if !c.json_path.starts_with('#') => age_of(s),
        ("string", Value::Object(_) | Value::Array(_)) => json!(v.to_string()),
        _ => v,
    }
}

/// Column definitions, Name first.
pub fn column_definitions(info: &ResourceInfo) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESC, "priority": 0}),
    ];
    for c in columns(info) {
        defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    Value::Array(defs)
}

/// One table row.
pub fn row(info: &ResourceInfo, obj: &Value, include: Include) -> Value {
    let mut cells = vec![obj["metadata"]["name"].clone()];
    for c in columns(info) {
        cells.push(cell(obj, &c));
    }
    let mut r = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Metadata => {
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]});
        }
        Include::Object => r["object"] = obj.clone(),
    }
    r
}

/// A whole table.
pub fn table(
    info: &ResourceInfo,
    objs: &[Value],
    rv: u64,
    cont: Option<String>,
    include: Include,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": column_definitions(info),
        "rows": objs.iter().map(|o| row(info, o, include)).collect::<Vec<_>>(),
    })
}

/// `443/TCP,80/TCP` of a Service's `spec.ports` or an EndpointSlice's `ports`.
fn ports_column(obj: &Value) -> Value {
    let ports = obj["spec"]["ports"]
        .as_array()
        .or_else(|| obj["ports"].as_array());
    let shown: Vec<String> = ports
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p["port"].as_i64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or("TCP")
            )
        })
        .collect();
    json!(if shown.is_empty() {
        "<none>".to_string()
    } else {
        shown.join(",")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60 * 3), "5h3m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }

    #[test]
    fn filter_paths_pick_the_matching_condition() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            eval_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(eval_path(&o, ".spec.x"), None);
    }
}
