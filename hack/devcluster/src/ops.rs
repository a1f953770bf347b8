//! The verbs: get, list, create, update, patch, delete on one resource.
//!
//! Owns the order of a write (decode, merge, admit, record field owners, commit) and the
//! finalizer/deletion rules. It never speaks HTTP and never formats tables.

use crate::app::{App, CRD_KEY, Params, Target, present};
use crate::error::{ApiError, success_status};
use crate::fieldpath::{Scope, display};
use crate::patch::{self, PatchType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::ssa::{self, Writer};
use crate::store::{Change, EventType, ns_name, rv_of};
use crate::{kinds, meta, validation};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;

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

fn ok(code: u16, body: Value) -> Outcome {
    Outcome {
        code,
        body,
        warnings: vec![],
    }
}

fn name_of(t: &Target) -> Result<&str, ApiError> {
    t.name.as_deref().ok_or_else(ApiError::method_not_allowed)
}

fn not_found(t: &Target, name: &str) -> ApiError {
    ApiError::not_found(&t.info().group, &t.info().plural, name)
}

/// The selectors of a list or watch, parsed.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// From the request parameters (400 on malformed selectors).
    pub fn new(t: &Target, p: &Params) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(p.label_selector.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut allowed = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        allowed.extend(
            t.info()
                .selectable_fields
                .iter()
                .map(|f| f.trim_start_matches('.').to_string()),
        );
        if t.info().kind == "Event" {
            allowed.extend(
                [
                    "involvedObject.name",
                    "involvedObject.kind",
                    "involvedObject.uid",
                    "type",
                    "reason",
                ]
                .map(String::from),
            );
        }
        let fields =
            FieldSelector::parse(p.field_selector.as_deref().unwrap_or_default(), &allowed)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self { labels, fields })
    }

    /// Whether an object passes.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&obj["metadata"]["labels"]) && self.fields.matches(obj)
    }
}

/// One page of a list: the objects, the snapshot resourceVersion, the continue token.
pub type Page = (Vec<Arc<Value>>, u64, Option<String>);

/// GET one object.
pub fn get(app: &App, t: &Target) -> Result<Value, ApiError> {
    let name = name_of(t)?;
    let o = app
        .store
        .get(&t.key(), t.ns(), name)
        .ok_or_else(|| not_found(t, name))?;
    Ok(present(&o, t.info()))
}

/// The objects a list returns (filtered, paginated), the snapshot rv and the continue token.
pub fn list_items(app: &App, t: &Target, p: &Params) -> Result<Page, ApiError> {
    let filter = Filter::new(t, p)?;
    let ns = if t.info().namespaced {
        t.namespace.as_deref()
    } else {
        None
    };
    let (items, rv) = app.store.list(&t.key(), ns);
    let start: Option<(String, String)> = match &p.continue_token {
        None => None,
        Some(c) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            Some((
                raw["ns"].as_str().unwrap_or_default().into(),
                raw["name"].as_str().unwrap_or_default().into(),
            ))
        }
    };
    let mut out = vec![];
    let mut token = None;
    let event = crate::app::is_event(t.info());
    for o in items {
        // Events are filtered in the shape they are asked for.
        let o = if event {
            Arc::new(present(&o, t.info()))
        } else {
            o
        };
        let id = ns_name(&o);
        if start.as_ref().is_some_and(|s| id <= *s) || !filter.matches(&o) {
            continue;
        }
        if p.limit.is_some_and(|l| out.len() >= l) {
            let last = out
                .last()
                .map(|l: &Arc<Value>| ns_name(l))
                .unwrap_or_default();
            let raw = json!({"ns": last.0, "name": last.1}).to_string();
            token = Some(base64::engine::general_purpose::STANDARD.encode(raw));
            break;
        }
        out.push(o);
    }
    Ok((out, rv, token))
}

/// LIST as a `<Kind>List`.
pub fn list(app: &App, t: &Target, p: &Params) -> Result<Value, ApiError> {
    let (items, rv, token) = list_items(app, t, p)?;
    let info = t.info();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = token {
        meta["continue"] = json!(c);
    }
    Ok(json!({
        "apiVersion": info.api_version(),
        "kind": info.list_kind(),
        "metadata": meta,
        "items": items.iter().map(|o| present(o, info)).collect::<Vec<_>>(),
    }))
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

/// The shared tail of every write: admission, kind hooks, field owners, finalizer completion.
fn finish(
    t: &Target,
    old: Option<&Value>,
    mut obj: Value,
    p: &Params,
    w: Option<&Writer<'_>>,
    warnings: &mut Vec<String>,
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

fn is_namespace(t: &Target) -> bool {
    !t.info().custom && t.info().kind == "Namespace"
}

fn after_write(app: &App, t: &Target, kind: Option<EventType>) {
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
            finish(&t, None, obj, p, Some(&w), &mut warnings)
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
    let (stored, kind) = app
        .store
        .mutate(&t.key(), t.ns(), &name, p.dry_run, |cur| {
            let old = cur.ok_or_else(|| not_found(t, &name))?;
            if want_rv.is_some_and(|rv| rv != rv_of(old)) {
                return Err(ApiError::conflict(&t.info().group, &t.info().plural, &name));
            }
            let cand = meta::prepare_update(t.info(), old, new, status)?;
            finish(t, Some(old), cand, p, Some(&w), &mut warnings)
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
            finish(t, Some(old), cand, p, Some(&w), &mut warnings)
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
                finish(t, None, obj, p, None, &mut warnings)
            }
            Some(old) => {
                let cand = meta::prepare_update(t.info(), old, merged, status)?;
                finish(t, Some(old), cand, p, None, &mut warnings)
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
    let (stored, kind) = app.store.mutate(&t.key(), t.ns(), &name, dry, |cur| {
        let old = cur.ok_or_else(|| not_found(t, &name))?;
        if pre_uid
            .as_deref()
            .is_some_and(|u| Some(u) != old["metadata"]["uid"].as_str())
            || pre_rv
                .as_deref()
                .is_some_and(|r| r != rv_of(old).to_string())
        {
            return Err(ApiError::conflict(&t.info().group, &t.info().plural, &name));
        }
        if ns_kind || !meta::finalizers(old).is_empty() {
            if meta::deleting(old) {
                return Ok(Change::Unchanged(old.clone()));
            }
            let mut o = old.clone();
            o["metadata"]["deletionTimestamp"] = json!(meta::now());
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
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
