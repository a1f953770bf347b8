//! The verbs: get, list, create, update, patch, delete on one resource.
//!
//! Owns the order of a write (decode, merge, admit, record field owners, commit) and the
//! finalizer rules. It never speaks HTTP and never formats tables. Reads live in `reads`,
//! deletes in `delete`.

use crate::app::{AdmissionInputs, App, CRD_KEY, Params, Target, present};
use crate::auth::{escalation, vap, vap_match};
pub use crate::delete::{delete, delete_collection};
use crate::error::ApiError;
use crate::fieldpath::{Scope, display};
use crate::patch::{self, PatchType};
pub use crate::reads::{Filter, get, list, list_items};
use crate::ssa::{self, Writer};
use crate::store::{Change, EventType, ns_name, rv_of};
use crate::{kinds, meta, validation};
use serde_json::{Value, json};

/// A successful write.
#[derive(Debug)]
pub struct Outcome {
    /// HTTP status.
    pub code: u16,
    /// Response body.
    pub body: Value,
    /// `Warning` headers.
    pub warnings: Vec<String>,
}

pub(crate) fn ok(code: u16, body: Value) -> Outcome {
    Outcome {
        code,
        body,
        warnings: vec![],
    }
}

pub(crate) fn name_of(t: &Target) -> Result<&str, ApiError> {
    t.name.as_deref().ok_or_else(ApiError::method_not_allowed)
}

pub(crate) fn not_found(t: &Target, name: &str) -> ApiError {
    ApiError::not_found(&t.info().group, &t.info().plural, name)
}

fn manager(p: &Params, user_agent: &str) -> String {
    p.field_manager.clone().unwrap_or_else(|| {
        let ua = user_agent.split('/').next().unwrap_or_default();
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.into()
        }
    })
}

fn writer<'a>(t: &'a Target, mgr: &'a str, now: &'a str, api_version: &'a str) -> Writer<'a> {
    let status = t.subresource.as_deref() == Some("status");
    Writer {
        manager: mgr,
        api_version,
        subresource: if status { "status" } else { "" },
        scope: if status {
            Scope::Status
        } else {
            Scope::Main {
                skip_status: t.info().status_subresource,
            }
        },
        schema: t.served.validation.as_ref().map(|c| c.schema()),
        now,
    }
}

/// The object without what changes on every write (resourceVersion, managedFields times), so a
/// write that changes nothing else (not even field ownership) is a no-op, as in the apiserver.
fn strip_volatile(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries.iter_mut() {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    c
}

/// Runs the ValidatingAdmissionPolicies that select this write (`obj` null for a delete).
pub(crate) fn run_policies(
    t: &Target,
    old: Option<&Value>,
    obj: &Value,
    p: &Params,
    inputs: &AdmissionInputs,
) -> Result<Vec<String>, ApiError> {
    if inputs.vap.pairs.is_empty() {
        return Ok(vec![]);
    }
    let old_v = old.cloned().unwrap_or(Value::Null);
    let operation = match (old, obj.is_null()) {
        (_, true) => "DELETE",
        (None, false) => "CREATE",
        (Some(_), false) => "UPDATE",
    };
    let info = t.info();
    let ns_labels = if is_namespace(t) {
        obj["metadata"]["labels"].clone()
    } else {
        inputs
            .namespace
            .as_ref()
            .map(|n| n["metadata"]["labels"].clone())
            .unwrap_or(Value::Null)
    };
    let name = t.name.as_deref().unwrap_or_default();
    let a = vap::Admission {
        req: vap_match::Request {
            operation,
            group: &info.group,
            version: &info.version,
            resource: &info.plural,
            subresource: t.subresource.as_deref().unwrap_or_default(),
            name,
            namespaced: info.namespaced,
            object: obj,
            old_object: &old_v,
            namespace_labels: &ns_labels,
        },
        kind: &info.kind,
        namespace: t.ns(),
        user: &p.user,
        dry_run: p.dry_run,
        namespace_object: inputs.namespace.as_deref(),
        params: &inputs.params,
    };
    vap::admit(&inputs.vap, &a)
}

/// The shared tail of every write: admission, kind hooks, field owners, finalizer completion.
fn finish(
    t: &Target,
    old: Option<&Value>,
    mut obj: Value,
    p: &Params,
    w: Option<&Writer<'_>>,
    warnings: &mut Vec<String>,
    inputs: &AdmissionInputs,
) -> Result<Change, ApiError> {
    let (admitted, warn) = validation::admit(
        t.info(),
        t.served.validation.as_ref(),
        obj,
        old,
        p.field_validation,
    )?;
    obj = admitted;
    warnings.extend(warn);
    kinds::on_write(t.info(), &mut obj);
    if let Some(w) = w {
        ssa::record_update(old, &mut obj, w);
    }
    if let Some(idx) = &inputs.rbac {
        escalation::check(idx, &p.user, &t.info().plural, t.ns(), &obj, old)?;
    }
    warnings.extend(run_policies(t, old, &obj, p, inputs)?);
    if let Some(old) = old {
        if meta::deleting(old) && meta::finalizers(&obj).is_empty() && !is_namespace(t) {
            return Ok(Change::Delete);
        }
        if strip_volatile(old) == strip_volatile(&obj) {
            return Ok(Change::Unchanged(old.clone()));
        }
    }
    Ok(Change::Put(obj))
}

pub(crate) fn is_namespace(t: &Target) -> bool {
    !t.info().custom && t.info().kind == "Namespace"
}

pub(crate) fn after_write(app: &App, t: &Target, kind: Option<EventType>) {
    if kind.is_some() && t.key() == CRD_KEY {
        app.refresh_registry();
        if kind == Some(EventType::Deleted) {
            app.gc_wake.notify_one();
        }
    }
    if kind == Some(EventType::Deleted) {
        app.gc_wake.notify_one();
    }
}

fn check_namespace(app: &App, t: &Target) -> Result<(), ApiError> {
    if !t.info().namespaced {
        return Ok(());
    }
    match app.namespace_state(t.ns()) {
        None => Err(ApiError::not_found("", "namespaces", t.ns())),
        Some(true) => Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
            t.info().plural,
            t.name.as_deref().unwrap_or_default(),
            t.ns()
        ))),
        Some(false) => Ok(()),
    }
}

