//! Field sets as server-side apply sees them, and their `FieldsV1` encoding.
//!
//! A path is a list of tokens in the `FieldsV1` alphabet (`f:name`, `k:{"type":"Ready"}`,
//! `v:"x"`). A set holds leaf paths and list-item paths. The schema decides which lists are
//! merged by key (`x-kubernetes-list-type: map`), as sets, or replaced whole (atomic). Pure.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// One path.
pub type Path = Vec<String>;
/// A set of paths.
pub type FieldSet = BTreeSet<Path>;

/// How a list merges.
enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

fn metadata_schema() -> Value {
    json!({"type": "object", "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["uid"], "items": {"type": "object"}},
    }})
}

/// The schema of child `key` of an object schema.
pub fn child<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

fn list_type(schema: Option<&Value>) -> ListType {
    let Some(s) = schema else {
        return ListType::Atomic;
    };
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListType::Atomic,
    }
}

fn is_atomic_map(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("x-kubernetes-map-type"))
        .and_then(Value::as_str)
        == Some("atomic")
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// The tracked top-level fields of an object: everything but identity and server-owned
/// metadata. With `status_only` just `status`; with `skip_status` everything but `status`.
pub fn object_fields(obj: &Value, schema: Option<&Value>, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let keep = match scope {
            Scope::Status => k == "status",
            Scope::Main { skip_status } => {
                k != "apiVersion" && k != "kind" && !(skip_status && k == "status")
            }
        };
        if !keep {
            continue;
        }
        let mut prefix = vec![format!("f:{k}")];
        if k == "metadata" {
            let ms = metadata_schema();
            for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(mv) = v.get(mk) {
                    prefix.push(format!("f:{mk}"));
                    collect(mv, child(Some(&ms), mk), &mut prefix, &mut out);
                    prefix.pop();
                }
            }
        } else {
            collect(v, child(schema, k), &mut prefix, &mut out);
        }
    }
    out
}

/// Which part of an object a writer touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource (status excluded when a status subresource exists).
    Main {
        /// Leave `status` out.
        skip_status: bool,
    },
    /// The status subresource.
    Status,
}

fn collect(v: &Value, schema: Option<&Value>, prefix: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !is_atomic_map(schema) => {
            for (k, cv) in m {
                prefix.push(format!("f:{k}"));
                collect(cv, child(schema, k), prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => match list_type(schema) {
            ListType::Atomic => {
                out.insert(prefix.clone());
            }
            ListType::Set => {
                for it in items {
                    prefix.push(format!("v:{it}"));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            ListType::Map(keys) => {
                let item_schema = schema.and_then(|s| s.get("items"));
                for it in items {
                    prefix.push(item_key(it, &keys));
                    out.insert(prefix.clone());
                    if let Value::Object(m) = it {
                        for (k, cv) in m {
                            prefix.push(format!("f:{k}"));
                            collect(cv, child(item_schema, k), prefix, out);
                            prefix.pop();
                        }
                    }
                    prefix.pop();
                }
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn find_item(items: &[Value], tok: &str) -> Option<usize> {
    if let Some(k) = tok.strip_prefix("k:") {
        let want: Value = serde_json::from_str(k).ok()?;
        let want = want.as_object()?;
        items
            .iter()
            .position(|it| want.iter().all(|(wk, wv)| it.get(wk) == Some(wv)))
    } else if let Some(v) = tok.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        items.iter().position(|it| *it == want)
    } else {
        None
    }
}

/// The value at a path.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for tok in path {
        cur = if let Some(f) = tok.strip_prefix("f:") {
            cur.get(f)?
        } else {
            let items = cur.as_array()?;
            &items[find_item(items, tok)?]
        };
    }
    Some(cur)
}

/// Removes the value at a path (no-op when absent).
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for tok in parent {
        let next = if let Some(f) = tok.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            match cur.as_array_mut() {
                Some(items) => match find_item(items, tok) {
                    Some(i) => items.get_mut(i),
                    None => None,
                },
                None => None,
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut()
        && let Some(i) = find_item(items, last)
    {
        items.remove(i);
    }
}

/// Merges an applied configuration into a live object: objects field by field, map lists by
/// key, set lists by value; scalars and atomic lists are replaced.
pub fn merge(live: &mut Value, applied: &Value, schema: Option<&Value>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !is_atomic_map(schema) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) if !av.is_null() => merge(lv, av, child(schema, k)),
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match list_type(schema) {
            ListType::Atomic => *l = a.clone(),
            ListType::Set => {
                for it in a {
                    if !l.contains(it) {
                        l.push(it.clone());
                    }
                }
            }
            ListType::Map(keys) => {
                let item_schema = schema.and_then(|s| s.get("items"));
                for it in a {
                    match find_item(l, &item_key(it, &keys)) {
                        Some(i) => merge(&mut l[i], it, item_schema),
                        None => l.push(it.clone()),
                    }
                }
            }
        },
        (l, a) => *l = a.clone(),
    }
}

/// Encodes a set as `FieldsV1` JSON.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        insert_path(&mut root, path);
    }
    strip_leaf_dots(&mut root);
    Value::Object(root)
}

fn insert_path(node: &mut Map<String, Value>, path: &[String]) {
    match path.split_first() {
        // The path itself is a member: mark it ("." is dropped again for leaves).
        None => {
            node.insert(".".into(), Value::Object(Map::new()));
        }
        Some((tok, rest)) => {
            let entry = node
                .entry(tok.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                insert_path(m, rest);
            }
        }
    }
}

fn strip_leaf_dots(m: &mut Map<String, Value>) {
    for (_, v) in m.iter_mut() {
        if let Value::Object(c) = v {
            if c.len() == 1 && c.contains_key(".") {
                c.clear();
            } else {
                strip_leaf_dots(c);
            }
        }
    }
}

/// Decodes `FieldsV1` JSON into a set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
            return;
        }
        for (k, cv) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            prefix.push(k.clone());
            walk(cv, prefix, out);
            prefix.pop();
        }
    }
    walk(v, &mut vec![], &mut out);
    out
}

/// A path in the `.spec.cpu.cores` form used in conflict messages.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for tok in path {
        if let Some(f) = tok.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = tok.strip_prefix("k:") {
            s.push_str(&format!("[{k}]"));
        } else if let Some(v) = tok.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond_schema() -> Value {
        json!({"properties": {"status": {"properties": {"conditions": {"type": "array",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object"}}}}}})
    }

    #[test]
    fn fields_v1_round_trips_with_list_items() {
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "labels": {"x": "1"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let s = cond_schema();
        let set = object_fields(&obj, Some(&s), Scope::Main { skip_status: false });
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:x": {}}}, "f:status": {"f:conditions": {
                "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn merge_joins_map_lists_by_key_and_replaces_scalars() {
        let s = cond_schema();
        let mut live = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]}});
        merge(
            &mut live,
            &json!({"status": {"conditions": [{"type": "A", "status": "True"}]}}),
            Some(&s),
        );
        assert_eq!(live["status"]["conditions"][0]["status"], "True");
        assert_eq!(live["status"]["conditions"].as_array().unwrap().len(), 2);
        remove(
            &mut live,
            &[
                "f:status".into(),
                "f:conditions".into(),
                "k:{\"type\":\"B\"}".into(),
            ],
        );
        assert_eq!(live["status"]["conditions"].as_array().unwrap().len(), 1);
    }
}
