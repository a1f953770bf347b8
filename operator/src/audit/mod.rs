//! The audit trail of VirtualMachines: who created, changed and asked to delete each VM, as
//! Events on the VM and lines in the operator's log. Placement (Scheduled, Rescheduled,
//! Resized) is announced by the scheduler, starts and stops by the agents.
//!
//! Who asked: the API gives no requesting user to a controller. It records, per field, the
//! field manager that last wrote it (`metadata.managedFields`: `kubectl-client-side-apply`,
//! `kubectl-edit`, a GitOps tool's name), and that is what an entry names. The user behind a
//! request is in the API server's audit log (see docs/security.md).
//!
//! Pure: [`next`] decides; the controller in `controllers::audit` publishes and records.

use ironvisor_crds::vm::Audited;
use serde_json::Value;
use std::collections::BTreeMap;

/// An entry of the trail: the Event's reason and note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `Created`, `SpecChanged` or `DeletionRequested`.
    pub reason: &'static str,
    /// What happened, and by which field managers.
    pub note: String,
    /// What the VM's status records once the entry is announced.
    pub mark: Audited,
}

/// What the trail says next about a VM (its JSON object), or `None` when all is announced.
/// A deletion is announced once; a spec generation beyond the last announced one is
/// announced as Created (generation 1, nothing announced yet) or SpecChanged.
pub fn next(vm: &Value) -> Option<Entry> {
    let generation = vm["metadata"]["generation"].as_i64().unwrap_or(1);
    let mark: Audited = serde_json::from_value(vm["status"]["audited"].clone()).unwrap_or_default();
    let writers = spec_writes(vm);
    let deleting = vm["metadata"]["deletionTimestamp"].is_string();
    if deleting && !mark.deletion {
        return Some(Entry {
            reason: "DeletionRequested",
            note: "deletion requested (the requesting user is in the API server's audit log); \
                   the agent removes the guest, its domain and its disks"
                .into(),
            mark: Audited {
                generation: mark.generation.max(generation),
                deletion: true,
                writers,
            },
        });
    }
    if deleting || generation <= mark.generation {
        return None;
    }
    let by = by_whom(&new_writers(&writers, &mark.writers));
    let (reason, note) = if mark.generation == 0 && generation == 1 {
        ("Created", format!("created {by}"))
    } else {
        (
            "SpecChanged",
            format!("spec changed to generation {generation} {by}"),
        )
    };
    Some(Entry {
        reason,
        note,
        mark: Audited {
            generation,
            deletion: false,
            writers,
        },
    })
}

/// Each field manager that owns part of the spec, with the time of its last write.
pub fn spec_writes(vm: &Value) -> BTreeMap<String, String> {
    let Some(entries) = vm["metadata"]["managedFields"].as_array() else {
        return BTreeMap::new();
    };
    entries
        .iter()
        .filter(|e| e["subresource"].as_str().unwrap_or("").is_empty())
        .filter(|e| e["fieldsV1"].get("f:spec").is_some())
        .filter_map(|e| {
            let manager = e["manager"].as_str()?.to_owned();
            Some((manager, e["time"].as_str().unwrap_or("").to_owned()))
        })
        .collect()
}

/// Who made the change: the managers whose write is not the one last announced; when
/// none is (a manager wrote again within the same second), those with the latest write.
pub fn new_writers(
    now: &BTreeMap<String, String>,
    before: &BTreeMap<String, String>,
) -> Vec<String> {
    let fresh: Vec<String> = now
        .iter()
        .filter(|(m, t)| before.get(*m) != Some(*t))
        .map(|(m, _)| m.clone())
        .collect();
    if !fresh.is_empty() {
        return fresh;
    }
    let latest = now.values().max();
    now.iter()
        .filter(|(_, t)| Some(*t) == latest)
        .map(|(m, _)| m.clone())
        .collect()
}

