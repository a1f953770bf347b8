//! Behaviour specific to a few built-in kinds: Namespace phase and finalizer, CRD status.
//!
//! Pure hooks called by the write path; they never store anything.

use crate::resource::ResourceInfo;
use serde_json::{Value, json};

/// Fills kind-specific server fields on create and update.
pub fn on_write(info: &ResourceInfo, obj: &mut Value) {
    if info.custom {
        return;
    }
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") => {
            if obj["spec"]["finalizers"].is_null() {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            let phase = if obj["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                "Active"
            };
            obj["status"]["phase"] = json!(phase);
            let name = obj["metadata"]["name"].clone();
            let labels = &mut obj["metadata"]["labels"];
            if labels.is_null() {
                *labels = json!({});
            }
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), name);
            }
        }
        ("", "Secret") => {
            if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
                use base64::Engine;
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or_default();
                    obj["data"][k.as_str()] =
                        json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
                if let Some(o) = obj.as_object_mut() {
                    o.remove("stringData");
                }
            }
            if obj["type"].is_null() {
                obj["type"] = json!("Opaque");
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let names = obj["spec"]["names"].clone();
            let mut accepted = names.clone();
            if accepted["singular"].is_null()
                && let Some(k) = names["kind"].as_str()
            {
                accepted["singular"] = json!(k.to_lowercase());
            }
            if accepted["listKind"].is_null()
                && let Some(k) = names["kind"].as_str()
            {
                accepted["listKind"] = json!(format!("{k}List"));
            }
            let stored: Vec<Value> = obj["spec"]["versions"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v["storage"] == json!(true))
                        .map(|v| v["name"].clone())
                        .collect()
                })
                .unwrap_or_default();
            if obj["status"]["acceptedNames"] == accepted && obj["status"]["conditions"].is_array()
            {
                // Already established with these names: keep the transition times.
                obj["status"]["storedVersions"] = json!(stored);
                return;
            }
            let now = crate::meta::now();
            let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
            obj["status"] = json!({
                "acceptedNames": accepted,
                "storedVersions": stored,
                "conditions": [
                    cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                    cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                ],
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::builtins;

    fn info(kind: &str) -> ResourceInfo {
        builtins().into_iter().find(|r| r.kind == kind).unwrap()
    }

    #[test]
    fn a_crd_is_established_once_and_keeps_its_condition_times() {
        let crd = info("CustomResourceDefinition");
        let mut o = json!({"spec": {"names": {"kind": "Foo", "plural": "foos"},
            "versions": [{"name": "v1", "storage": true}]}});
        on_write(&crd, &mut o);
        assert_eq!(o["status"]["conditions"][1]["type"], "Established");
        assert_eq!(o["status"]["acceptedNames"]["listKind"], "FooList");
        let mut again = o.clone();
        again["status"]["conditions"][1]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        on_write(&crd, &mut again);
        assert_eq!(
            again["status"]["conditions"][1]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut o = json!({"stringData": {"a": "hello"}, "data": {"b": "eA=="}});
        on_write(&info("Secret"), &mut o);
        assert_eq!(
            o,
            json!({"data": {"a": "aGVsbG8=", "b": "eA=="}, "type": "Opaque"})
        );
    }
}
