//! When each VM was created, placed and seen Running, from one watch on the VMs. The bench
//! marks the creation instant just before it sends the create; the watch fills in the rest
//! as events arrive, so every instant is on the bench's own monotonic clock.
//!
//! What counts as placed and running is decided by [`observe`], a pure function.

use futures::StreamExt as _;
use ironvisor_crds::VirtualMachine;
use ironvisor_crds::labels::NODE;
use ironvisor_crds::vm::Phase;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// What one version of a VM tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The host label, once the operator (or the bench) has placed it.
    pub node: Option<String>,
    /// The Scheduled condition is True (the agent starts only then).
    pub scheduled: bool,
    /// Phase Running.
    pub running: bool,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

/// Read placement and phase from a VM.
pub fn observe(vm: &VirtualMachine) -> Seen {
    let status = vm.status.as_ref();
    Seen {
        node: vm.labels().get(NODE).cloned(),
        scheduled: status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Scheduled" && c.status == "True")
        }),
        running: status.and_then(|s| s.phase) == Some(Phase::Running),
        generation: vm.metadata.generation,
    }
}

/// The instants of one VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    /// Just before the create was sent.
    pub created: Option<Instant>,
    /// First seen with the node label and Scheduled=True.
    pub placed: Option<Instant>,
    /// First seen Running.
    pub running: Option<Instant>,
}

/// `to − from` for every VM that has both instants.
pub fn intervals(
    times: &[Times],
    from: fn(&Times) -> Option<Instant>,
    to: fn(&Times) -> Option<Instant>,
) -> Vec<Duration> {
    times
        .iter()
        .filter_map(|t| Some(to(t)?.saturating_duration_since(from(t)?)))
        .collect()
}

/// Each VM's (created, placed, running) in milliseconds after `origin`, sorted by creation:
/// the timeline the JSON output carries for diagnosis.
pub fn timeline(times: &[Times], origin: Instant) -> Vec<[Option<f64>; 3]> {
    let ms =
        |i: Option<Instant>| i.map(|i| i.saturating_duration_since(origin).as_secs_f64() * 1000.0);
    let mut rows: Vec<[Option<f64>; 3]> = times
        .iter()
        .map(|t| [ms(t.created), ms(t.placed), ms(t.running)])
        .collect();
    rows.sort_by(|a, b| a[0].partial_cmp(&b[0]).unwrap_or(std::cmp::Ordering::Equal));
    rows
}

/// Earliest and latest of the given instants.
pub fn span(times: &[Times], at: fn(&Times) -> Option<Instant>) -> Option<(Instant, Instant)> {
    let all: Vec<Instant> = times.iter().filter_map(at).collect();
    Some((*all.iter().min()?, *all.iter().max()?))
}

/// A placed VM that a simulated agent should report: namespace, name, node, generation.
pub type PlacedVm = (String, String, String, Option<i64>);

#[derive(Default)]
struct State {
    vms: HashMap<String, Times>,
    placed: usize,
    running: usize,
}

