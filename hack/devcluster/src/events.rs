//! The two Event APIs (core `v1` and `events.k8s.io/v1`) are one stored resource in two
//! shapes, as in a real cluster: an event written through either API reads through both.
//!
//! Pure field mapping; never stores anything.

use serde_json::{Map, Value};

/// Field pairs `(events.k8s.io/v1, core v1)`.
const PAIRS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
];

fn rename(obj: &Value, to_core: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let renamed = PAIRS.iter().find_map(|(new, old)| {
            if to_core && k == new {
                Some(*old)
            } else if !to_core && k == old {
                Some(*new)
            } else {
                None
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    Value::Object(out)
}

/// The stored event shown through `group` ("" for core, or `events.k8s.io`).
pub fn convert(obj: &Value, group: &str) -> Value {
    let stored_core = obj["apiVersion"].as_str() == Some("v1");
    let want_core = group.is_empty();
    if stored_core == want_core {
        return obj.clone();
    }
    let mut out = rename(obj, want_core);
    if want_core {
        if out["source"].is_null()
            && let Some(c) = obj["reportingController"].as_str()
        {
            out["source"] = serde_json::json!({"component": c});
        }
        if out["reportingComponent"].is_null() {
            out["reportingComponent"] = obj["reportingController"].clone();
        }
        if out["lastTimestamp"].is_null() {
            out["lastTimestamp"] = obj["series"]["lastObservedTime"].clone();
        }
        if let Some(n) = obj["series"]["count"].as_i64() {
            out["count"] = n.into();
        }
    } else if out["reportingController"].is_null() {
        out["reportingController"] = obj["reportingComponent"].clone();
        if out["reportingController"].is_null() {
            out["reportingController"] = obj["source"]["component"].clone();
        }
    }
    if let Some(m) = out.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    out["apiVersion"] = Value::String(if want_core {
        "v1".into()
    } else {
        "events.k8s.io/v1".into()
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_events_api_event_reads_as_a_core_event() {
        let e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "VirtualMachine", "name": "web"}, "note": "started", "reason": "Started",
            "type": "Normal", "reportingController": "ironvisor-operator", "eventTime": "2026-01-01T00:00:00.000000Z"});
        let c = convert(&e, "");
        assert_eq!(c["involvedObject"]["name"], "web");
        assert_eq!(c["message"], "started");
        assert_eq!(c["source"]["component"], "ironvisor-operator");
        let back = convert(&c, "events.k8s.io");
        assert_eq!(back["note"], "started");
        assert_eq!(back["regarding"]["name"], "web");
    }
}
