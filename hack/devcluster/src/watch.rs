//! Watch streams: newline-delimited JSON events from a resourceVersion, with bookmarks,
//! timeouts, 410 Gone as an ERROR event, and Table-wrapped objects when asked.
//!
//! Owns the life of one watch connection; reads the store, never writes it.

use crate::app::{App, Params, Target, present};
use crate::error::ApiError;
use crate::ops::Filter;
use crate::store::{Event, EventType};
use crate::table::{self, Form};
use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(2);
/// Default watch length when the client sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Shape {
    info: crate::resource::ResourceInfo,
    form: Form,
}

impl Shape {
    fn event(&self, kind: &str, e: &Event) -> Bytes {
        let obj = &*e.object;
        let as_stored = obj["apiVersion"].as_str() == Some(self.info.api_version().as_str())
            && !crate::app::is_event(&self.info);
        if self.form == Form::Full && as_stored {
            // Serialized once per event, however many watchers send it.
            let json = e.encoded.get_or_init(|| obj.to_string());
            return Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{json}}}\n"));
        }
        let shown = present(obj, &self.info);
        let object = match self.form {
            Form::Metadata => table::partial(&shown),
            Form::Table(inc) => {
                let mut t = table::table(&self.info, std::slice::from_ref(&shown), 0, None, inc);
                t["metadata"] = json!({"resourceVersion": shown["metadata"]["resourceVersion"]});
                t
            }
            Form::Full => shown,
        };
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    /// The object as the selectors must see it (events differ by API; others as stored).
    fn shown<'a>(&self, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
        if crate::app::is_event(&self.info) {
            std::borrow::Cow::Owned(present(obj, &self.info))
        } else {
            std::borrow::Cow::Borrowed(obj)
        }
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        let mut line = json!({"type": "BOOKMARK", "object": {
            "kind": self.info.kind, "apiVersion": self.info.api_version(),
            "metadata": {"resourceVersion": rv.to_string()}}})
        .to_string();
        line.push('\n');
        Bytes::from(line)
    }
}

fn error_event(e: &ApiError) -> Bytes {
    let mut line = json!({"type": "ERROR", "object": e.status_body()}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Starts a watch and returns its streaming body.
pub fn start(app: Arc<App>, t: &Target, p: &Params, form: Form) -> Result<Body, ApiError> {
    let filter = Filter::new(t, p)?;
    let from = match p.resource_version.as_deref() {
        None | Some("0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let key = t.key();
    let ns = if t.info().namespaced {
        t.namespace.clone()
    } else {
        None
    };
    let shape = Shape {
        info: t.info().clone(),
        form,
    };
    let timeout = p
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = p.bookmarks;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let started = app.store.watch(&key, ns.as_deref(), from);
    let mut epoch = app.store.epoch();
    tokio::spawn(async move {
        let (backlog, mut events, mut last) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Ok(error_event(&e))).await;
                return;
            }
        };
        for e in backlog {
            if filter.matches(&shape.shown(&e.object))
                && tx.send(Ok(shape.event(e.kind.as_str(), &e))).await.is_err()
            {
                return;
            }
            last = last.max(e.rv);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(e) => {
                        last = last.max(e.rv);
                        let in_scope = e.key == key && ns.as_deref().is_none_or(|n| n == e.namespace);
                        if !in_scope {
                            continue;
                        }
                        // As the apiserver does: an object entering the selection is ADDED
                        // for this watch, one leaving it is DELETED.
                        let now = filter.matches(&shape.shown(&e.object));
                        let before = e.previous.as_ref().is_some_and(|p| filter.matches(&shape.shown(p)));
                        let kind = match (e.kind, before, now) {
                            (EventType::Modified, false, true) => EventType::Added,
                            (EventType::Modified, true, false) => EventType::Deleted,
                            (k, _, true) => k,
                            _ => continue,
                        };
                        if tx.send(Ok(shape.event(kind.as_str(), &e))).await.is_err() {
                            return;
                        }
                    }
                    // A slow client missed events: end the watch so it resumes from its last rv.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(shape.bookmark(last))).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = epoch.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Ok(Body::from_stream(stream))
}