/// The watch and what it has recorded.
pub struct Tracker {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl Tracker {
    /// Watch the VMs of `ns`. Each VM first seen placed on a node is also sent to `placed`,
    /// for a simulated agent to act on.
    pub fn start(client: &Client, ns: &str, placed: Option<UnboundedSender<PlacedVm>>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let api: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
            while let Some(ev) = events.next().await {
                let Ok(vm) = ev else { continue };
                let now = Instant::now();
                let seen = observe(&vm);
                let ns = vm.namespace().unwrap_or_default();
                let name = vm.name_any();
                let newly_placed = {
                    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                    let t = s.vms.entry(key(&ns, &name)).or_default();
                    let mut newly_placed = false;
                    if t.placed.is_none() && seen.node.is_some() && seen.scheduled {
                        t.placed = Some(now);
                        newly_placed = true;
                    }
                    let newly_running = t.running.is_none() && seen.running;
                    if newly_running {
                        t.running = Some(now);
                    }
                    s.placed += usize::from(newly_placed);
                    s.running += usize::from(newly_running);
                    newly_placed
                };
                if let (true, Some(tx), Some(node)) = (newly_placed, &placed, seen.node) {
                    let _ = tx.send((ns, name, node, seen.generation));
                }
            }
        });
        Self { state, task }
    }

    /// Record that the create of `ns/name` is about to be sent.
    pub fn created(&self, ns: &str, name: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.vms.entry(key(ns, name)).or_default().created = Some(Instant::now());
    }

    /// (placed, running) counts so far.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.placed, s.running)
    }

    /// Wait until `running` VMs are Running; false on timeout. Calls `progress` about once
    /// a second with (placed, running).
    pub async fn wait_running(
        &self,
        running: usize,
        within: Duration,
        mut progress: impl FnMut(usize, usize),
    ) -> bool {
        let deadline = Instant::now() + within;
        let mut last = Instant::now();
        loop {
            let (p, r) = self.counts();
            if r >= running {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if last.elapsed() >= Duration::from_secs(1) {
                progress(p, r);
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every VM's instants.
    pub fn times(&self) -> Vec<Times> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.vms.values().copied().collect()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(v: serde_json::Value) -> VirtualMachine {
        serde_json::from_value(v).expect("VM")
    }

    #[test]
    fn a_new_vm_is_neither_placed_nor_running() {
        let s = observe(&vm(json!({"metadata": {"name": "a", "generation": 1},
            "spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}}})));
        assert_eq!(
            s,
            Seen {
                generation: Some(1),
                ..Seen::default()
            }
        );
    }

    #[test]
    fn a_labelled_scheduled_running_vm_is_seen_as_such() {
        let s = observe(&vm(
            json!({"metadata": {"name": "a", "labels": {NODE: "h1"}},
            "spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}},
            "status": {"phase": "Running", "conditions": [
                {"type": "Scheduled", "status": "True", "reason": "Scheduled", "message": "",
                 "lastTransitionTime": "2026-11-25T10:00:00Z"}]}}),
        ));
        assert_eq!(s.node.as_deref(), Some("h1"));
        assert!(s.scheduled && s.running);
    }

    #[test]
    fn a_quota_exceeded_vm_is_not_scheduled() {
        let s = observe(&vm(json!({"metadata": {"name": "a"},
            "spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}},
            "status": {"phase": "Pending", "conditions": [
                {"type": "Scheduled", "status": "False", "reason": "QuotaExceeded", "message": "",
                 "lastTransitionTime": "2026-11-25T10:00:00Z"}]}})));
        assert!(!s.scheduled && !s.running);
    }

    #[test]
    fn intervals_skip_vms_missing_either_instant() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let times = [
            Times {
                created: at(0),
                placed: at(10),
                running: at(30),
            },
            Times {
                created: at(5),
                placed: at(20),
                running: None,
            },
            Times {
                created: None,
                placed: at(1),
                running: at(2),
            },
        ];
        let c2r = intervals(&times, |t| t.created, |t| t.running);
        assert_eq!(c2r, vec![Duration::from_millis(30)]);
        let c2p = intervals(&times, |t| t.created, |t| t.placed);
        assert_eq!(
            c2p,
            vec![Duration::from_millis(10), Duration::from_millis(15)]
        );
        assert_eq!(
            span(&times, |t| t.placed),
            Some((
                t0 + Duration::from_millis(1),
                t0 + Duration::from_millis(20)
            ))
        );
        assert_eq!(span(&[], |t| t.placed), None);
        let tl = timeline(&times, t0);
        assert_eq!(tl[0], [None, Some(1.0), Some(2.0)]);
        assert_eq!(tl[1], [Some(0.0), Some(10.0), Some(30.0)]);
        assert_eq!(tl[2], [Some(5.0), Some(20.0), None]);
    }
}