fn by_whom(managers: &[String]) -> String {
    match managers {
        [] => "(no field manager recorded)".into(),
        [one] => format!("by field manager {one}"),
        many => format!("by field managers {}", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(generation: i64, audited: Value, managed: Value) -> Value {
        json!({
            "metadata": {"name": "a", "generation": generation, "managedFields": managed},
            "spec": {},
            "status": {"audited": audited},
        })
    }

    fn entry(manager: &str, time: &str, fields: Value) -> Value {
        json!({"manager": manager, "operation": "Update", "time": time, "fieldsV1": fields})
    }

    #[test]
    fn a_new_vm_is_announced_as_created_by_its_writer_once() {
        let managed = json!([entry(
            "kubectl-client-side-apply",
            "2026-11-30T05:00:00Z",
            json!({"f:spec": {}})
        )]);
        let v = vm(1, Value::Null, managed.clone());
        let e = next(&v).expect("an entry");
        assert_eq!(e.reason, "Created");
        assert_eq!(e.note, "created by field manager kubectl-client-side-apply");
        assert_eq!(e.mark.generation, 1);
        let announced = vm(1, serde_json::to_value(&e.mark).unwrap(), managed);
        assert_eq!(next(&announced), None, "announced once");
    }

    #[test]
    fn a_spec_change_names_the_latest_spec_writer_not_status_or_label_writers() {
        let managed = json!([
            entry("kubectl-client-side-apply", "2026-11-30T05:00:00Z", json!({"f:spec": {}})),
            entry("kubectl-edit", "2026-11-30T05:10:00Z", json!({"f:spec": {"f:cpu": {}}})),
            entry("ironvisor-operator", "2026-11-30T05:11:00Z", json!({"f:metadata": {}})),
            {"manager": "ironvisor-agent-h1", "operation": "Apply", "subresource": "status",
             "time": "2026-11-30T05:12:00Z", "fieldsV1": {"f:status": {}}},
        ]);
        let before = json!({"generation": 1,
            "writers": {"kubectl-client-side-apply": "2026-11-30T05:00:00Z"}});
        let e = next(&vm(3, before, managed)).expect("an entry");
        assert_eq!(e.reason, "SpecChanged");
        assert_eq!(
            e.note,
            "spec changed to generation 3 by field manager kubectl-edit"
        );
        assert_eq!(e.mark.generation, 3);
    }

    #[test]
    fn a_change_in_the_same_second_as_the_creation_names_the_new_writer_only() {
        let t = "2026-11-30T05:00:00Z";
        let managed = json!([
            entry("gitops-sync", t, json!({"f:spec": {"f:memory": {}}})),
            entry("kubectl-edit", t, json!({"f:spec": {"f:cpu": {}}})),
        ]);
        let before = json!({"generation": 1, "writers": {"gitops-sync": t}});
        let e = next(&vm(2, before, managed.clone())).expect("an entry");
        assert_eq!(
            e.note,
            "spec changed to generation 2 by field manager kubectl-edit"
        );
        // The same manager again within the second: it is still named.
        let again = json!({"generation": 2, "writers": {"gitops-sync": t, "kubectl-edit": t}});
        let e = next(&vm(3, again, managed)).expect("an entry");
        assert_eq!(
            e.note,
            "spec changed to generation 3 by field managers gitops-sync, kubectl-edit"
        );
    }

    #[test]
    fn a_deletion_is_announced_once_and_nothing_after_it() {
        let mut v = vm(2, json!({"generation": 2}), json!([]));
        v["metadata"]["deletionTimestamp"] = json!("2026-11-30T05:20:00Z");
        let e = next(&v).expect("an entry");
        assert_eq!(e.reason, "DeletionRequested");
        assert!(e.mark.deletion);
        v["status"]["audited"] = serde_json::to_value(&e.mark).unwrap();
        assert_eq!(next(&v), None);
    }

    #[test]
    fn a_tenant_cannot_silence_the_trail_through_metadata() {
        // The mark lives in the status; labels and annotations are not read.
        let mut v = vm(2, json!({"generation": 1}), json!([]));
        v["metadata"]["annotations"] = json!({"ironvisor.io/audited": "2"});
        assert_eq!(next(&v).map(|e| e.reason), Some("SpecChanged"));
        assert!(
            next(&v)
                .unwrap()
                .note
                .ends_with("(no field manager recorded)")
        );
    }
}
