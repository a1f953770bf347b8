//! Object storage, resourceVersions and the event history that watches read.
//!
//! Owns every stored object (as JSON), the global resourceVersion counter, the bounded event
//! history and the broadcast of new events. Every write goes through [`Store::mutate`], which runs
//! the caller's decision under one lock so resourceVersions and events are totally ordered.
//! It knows nothing about HTTP, schemas or kinds.

use crate::error::ApiError;
use crate::persist::{Log, Record};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Most events kept for watches that resume from a resourceVersion.
const HISTORY: usize = 50_000;

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its resourceVersion.
    pub rv: u64,
    /// Storage key of the resource.
    pub key: String,
    /// Namespace of the object ("" for cluster scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before it, for deletions, with the deletion rv).
    pub object: Arc<Value>,
    /// The object before a modification (selectors turn it into ADDED/DELETED for watches).
    pub previous: Option<Arc<Value>>,
    /// The object's JSON, computed by the first watch that sends it.
    pub encoded: std::sync::OnceLock<String>,
}

/// A started watch: missed events, the live receiver, and the resourceVersion it starts at.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64);

/// What a mutation decided.
#[derive(Debug)]
pub enum Change {
    /// Store this object (create or update).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Nothing to write; return this object as is.
    Unchanged(Value),
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

struct Inner {
    rv: u64,
    objects: HashMap<String, Objects>,
    history: VecDeque<Arc<Event>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    log: Option<Log>,
    /// The resourceVersion of the last change per storage key (caches derived from a
    /// resource, like the RBAC index, compare it to know they are current).
    key_rv: HashMap<String, u64>,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    /// Bumped to end every open watch (history compaction, shutdown).
    epoch: tokio::sync::watch::Sender<u64>,
    /// Watches refused with 410 Gone so far.
    expired: std::sync::atomic::AtomicU64,
}

/// The namespace and name of an object.
pub fn ns_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// The resourceVersion of an object as a number (0 when absent or malformed).
pub fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store {
    /// An empty store, optionally persisted with `log` and seeded with replayed `records`.
    pub fn new(records: Vec<Record>, log: Option<Log>) -> Self {
        let mut objects: HashMap<String, Objects> = HashMap::new();
        let mut rv = 0;
        for r in records {
            match r {
                Record::Put { key, object } => {
                    rv = rv.max(rv_of(&object));
                    let id = ns_name(&object);
                    objects.entry(key).or_default().insert(id, Arc::new(object));
                }
                Record::Delete {
                    key,
                    namespace,
                    name,
                    rv: drv,
                } => {
                    rv = rv.max(drv);
                    if let Some(m) = objects.get_mut(&key) {
                        m.remove(&(namespace, name));
                    }
                }
            }
        }
        let (tx, _) = broadcast::channel(16_384);
        let (epoch, _) = tokio::sync::watch::channel(0);
        Self {
            inner: Mutex::new(Inner {
                rv,
                objects,
                history: VecDeque::new(),
                compacted: rv,
                log,
                key_rv: HashMap::new(),
            }),
            tx,
            epoch,
            expired: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave half-written state (writes are single
        // inserts), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every live object, as persistence records (used to compact the log).
    pub fn snapshot(&self) -> Vec<Record> {
        let inner = self.lock();
        let mut out = vec![];
        for (key, m) in &inner.objects {
            for o in m.values() {
                out.push(Record::Put {
                    key: key.clone(),
                    object: (**o).clone(),
                });
            }
        }
        out
    }

    /// Replaces the persistence log.
    pub fn set_log(&self, log: Log) {
        self.lock().log = Some(log);
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource (in one namespace when `ns` is given), sorted by
    /// namespace/name, and the resourceVersion of the snapshot.
    pub fn list(&self, key: &str, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = match inner.objects.get(key) {
            None => vec![],
            Some(m) => match ns {
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
                None => m.values().cloned().collect(),
            },
        };
        (items, inner.rv)
    }

    /// For each key, the resourceVersion of its last change (0: none since start).
    pub fn key_versions(&self, keys: &[&str]) -> Vec<u64> {
        let inner = self.lock();
        keys.iter()
            .map(|k| inner.key_rv.get(*k).copied().unwrap_or(0))
            .collect()
    }

    /// Storage keys that hold at least one object.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .objects
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Runs `decide` on the current object under the store lock and commits its decision:
    /// a new resourceVersion, one event, one log record. With `dry_run` nothing is committed
    /// and the decided object is returned as it would have been stored.
    pub fn mutate<F>(
        &self,
        key: &str,
        ns: &str,
        name: &str,
        dry_run: bool,
        decide: F,
    ) -> Result<(Value, Option<EventType>), ApiError>
    where
        F: FnOnce(Option<&Value>) -> Result<Change, ApiError>,
    {
        let mut inner = self.lock();
        let id = (ns.to_string(), name.to_string());
        let current = inner.objects.get(key).and_then(|m| m.get(&id)).cloned();
        let change = decide(current.as_deref())?;
        if dry_run {
            return Ok(match change {
                Change::Put(v) | Change::Unchanged(v) => (v, None),
                Change::Delete => (current.map(|c| (*c).clone()).unwrap_or(Value::Null), None),
            });
        }
        let (kind, mut object) = match change {
            Change::Unchanged(v) => return Ok((v, None)),
            Change::Put(v) => (
                if current.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                v,
            ),
            Change::Delete => match &current {
                None => return Ok((Value::Null, None)),
                Some(c) => (EventType::Deleted, (**c).clone()),
            },
        };
        inner.rv += 1;
        let rv = inner.rv;
        inner.key_rv.insert(key.to_string(), rv);
        if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let record = match kind {
            EventType::Deleted => {
                if let Some(m) = inner.objects.get_mut(key) {
                    m.remove(&id);
                }
                Record::Delete {
                    key: key.into(),
                    namespace: id.0.clone(),
                    name: id.1.clone(),
                    rv,
                }
            }
            _ => {
                inner
                    .objects
                    .entry(key.to_string())
                    .or_default()
                    .insert(id.clone(), Arc::new(object.clone()));
                Record::Put {
                    key: key.into(),
                    object: object.clone(),
                }
            }
        };
        if let Some(log) = inner.log.as_mut()
            && let Err(e) = log.append(&record)
        {
            tracing::error!(error = %e, "persisting a change failed; the change is kept in memory");
        }
        let event = Arc::new(Event {
            rv,
            key: key.into(),
            namespace: id.0,
            kind,
            object: Arc::new(object.clone()),
            previous: if kind == EventType::Modified {
                current
            } else {
                None
            },
            encoded: Default::default(),
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(event);
        Ok((object, Some(kind)))
    }

    /// Starts a watch of `key` (optionally one namespace) after resourceVersion `from`:
    /// the missed events from history plus a live receiver, taken atomically.
    /// `None` for `from` means "now" and returns the current objects as synthetic ADDED events.
    pub fn watch(
        &self,
        key: &str,
        ns: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let matches = |e: &Event| e.key == key && ns.is_none_or(|n| n == e.namespace);
        let backlog = match from {
            Some(from) => {
                if from < inner.compacted {
                    self.expired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(ApiError::gone(format!(
                        "too old resource version: {from} ({})",
                        inner.compacted
                    )));
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > from && matches(e))
                    .cloned()
                    .collect()
            }
            None => {
                let items = inner.objects.get(key).map(|m| {
                    m.iter()
                        .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                        .map(|((n, _), o)| {
                            Arc::new(Event {
                                rv: rv_of(o),
                                key: key.into(),
                                namespace: n.clone(),
                                kind: EventType::Added,
                                object: o.clone(),
                                previous: None,
                                encoded: Default::default(),
                            })
                        })
                        .collect()
                });
                items.unwrap_or_default()
            }
        };
        Ok((backlog, rx, inner.rv))
    }

    /// How many watches were refused with 410 Gone.
    pub fn expired_watches(&self) -> u64 {
        self.expired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver that changes when every open watch must end.
    pub fn epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Forgets the event history (as etcd compaction does) and ends every open watch, so
    /// clients resuming from an older resourceVersion get 410 Gone and must re-list.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.rv += 1;
        inner.compacted = inner.rv;
        inner.history.clear();
        self.epoch.send_modify(|e| *e += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(s: &Store, name: &str) -> Value {
        s.mutate("k", "ns", name, false, |_| {
            Ok(Change::Put(
                json!({"metadata": {"name": name, "namespace": "ns"}}),
            ))
        })
        .unwrap()
        .0
    }

    #[test]
    fn resource_versions_increase_with_every_write() {
        let s = Store::new(vec![], None);
        let a = put(&s, "a");
        let b = put(&s, "b");
        assert!(rv_of(&b) > rv_of(&a));
        assert_eq!(s.list("k", Some("ns")).0.len(), 2);
        assert_eq!(s.list("k", Some("other")).0.len(), 0);
    }

    #[test]
    fn a_watch_from_a_compacted_version_is_gone() {
        let s = Store::new(vec![], None);
        let a = put(&s, "a");
        put(&s, "b");
        let (backlog, _, _) = s.watch("k", None, Some(rv_of(&a))).unwrap();
        assert_eq!(backlog.len(), 1);
        s.compact();
        let err = s.watch("k", None, Some(rv_of(&a))).unwrap_err();
        assert_eq!(err.code, 410);
    }
}