/// POST: create.
pub fn create(
    app: &App,
    t: &Target,
    body: &[u8],
    p: &Params,
    ua: &str,
) -> Result<Outcome, ApiError> {
    let obj = patch::parse_body(body)?;
    let obj = meta::prepare_create(t.info(), obj, t.ns())?;
    let (_, name) = ns_name(&obj);
    let t = Target {
        name: Some(name.clone()),
        ..t.clone()
    };
    check_namespace(app, &t)?;
    let mgr = manager(p, ua);
    let now = meta::now();
    let av = t.info().api_version();
    let w = writer(&t, &mgr, &now, &av);
    let mut warnings = vec![];
    let inputs = app.admission_inputs(&t, &p.user);
    let (stored, kind) = app
        .store
        .mutate(&t.key(), t.ns(), &name, p.dry_run, |cur| {
            if cur.is_some() {
                return Err(ApiError::already_exists(
                    &t.info().group,
                    &t.info().plural,
                    &name,
                ));
            }
            finish(&t, None, obj, p, Some(&w), &mut warnings, &inputs)
        })?;
    after_write(app, &t, kind);
    Ok(Outcome {
        code: 201,
        body: present(&stored, t.info()),
        warnings,
    })
}

/// PUT: replace (main resource or status).
pub fn update(
    app: &App,
    t: &Target,
    body: &[u8],
    p: &Params,
    ua: &str,
) -> Result<Outcome, ApiError> {
    let name = name_of(t)?.to_string();
    let new = patch::parse_body(body)?;
    if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let want_rv = new["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok());
    let mgr = manager(p, ua);
    let now = meta::now();
    let av = t.info().api_version();
    let w = writer(t, &mgr, &now, &av);
    let mut warnings = vec![];
    let status = t.subresource.as_deref() == Some("status");
    let inputs = app.admission_inputs(t, &p.user);
    let (stored, kind) = app
        .store
        .mutate(&t.key(), t.ns(), &name, p.dry_run, |cur| {
            let old = cur.ok_or_else(|| not_found(t, &name))?;
            if want_rv.is_some_and(|rv| rv != rv_of(old)) {
                return Err(ApiError::conflict(&t.info().group, &t.info().plural, &name));
            }
            let cand = meta::prepare_update(t.info(), old, new, status)?;
            finish(t, Some(old), cand, p, Some(&w), &mut warnings, &inputs)
        })?;
    after_write(app, t, kind);
    Ok(Outcome {
        code: 200,
        body: present(&stored, t.info()),
        warnings,
    })
}

/// PATCH: JSON, merge, strategic merge, or server-side apply.
pub fn patch(
    app: &App,
    t: &Target,
    content_type: &str,
    body: &[u8],
    p: &Params,
    ua: &str,
) -> Result<Outcome, ApiError> {
    let name = name_of(t)?.to_string();
    let ptype = PatchType::from_content_type(content_type)?;
    if ptype == PatchType::Apply {
        return apply(app, t, &name, body, p);
    }
    let mgr = manager(p, ua);
    let now = meta::now();
    let av = t.info().api_version();
    let w = writer(t, &mgr, &now, &av);
    let status = t.subresource.as_deref() == Some("status");
    let mut warnings = vec![];
    let inputs = app.admission_inputs(t, &p.user);
    let (stored, kind) = app
        .store
        .mutate(&t.key(), t.ns(), &name, p.dry_run, |cur| {
            let old = cur.ok_or_else(|| not_found(t, &name))?;
            let mut doc = present(old, t.info());
            patch::apply_patch(ptype, &mut doc, body)?;
            let rv = doc["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            if !rv.is_empty() && rv != rv_of(old).to_string() {
                return Err(ApiError::conflict(&t.info().group, &t.info().plural, &name));
            }
            let cand = meta::prepare_update(t.info(), old, doc, status)?;
            finish(t, Some(old), cand, p, Some(&w), &mut warnings, &inputs)
        })?;
    after_write(app, t, kind);
    Ok(Outcome {
        code: 200,
        body: present(&stored, t.info()),
        warnings,
    })
}

fn apply(app: &App, t: &Target, name: &str, body: &[u8], p: &Params) -> Result<Outcome, ApiError> {
    let Some(mgr) = p.field_manager.clone().filter(|m| !m.is_empty()) else {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![crate::error::Cause::new(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )],
        ));
    };
    let applied = patch::parse_body(body)?;
    if !applied.is_object()
        || applied["kind"].as_str().is_none()
        || applied["apiVersion"].as_str().is_none()
    {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set in an applied configuration",
        ));
    }
    if applied["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let now = meta::now();
    let av = t.info().api_version();
    let w = writer(t, &mgr, &now, &av);
    let status = t.subresource.as_deref() == Some("status");
    let mut warnings = vec![];
    let exists = app.store.get(&t.key(), t.ns(), name).is_some();
    if !exists {
        check_namespace(app, t)?;
    }
    let inputs = app.admission_inputs(t, &p.user);
    let (stored, kind) = app.store.mutate(&t.key(), t.ns(), name, p.dry_run, |cur| {
        let merged =
            ssa::apply(cur, &applied, p.force, &w).map_err(|cs| conflict_error(t, name, cs))?;
        match cur {
            None => {
                if status {
                    return Err(not_found(t, name));
                }
                let mut obj = merged;
                obj["metadata"]["name"] = json!(name);
                let obj = meta::prepare_create(t.info(), obj, t.ns())?;
                finish(t, None, obj, p, None, &mut warnings, &inputs)
            }
            Some(old) => {
                let cand = meta::prepare_update(t.info(), old, merged, status)?;
                finish(t, Some(old), cand, p, None, &mut warnings, &inputs)
            }
        }
    })?;
    after_write(app, t, kind);
    let code = if kind == Some(EventType::Added) {
        201
    } else {
        200
    };
    Ok(Outcome {
        code,
        body: present(&stored, t.info()),
        warnings,
    })
}

fn conflict_error(t: &Target, name: &str, cs: Vec<ssa::Conflict>) -> ApiError {
    let causes = cs
        .iter()
        .map(|c| {
            crate::error::Cause::new(
                "FieldManagerConflict",
                display(&c.path),
                format!("conflict with \"{}\" using {}", c.manager, c.api_version),
            )
        })
        .collect();
    let mut e = ApiError::apply_conflict(&t.info().group, &t.info().plural, name, causes);
    let lines: Vec<String> = cs
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager,
                c.api_version,
                display(&c.path)
            )
        })
        .collect();
    let n = cs.len();
    let head = if n == 1 {
        "Apply failed with 1 conflict".to_string()
    } else {
        format!("Apply failed with {n} conflicts")
    };
    e.message = format!("{head}: {}", lines.join("\n"));
    e
}
