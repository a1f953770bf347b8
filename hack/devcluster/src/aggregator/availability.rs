//! The APIService availability controller (kube-aggregator's `AvailableConditionController`):
//! keeps each APIService's `Available` condition true for local APIs, and for a Service-backed
//! one true only while its Service resolves to an endpoint that answers
//! `GET /apis/<group>/<version>` with a 2xx over TLS with the front-proxy certificate.
//!
//! Writes only `status.conditions` of APIServices; checks again whenever APIServices, Services
//! or EndpointSlices change, and every few seconds.

use super::apiservice::{self, ApiService, KEY};
use super::proxy::{self, DialError};
use crate::app::App;
use crate::store::Change;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use serde_json::{Value, json};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The discovery probe must answer within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Checks run at least this often.
const RECHECK: Duration = Duration::from_secs(5);
/// How often the inputs are looked at for changes.
const POLL: Duration = Duration::from_millis(200);

/// The keys whose changes trigger a check.
const INPUTS: [&str; 3] = [KEY, "services.", "endpointslices.discovery.k8s.io"];

/// An `Available` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `True` or `False`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

impl Condition {
    fn new(ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status: if ok { "True" } else { "False" },
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The availability of `svc` now.
pub async fn check(app: &App, svc: &ApiService) -> Condition {
    let Some(target) = &svc.service else {
        return Condition::new(true, "Local", "Local APIServices are always available");
    };
    let backend = match proxy::dial(app, svc, target).await {
        Ok(b) => b,
        Err(DialError::Resolve(e)) => return Condition::new(false, e.reason(), e.to_string()),
        Err(e) => {
            return Condition::new(
                false,
                "FailedDiscoveryCheck",
                format!(
                    "failing or missing response from {}: {}",
                    target_url(svc, e.addr()),
                    chain(&e)
                ),
            );
        }
    };
    let url = target_url(svc, Some(backend.addr));
    match probe(backend, svc).await {
        Ok(()) => Condition::new(true, "Passed", "all checks passed"),
        Err(e) => Condition::new(
            false,
            "FailedDiscoveryCheck",
            format!("failing or missing response from {url}: {e}"),
        ),
    }
}

fn target_url(svc: &ApiService, addr: Option<std::net::SocketAddr>) -> String {
    let host = match (addr, &svc.service) {
        (Some(a), _) => a.to_string(),
        (None, Some(s)) => format!("{}:{}", s.server_name(), s.port),
        (None, None) => String::new(),
    };
    format!("https://{host}/apis/{}/{}", svc.group, svc.version)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// `GET /apis/<group>/<version>` with no user (as kube-aggregator probes).
async fn probe(backend: proxy::Backend, svc: &ApiService) -> Result<(), String> {
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = format!("/apis/{}/{}", svc.group, svc.version)
        .parse()
        .map_err(|_| "the group or version cannot be part of a path".to_string())?;
    if let Ok(h) = HeaderValue::from_str(&backend.addr.to_string()) {
        req.headers_mut().insert(header::HOST, h);
    }
    let mut sender = backend.sender;
    let resp = tokio::time::timeout(PROBE_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))?
        .map_err(|e| chain(&e))?;
    let code = resp.status().as_u16();
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!(
            "bad status from {}: {code}",
            target_url(svc, Some(backend.addr))
        ))
    }
}

/// The object with its `Available` condition set to `c` (the transition time kept unless the
/// status flips), or `None` when nothing changes.
pub fn with_condition(obj: &Value, c: &Condition) -> Option<Value> {
    let old = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|x| x["type"] == "Available"));
    if old.is_some_and(|o| {
        o["status"] == c.status
            && o["reason"] == c.reason.as_str()
            && o["message"] == c.message.as_str()
    }) {
        return None;
    }
    let since = match old {
        Some(o) if o["status"] == c.status => o["lastTransitionTime"].clone(),
        _ => json!(crate::meta::now()),
    };
    let mut out = obj.clone();
    let mut conds: Vec<Value> = out["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["type"] != "Available")
        .cloned()
        .collect();
    conds.push(
        json!({"type": "Available", "status": c.status, "lastTransitionTime": since,
        "reason": c.reason, "message": c.message}),
    );
    out["status"]["conditions"] = json!(conds);
    Some(out)
}

fn write(app: &App, name: &str, c: &Condition) {
    let result = app.store.mutate(KEY, "", name, false, |cur| {
        let Some(cur) = cur else {
            return Ok(Change::Unchanged(Value::Null));
        };
        Ok(match with_condition(cur, c) {
            Some(o) => Change::Put(o),
            None => Change::Unchanged(cur.clone()),
        })
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, apiservice = name, "writing an APIService condition failed");
    }
}

/// Checks every APIService once (concurrently) and records the results.
pub async fn pass(app: &App) {
    let services = apiservice::all(app);
    let checks = services
        .iter()
        .map(|s| async move { (s, check(app, s).await) });
    for (s, c) in futures::future::join_all(checks).await {
        write(app, &s.name, &c);
    }
}

async fn run(app: Weak<App>) {
    let mut seen: Option<Vec<u64>> = None;
    let mut last = Instant::now();
    loop {
        let Some(a) = app.upgrade() else { return };
        let stamp = a.store.key_versions(&INPUTS);
        if seen.as_ref() != Some(&stamp) || last.elapsed() >= RECHECK {
            pass(&a).await;
            // Our own writes change the stamp: take it after the pass.
            seen = Some(a.store.key_versions(&INPUTS));
            last = Instant::now();
        }
        drop(a);
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the controller until the app is dropped.
pub fn spawn(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(Arc::downgrade(app)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_changes_only_when_the_status_flips() {
        let obj = json!({"status": {"conditions": [{"type": "Available", "status": "False",
            "reason": "MissingEndpoints", "message": "m", "lastTransitionTime": "T0"}]}});
        let same = Condition {
            status: "False",
            reason: "MissingEndpoints".into(),
            message: "m".into(),
        };
        assert!(with_condition(&obj, &same).is_none());
        let other = Condition {
            reason: "ServiceNotFound".into(),
            ..same.clone()
        };
        let o = with_condition(&obj, &other).unwrap();
        assert_eq!(o["status"]["conditions"][0]["lastTransitionTime"], "T0");
        let up = Condition::new(true, "Passed", "all checks passed");
        let o = with_condition(&obj, &up).unwrap();
        assert_ne!(o["status"]["conditions"][0]["lastTransitionTime"], "T0");
    }
}
