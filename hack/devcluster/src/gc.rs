//! Background garbage collection: namespace deletion, ownerReferences, and the objects of
//! deleted CRDs.
//!
//! Owns deciding which objects must go; deletes them through the store like a client would
//! (finalizers are respected). Runs after every deletion and once a second.

use crate::app::{App, CRD_KEY, NS_KEY};
use crate::meta;
use crate::store::{Change, ns_name};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Deletes one object the way a Background delete does: mark it when it has finalizers,
/// remove it otherwise.
fn delete(app: &App, key: &str, obj: &Value) {
    let (ns, name) = ns_name(obj);
    let _ = app.store.mutate(key, &ns, &name, false, |cur| {
        let Some(cur) = cur else {
            return Ok(Change::Unchanged(Value::Null));
        };
        if meta::finalizers(cur).is_empty() {
            return Ok(Change::Delete);
        }
        if meta::deleting(cur) {
            return Ok(Change::Unchanged(cur.clone()));
        }
        let mut o = cur.clone();
        meta::mark_deleting(&mut o);
        Ok(Change::Put(o))
    });
}

fn strip_finalizer(app: &App, key: &str, obj: &Value, fin: &str) {
    let (ns, name) = ns_name(obj);
    let _ = app.store.mutate(key, &ns, &name, false, |cur| {
        let Some(cur) = cur else {
            return Ok(Change::Unchanged(Value::Null));
        };
        let left: Vec<String> = meta::finalizers(cur)
            .into_iter()
            .filter(|f| f != fin)
            .collect();
        if left.is_empty() && meta::deleting(cur) {
            return Ok(Change::Delete);
        }
        let mut o = cur.clone();
        o["metadata"]["finalizers"] = json!(left);
        Ok(Change::Put(o))
    });
}

fn drop_owner(app: &App, key: &str, obj: &Value, uid: &str) {
    let (ns, name) = ns_name(obj);
    let _ = app.store.mutate(key, &ns, &name, false, |cur| {
        let Some(cur) = cur else {
            return Ok(Change::Unchanged(Value::Null));
        };
        let mut o = cur.clone();
        if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| r["uid"].as_str() != Some(uid));
        }
        Ok(Change::Put(o))
    });
}

/// Foreground and Orphan deletions: act on the dependents, then release the owner.
fn propagate(app: &App, all: &[(String, Arc<Value>)]) {
    for (key, owner) in all {
        let fins = meta::finalizers(owner);
        let (fg, orphan) = (
            fins.iter().any(|f| f == meta::FOREGROUND),
            fins.iter().any(|f| f == meta::ORPHAN),
        );
        if !meta::deleting(owner) || !(fg || orphan) {
            continue;
        }
        let Some(uid) = owner["metadata"]["uid"].as_str() else {
            continue;
        };
        let owned_by = |o: &Value| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["uid"].as_str() == Some(uid)))
        };
        let dependents: Vec<&(String, Arc<Value>)> =
            all.iter().filter(|(_, o)| owned_by(o)).collect();
        if orphan {
            for (k, d) in &dependents {
                drop_owner(app, k, d, uid);
            }
            strip_finalizer(app, key, owner, meta::ORPHAN);
        } else if dependents.is_empty() {
            strip_finalizer(app, key, owner, meta::FOREGROUND);
        } else {
            for (k, d) in dependents {
                if !meta::deleting(d) {
                    delete(app, k, d);
                }
            }
        }
    }
}

/// One collection pass.
pub fn pass(app: &App) {
    crate::auth::aggregation::pass(app);
    let reg = app.registry();
    let served: HashSet<String> = reg.all().iter().map(|s| s.info.storage_key()).collect();
    let keys = app.store.keys();
    // Objects of resources no CRD serves any more.
    for key in &keys {
        if !served.contains(key) {
            for o in app.store.list(key, None).0 {
                delete(app, key, &o);
            }
        }
    }
    // Terminating namespaces: empty them, then let them go.
    let (namespaces, _) = app.store.list(NS_KEY, None);
    for ns in namespaces.iter().filter(|n| meta::deleting(n)) {
        let (_, name) = ns_name(ns);
        let mut left = 0;
        for key in keys.iter().filter(|k| *k != NS_KEY && *k != CRD_KEY) {
            for o in app.store.list(key, Some(&name)).0 {
                left += 1;
                if !meta::deleting(&o) {
                    delete(app, key, &o);
                }
            }
        }
        if left == 0 {
            let _ = app.store.mutate(NS_KEY, "", &name, false, |cur| match cur {
                Some(c) if meta::finalizers(c).is_empty() => Ok(Change::Delete),
                Some(c) => Ok(Change::Unchanged(c.clone())),
                None => Ok(Change::Unchanged(Value::Null)),
            });
        }
    }
    let mut all = vec![];
    for key in &keys {
        all.extend(
            app.store
                .list(key, None)
                .0
                .into_iter()
                .map(|o| (key.clone(), o)),
        );
    }
    propagate(app, &all);
    // Dependents whose owners are all gone.
    let uids: HashSet<&str> = all
        .iter()
        .filter_map(|(_, o)| o["metadata"]["uid"].as_str())
        .collect();
    for (key, o) in &all {
        let Some(refs) = o["metadata"]["ownerReferences"]
            .as_array()
            .filter(|a| !a.is_empty())
        else {
            continue;
        };
        let orphaned = refs
            .iter()
            .all(|r| r["uid"].as_str().is_none_or(|u| !uids.contains(u)));
        if orphaned && !meta::deleting(o) {
            delete(app, key, o);
        }
    }
}

/// Runs collection until the app is dropped.
pub async fn run(app: std::sync::Weak<App>) {
    loop {
        let Some(a) = app.upgrade() else { return };
        let woke = {
            let notified = a.gc_wake.notified();
            tokio::time::timeout(Duration::from_secs(1), notified)
                .await
                .is_ok()
        };
        if woke {
            // Let a burst of deletions settle before scanning.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pass(&a);
        drop(a);
    }
}

/// Keeps an Arc alive only as long as needed by spawning with a weak reference.
pub fn spawn(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(Arc::downgrade(app)))
}
