//! `ivctl status`: the report built from a VirtualMachine and its Events, and its text
//! rendering. Pure: the caller fetches the objects and passes the clock.

use ironvisor_crds::labels::{REQUESTED_STATE, RESTART_REQUESTED_AT};
use ironvisor_crds::vm::{InterfaceStatus, VirtualMachine};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use std::fmt::Write as _;

/// How many Events the report keeps (the most recent).
pub const MAX_EVENTS: usize = 10;

/// What `ivctl status` shows; also its `-o json|yaml` form.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `status.printableStatus` (the phase or why the VM is not progressing).
    pub status: Option<String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `spec.runStrategy`.
    pub run_strategy: String,
    /// The `ironvisor.io/requestedState` annotation (Manual VMs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_state: Option<String>,
    /// The `ironvisor.io/restartedAt` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_requested_at: Option<String>,
    /// `status.lastRestartRequest`: the restart request the agent acted on last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restart_request: Option<String>,
    /// The host the VM is placed on.
    pub host: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory as the spec says it.
    pub memory: String,
    /// When the guest was last started (RFC 3339).
    pub started_at: Option<String>,
    /// Automatic restarts by the agent.
    pub restart_count: i64,
    /// `status.observedGeneration` against `metadata.generation`.
    pub observed_generation: Option<i64>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The guest's interfaces.
    pub interfaces: Vec<InterfaceStatus>,
    /// Conditions in the order the status lists them.
    pub conditions: Vec<ConditionLine>,
    /// The most recent Events, oldest first.
    pub events: Vec<EventLine>,
}

/// One condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionLine {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// When the status last flipped (RFC 3339).
    pub last_transition_time: String,
}

/// One Event about the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// How many times it happened.
    pub count: i32,
    /// First seen (RFC 3339), when known.
    pub first_seen: Option<String>,
    /// Last seen (RFC 3339), when known.
    pub last_seen: Option<String>,
    /// Who reported it.
    pub from: String,
}

