//! Every console connection is audited: an Event on the VM when it opens and when it closes
//! (who, which console, how long), a log line, and the metrics (labels from fixed sets).

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::target::Kind;

/// The console server's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// Console requests by `kind` (serial|vnc) and `result` (connected, unauthorized,
    /// forbidden, not_found, conflict, bad_request, agent_unreachable, unavailable).
    pub requests: IntCounterVec,
    /// Consoles open now, by kind.
    pub active: IntGaugeVec,
    /// How long consoles stayed open, by kind.
    pub duration: HistogramVec,
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "ironvisor_console_requests_total",
                "Console requests by kind and result.",
            ),
            &["kind", "result"],
        )?;
        let active = IntGaugeVec::new(
            Opts::new("ironvisor_console_active", "Consoles open now."),
            &["kind"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ironvisor_console_duration_seconds",
                "How long consoles stayed open.",
            )
            .buckets(vec![1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0]),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            registry,
            requests,
            active,
            duration,
        })
    }
}

/// One connection, as the audit trail names it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The user.
    pub user: String,
    /// Which console.
    pub kind: Kind,
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// The VM's uid.
    pub uid: String,
    /// The host it was bridged to.
    pub node: String,
}

/// The Event message of a connection; `duration` once it closed.
pub fn note(c: &Connection, duration: Option<Duration>) -> String {
    match duration {
        None => format!(
            "user {} opened the {} console (host {})",
            c.user,
            c.kind.label(),
            c.node
        ),
        Some(d) => format!(
            "user {} closed the {} console after {}s (host {})",
            c.user,
            c.kind.label(),
            d.as_secs(),
            c.node
        ),
    }
}

/// Records the Event (a new one per connection: an aggregating recorder would fold
/// different users' connections into one series and lose who connected).
pub async fn record(
    client: &kube::Client,
    instance: &str,
    c: &Connection,
    reason: &str,
    note: String,
) {
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", c.name)),
            namespace: Some(c.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("Console".into()),
        reason: Some(reason.into()),
        note: Some(note),
        type_: Some("Normal".into()),
        reporting_controller: Some("ironvisor.io/console".into()),
        reporting_instance: Some(instance.into()),
        regarding: Some(ObjectReference {
            api_version: Some("ironvisor.io/v1alpha1".into()),
            kind: Some("VirtualMachine".into()),
            namespace: Some(c.namespace.clone()),
            name: Some(c.name.clone()),
            uid: Some(c.uid.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    tracing::info!(
        target: "ironvisor::audit",
        vm = format!("{}/{}", c.namespace, c.name), user = c.user, kind = c.kind.label(),
        reason, "{}", event.note.as_deref().unwrap_or_default()
    );
    let api: Api<Event> = Api::namespaced(client.clone(), &c.namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, vm = c.name, reason, "the console audit Event was not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notes_say_who_which_console_and_how_long() {
        let c = Connection {
            user: "alice".into(),
            kind: Kind::Serial,
            namespace: "a".into(),
            name: "web".into(),
            uid: "u".into(),
            node: "h1".into(),
        };
        assert_eq!(
            note(&c, None),
            "user alice opened the serial console (host h1)"
        );
        assert_eq!(
            note(&c, Some(Duration::from_secs(75))),
            "user alice closed the serial console after 75s (host h1)"
        );
    }
}
