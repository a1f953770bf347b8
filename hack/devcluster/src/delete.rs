//! Deletion: finalizers and deletionTimestamp, preconditions, dry runs, collections.
//!
//! The garbage collector (`gc`) finishes what a delete starts (namespaces, dependents).

use crate::app::{App, Params, Target, present};
use crate::error::{ApiError, success_status};
use crate::ops::{Outcome, after_write, is_namespace, name_of, not_found, ok, run_policies};
use crate::reads::list_items;
use crate::store::{Change, EventType, ns_name, rv_of};
use crate::{kinds, meta};
use serde_json::{Value, json};

/// DELETE one object. `opts` is the DeleteOptions body (may be null).
pub fn delete(app: &App, t: &Target, opts: &Value, p: &Params) -> Result<Outcome, ApiError> {
    let name = name_of(t)?.to_string();
    let dry = p.dry_run
        || opts["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let pre_uid = opts["preconditions"]["uid"].as_str().map(String::from);
    let pre_rv = opts["preconditions"]["resourceVersion"]
        .as_str()
        .map(String::from);
    let ns_kind = is_namespace(t);
    // Foreground and Orphan deletions are finalizers the garbage collector finishes.
    let policy = p
        .propagation_policy
        .as_deref()
        .or(opts["propagationPolicy"].as_str());
    let orphan = opts["orphanDependents"].as_bool() == Some(true);
    let extra = match policy {
        Some("Foreground") => Some(meta::FOREGROUND),
        Some("Orphan") => Some(meta::ORPHAN),
        _ if orphan => Some(meta::ORPHAN),
        _ => None,
    };
    let inputs = app.admission_inputs(t, &p.user);
    let (stored, kind) = app.store.mutate(&t.key(), t.ns(), &name, dry, |cur| {
        let old = cur.ok_or_else(|| not_found(t, &name))?;
        run_policies(t, Some(old), &Value::Null, p, &inputs)?;
        if pre_uid
            .as_deref()
            .is_some_and(|u| Some(u) != old["metadata"]["uid"].as_str())
            || pre_rv
                .as_deref()
                .is_some_and(|r| r != rv_of(old).to_string())
        {
            return Err(ApiError::conflict(&t.info().group, &t.info().plural, &name));
        }
        if ns_kind || !meta::finalizers(old).is_empty() || extra.is_some() {
            if meta::deleting(old) {
                return Ok(Change::Unchanged(old.clone()));
            }
            let mut o = old.clone();
            if let Some(f) = extra {
                let mut fs = meta::finalizers(old);
                fs.push(f.to_string());
                o["metadata"]["finalizers"] = json!(fs);
            }
            meta::mark_deleting(&mut o);
            kinds::on_write(t.info(), &mut o);
            return Ok(Change::Put(o));
        }
        Ok(Change::Delete)
    })?;
    after_write(app, t, kind);
    app.gc_wake.notify_one();
    if kind == Some(EventType::Deleted) || (dry && meta::finalizers(&stored).is_empty() && !ns_kind)
    {
        let mut s = success_status();
        s["details"] = json!({"name": name, "group": t.info().group, "kind": t.info().plural,
            "uid": stored["metadata"]["uid"]});
        return Ok(ok(200, s));
    }
    Ok(ok(200, present(&stored, t.info())))
}

/// DELETE a collection (selectors apply).
pub fn delete_collection(app: &App, t: &Target, p: &Params) -> Result<Outcome, ApiError> {
    let (items, _, _) = list_items(
        app,
        t,
        &Params {
            limit: None,
            continue_token: None,
            ..p.clone()
        },
    )?;
    let mut deleted = vec![];
    for o in items {
        let (ns, name) = ns_name(&o);
        let one = Target {
            namespace: Some(ns),
            name: Some(name),
            ..t.clone()
        };
        match delete(app, &one, &Value::Null, p) {
            Ok(_) => deleted.push(present(&o, t.info())),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let info = t.info();
    Ok(ok(
        200,
        json!({"apiVersion": info.api_version(), "kind": info.list_kind(),
        "metadata": {"resourceVersion": app.store.current_rv().to_string()}, "items": deleted}),
    ))
}