fn ts(t: &Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// When an Event last happened: the series, else lastTimestamp, eventTime, firstTimestamp,
/// creation (the two Event APIs fill different fields).
fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn first_seen(e: &Event) -> Option<Timestamp> {
    e.first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Whether the Event is about this VM: same kind, namespace and name, and the same uid
/// when both carry one (a deleted VM of the same name had another uid).
pub fn is_about(e: &Event, vm: &VirtualMachine) -> bool {
    let o = &e.involved_object;
    o.kind.as_deref() == Some("VirtualMachine")
        && o.name == vm.metadata.name
        && o.namespace == vm.metadata.namespace
        && match (&o.uid, &vm.metadata.uid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

fn event_line(e: &Event) -> EventLine {
    let from = e
        .reporting_component
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
        .unwrap_or_default();
    let instance = e
        .reporting_instance
        .clone()
        .filter(|i| !i.is_empty())
        .or_else(|| e.source.as_ref().and_then(|s| s.host.clone()));
    let from = match instance {
        Some(i) if !from.is_empty() && i != from => format!("{from}/{i}"),
        _ => from,
    };
    EventLine {
        type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
        reason: e.reason.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        count: e
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(e.count)
            .unwrap_or(1)
            .max(1),
        first_seen: first_seen(e).as_ref().map(ts),
        last_seen: last_seen(e).as_ref().map(ts),
        from,
    }
}

fn annotation(vm: &VirtualMachine, key: &str) -> Option<String> {
    vm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

impl Report {
    /// The report of `vm` with the [`MAX_EVENTS`] most recent of `events` that are about it.
    pub fn new(vm: &VirtualMachine, events: &[Event]) -> Self {
        let status = vm.status.clone().unwrap_or_default();
        let mut about: Vec<&Event> = events.iter().filter(|e| is_about(e, vm)).collect();
        about.sort_by_key(|e| (last_seen(e), e.metadata.name.clone()));
        let skip = about.len().saturating_sub(MAX_EVENTS);
        Report {
            name: vm.metadata.name.clone().unwrap_or_default(),
            namespace: vm.metadata.namespace.clone().unwrap_or_default(),
            status: status.printable_status.clone(),
            phase: status.phase.map(|p| p.as_str().to_owned()),
            run_strategy: format!("{:?}", vm.spec.run_strategy),
            requested_state: annotation(vm, REQUESTED_STATE),
            restart_requested_at: annotation(vm, RESTART_REQUESTED_AT),
            last_restart_request: status.last_restart_request.clone(),
            host: status.node_name.clone(),
            vcpus: status.vcpus.unwrap_or_else(|| vm.spec.cpu.vcpus()),
            memory: vm.spec.memory.size.0.clone(),
            started_at: status.started_at.as_ref().map(|t| ts(&t.0)),
            restart_count: status.restart_count.unwrap_or(0),
            observed_generation: status.observed_generation,
            generation: vm.metadata.generation,
            interfaces: status.interfaces.clone(),
            conditions: status
                .conditions
                .iter()
                .map(|c| ConditionLine {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: ts(&c.last_transition_time.0),
                })
                .collect(),
            events: about.into_iter().skip(skip).map(event_line).collect(),
        }
    }

    /// The human-readable report, ages relative to `now`.
    pub fn to_text(&self, now: Timestamp) -> String {
        let age = |t: &Option<String>| -> String {
            t.as_deref()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .map_or_else(|| "-".into(), |t| human_age(now, t))
        };
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut out = String::new();
        let mut field = |k: &str, v: String| {
            let _ = writeln!(out, "{:<18}{v}", format!("{k}:"));
        };
        field("Name", self.name.clone());
        field("Namespace", self.namespace.clone());
        field(
            "Status",
            self.status
                .clone()
                .or(self.phase.clone())
                .unwrap_or_else(|| "no status yet".into()),
        );
        field("Phase", dash(&self.phase));
        let mut strategy = self.run_strategy.clone();
        if let Some(r) = &self.requested_state {
            let _ = write!(strategy, " (requested: {r})");
        }
        field("Run strategy", strategy);
        field("Host", dash(&self.host));
        field("vCPUs", self.vcpus.to_string());
        field("Memory", self.memory.clone());
        field(
            "Started",
            match &self.started_at {
                Some(s) => format!("{s} ({} ago)", age(&self.started_at)),
                None => "-".into(),
            },
        );
        field("Restarts", self.restart_count.to_string());
        if let Some(r) = &self.restart_requested_at {
            let state = if self.last_restart_request.as_deref() == Some(r.as_str()) {
                "done"
            } else {
                "pending"
            };
            field("Restart request", format!("{r} ({state})"));
        }
        if self.generation.is_some() && self.observed_generation != self.generation {
            field(
                "Generation",
                format!(
                    "{} (the agent has seen {})",
                    self.generation.unwrap_or_default(),
                    self.observed_generation
                        .map_or_else(|| "none".into(), |g| g.to_string())
                ),
            );
        }
        out.push_str("Interfaces:");
        if self.interfaces.is_empty() {
            out.push_str("       <none>\n");
        } else {
            out.push('\n');
            let rows = self.interfaces.iter().map(|i| {
                vec![
                    i.name.clone(),
                    dash(&i.mac_address),
                    dash(&i.host_device),
                    if i.ip_addresses.is_empty() {
                        "-".into()
                    } else {
                        i.ip_addresses.join(",")
                    },
                ]
            });
            table(&mut out, &["NAME", "MAC", "HOST DEVICE", "IP"], rows);
        }
        out.push_str("Conditions:");
        if self.conditions.is_empty() {
            out.push_str("       <none>\n");
        } else {
            out.push('\n');
            let rows = self.conditions.iter().map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    age(&Some(c.last_transition_time.clone())),
                    c.message.clone(),
                ]
            });
            table(
                &mut out,
                &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
                rows,
            );
        }
        out.push_str("Events:");
        if self.events.is_empty() {
            out.push_str("           <none>\n");
        } else {
            out.push('\n');
            let rows = self.events.iter().map(|e| {
                let when = if e.count > 1 {
                    format!(
                        "{} (x{} over {})",
                        age(&e.last_seen),
                        e.count,
                        age(&e.first_seen)
                    )
                } else {
                    age(&e.last_seen)
                };
                vec![
                    e.type_.clone(),
                    e.reason.clone(),
                    when,
                    e.from.clone(),
                    e.message.clone(),
                ]
            });
            table(
                &mut out,
                &["TYPE", "REASON", "AGE", "FROM", "MESSAGE"],
                rows,
            );
        }
        out
    }
}

/// Rows under a header, columns padded to their widest cell, indented by two spaces; the
/// last column is not padded.
fn table(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
        .chain(rows)
        .collect();
    let mut widths = vec![0; header.len()];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::from("  ");
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// An age as kubectl prints it: `45s`, `3m20s`, `25m`, `5h10m`, `30h`, `3d4h`, `120d`, `3y`.
pub fn human_age(now: Timestamp, then: Timestamp) -> String {
    let s = now.as_second().saturating_sub(then.as_second()).max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
