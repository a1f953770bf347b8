//! The read verbs: get, list (selectors, pagination) and the filter watches share.
//!
//! Never writes.

use crate::app::{App, Params, Target, present};
use crate::error::ApiError;
use crate::ops::{name_of, not_found};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::ns_name;
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;

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
