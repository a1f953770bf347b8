//! Field ownership: `metadata.managedFields` bookkeeping for updates and server-side apply.
//!
//! Owns who manages which field and the apply merge/conflict rules. It never validates
//! objects and never stores them. Pure.

use crate::fieldpath::{self, FieldSet, Path, Scope};
use serde_json::{Value, json};

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the fields were written with.
    pub api_version: String,
    /// When.
    pub time: String,
    /// `status` or "".
    pub subresource: String,
    /// Owned fields.
    pub set: FieldSet,
}

/// One apply conflict: a field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// apiVersion of its entry.
    pub api_version: String,
    /// The field.
    pub path: Path,
}

/// The context of one write.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// Field manager.
    pub manager: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// `status` or "".
    pub subresource: &'a str,
    /// Which part of the object the write touches.
    pub scope: Scope,
    /// The object schema, when known (decides list merge types).
    pub schema: Option<&'a Value>,
    /// Timestamp to record.
    pub now: &'a str,
}

/// Reads `metadata.managedFields`.
pub fn read(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().unwrap_or_default().into(),
                    set: fieldpath::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.managedFields` (dropping entries that own nothing).
pub fn write(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fieldpath::to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn entry_index(entries: &mut Vec<Entry>, w: &Writer<'_>, operation: &str) -> usize {
    if let Some(i) = entries.iter().position(|e| {
        e.manager == w.manager && e.operation == operation && e.subresource == w.subresource
    }) {
        return i;
    }
    entries.push(Entry {
        manager: w.manager.into(),
        operation: operation.into(),
        api_version: w.api_version.into(),
        time: w.now.into(),
        subresource: w.subresource.into(),
        set: FieldSet::new(),
    });
    entries.len() - 1
}

/// Records a non-apply write (create, update, patch): the writer takes the fields it changed,
/// everyone loses fields that are gone. `new` gets its managedFields rewritten.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut entries = old.map(read).unwrap_or_default();
    let null = Value::Null;
    let old_obj = old.unwrap_or(&null);
    let old_set = fieldpath::object_fields(old_obj, w.schema, w.scope);
    let new_set = fieldpath::object_fields(new, w.schema, w.scope);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| fieldpath::get(old_obj, p) != fieldpath::get(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    if !changed.is_empty() || !removed.is_empty() {
        let me = entry_index(&mut entries, w, "Update");
        for (i, e) in entries.iter_mut().enumerate() {
            e.set
                .retain(|p| !removed.contains(p) && (i == me || !changed.contains(p)));
        }
        let e = &mut entries[me];
        e.set.extend(changed);
        e.time = w.now.into();
        e.api_version = w.api_version.into();
    }
    write(new, &entries);
}

fn is_item(path: &Path) -> bool {
    path.last().is_some_and(|t| !t.starts_with("f:"))
}

/// Server-side apply of `applied` onto `live` (None: the object does not exist yet).
/// Returns the merged object with updated managedFields, or the conflicts when not forced.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    force: bool,
    w: &Writer<'_>,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = live.map(read).unwrap_or_default();
    let applied_set = fieldpath::object_fields(applied, w.schema, w.scope);
    let me = entry_index(&mut entries, w, "Apply");
    let null = Value::Null;
    let live_obj = live.unwrap_or(&null);
    let mut conflicts = vec![];
    for (i, e) in entries.iter().enumerate() {
        if i == me {
            continue;
        }
        for p in e.set.intersection(&applied_set) {
            if !is_item(p) && fieldpath::get(live_obj, p) != fieldpath::get(applied, p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts
            .into_iter()
            .map(|(i, path)| Conflict {
                manager: entries[i].manager.clone(),
                api_version: entries[i].api_version.clone(),
                path,
            })
            .collect());
    }
    for (i, p) in &conflicts {
        entries[*i].set.remove(p);
    }
    let mut merged = live.cloned().unwrap_or_else(|| json!({"metadata": {}}));
    merge_scoped(&mut merged, applied, w);
    let previous = std::mem::take(&mut entries[me].set);
    let mut gone: Vec<&Path> = previous
        .difference(&applied_set)
        .filter(|p| !entries.iter().any(|e| e.set.contains(*p)))
        .collect();
    // Deepest first, so removing a list item cannot shift a sibling still to be removed.
    gone.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in gone {
        fieldpath::remove(&mut merged, p);
    }
    let e = &mut entries[me];
    e.set = applied_set;
    e.time = w.now.into();
    e.api_version = w.api_version.into();
    write(&mut merged, &entries);
    Ok(merged)
}

fn merge_scoped(merged: &mut Value, applied: &Value, w: &Writer<'_>) {
    let Some(a) = applied.as_object() else { return };
    for (k, v) in a {
        let take = match w.scope {
            Scope::Status => k == "status",
            Scope::Main { skip_status } => {
                !(skip_status && k == "status") && k != "apiVersion" && k != "kind"
            }
        };
        if !take {
            continue;
        }
        if k == "metadata" {
            for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(mv) = v.get(mk) {
                    let ms = json!({"properties": {
                        "finalizers": {"x-kubernetes-list-type": "set"},
                        "ownerReferences": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"]}}});
                    let slot = &mut merged["metadata"][mk];
                    if slot.is_null() {
                        *slot = mv.clone();
                    } else {
                        fieldpath::merge(slot, mv, fieldpath::child(Some(&ms), mk));
                    }
                }
            }
            continue;
        }
        let slot = &mut merged[k.as_str()];
        if slot.is_null() {
            *slot = v.clone();
        } else {
            fieldpath::merge(slot, v, fieldpath::child(w.schema, k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer<'a>(m: &'a str) -> Writer<'a> {
        Writer {
            manager: m,
            api_version: "x.io/v1",
            subresource: "",
            scope: Scope::Main { skip_status: true },
            schema: None,
            now: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let a = json!({"apiVersion": "x.io/v1", "kind": "K", "metadata": {"name": "n"}, "spec": {"a": 1, "b": 2}});
        let live = apply(None, &a, false, &writer("one")).unwrap();
        let b = json!({"apiVersion": "x.io/v1", "kind": "K", "metadata": {"name": "n"}, "spec": {"a": 5}});
        let err = apply(Some(&live), &b, false, &writer("two")).unwrap_err();
        assert_eq!(err[0].manager, "one");
        assert_eq!(fieldpath::display(&err[0].path), ".spec.a");
        let forced = apply(Some(&live), &b, true, &writer("two")).unwrap();
        assert_eq!(forced["spec"]["a"], 5);
        assert_eq!(forced["spec"]["b"], 2);
        let owners = read(&forced);
        assert_eq!(owners.len(), 2);
    }

    #[test]
    fn a_field_dropped_from_the_applied_config_is_removed() {
        let a = json!({"metadata": {"name": "n"}, "spec": {"a": 1, "b": 2}});
        let live = apply(None, &a, false, &writer("one")).unwrap();
        let b = json!({"metadata": {"name": "n"}, "spec": {"a": 1}});
        let next = apply(Some(&live), &b, false, &writer("one")).unwrap();
        assert_eq!(next["spec"], json!({"a": 1}));
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let a = json!({"metadata": {"name": "n"}, "spec": {"a": 1, "b": 2}});
        let live = apply(None, &a, false, &writer("one")).unwrap();
        let mut upd = live.clone();
        upd["spec"]["a"] = json!(3);
        record_update(Some(&live), &mut upd, &writer("editor"));
        let e = read(&upd);
        let editor = e.iter().find(|e| e.manager == "editor").unwrap();
        assert_eq!(editor.set.len(), 1);
        let one = e.iter().find(|e| e.manager == "one").unwrap();
        assert_eq!(one.set.len(), 1);
    }
}
