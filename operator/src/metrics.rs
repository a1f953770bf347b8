//! The operator's metrics and the HTTP endpoint that serves them.
//!
//! Owns one `Metrics` struct with every series. Label values come from fixed sets (resource,
//! pending reason, error category, controller) plus tenant and quota names: tenants are
//! few and created by administrators, and the issue asks for quota figures per tenant; the
//! series of a deleted quota are removed on the next update, so they do not accumulate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use ironvisor_crds::vm::Phase;

use crate::error::Category;

/// Every series the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Quota limits: tenant, quota, resource.
    pub quota_hard: IntGaugeVec,
    /// Quota usage: tenant, quota, resource.
    pub quota_used: IntGaugeVec,
    /// VMs waiting, per reason.
    pub pending: IntGaugeVec,
    /// Admission decisions announced (one per change of a VM's decision): decision.
    pub decisions: IntCounterVec,
    /// Seconds from a VM's creation to its placement being written.
    pub scheduling_latency: Histogram,
    /// Errors per controller and category.
    pub reconcile_errors: IntCounterVec,
    /// Duration of a reconcile or pass, per controller.
    pub reconcile_duration: HistogramVec,
    /// 1 while this replica leads.
    pub leader: IntGauge,
    /// 1 per Hypervisor whose heartbeat is fresh and that is Ready, else 0: host.
    pub host_ready: IntGaugeVec,
    /// VMs per phase (a VM with no phase yet counts as Pending): phase.
    pub vms: IntGaugeVec,
    /// 1 while the operator cannot work until an administrator acts; `/readyz` says why.
    pub blocked: IntGauge,
    /// Accrued usage and cost per tenant.
    pub usage: crate::usage::metrics::UsageMetrics,
    /// The rebalancer's moves and evaluations.
    pub rebalance: crate::rebalance::metrics::RebalanceMetrics,
    /// Live migrations: results, durations, downtimes, what runs now.
    pub migrations: crate::migration::metrics::MigrationMetrics,
    /// The console signer: certificates issued, requests refused.
    pub console: crate::console::metrics::SignerMetrics,
    /// Schedules: objects made and pruned.
    pub schedules: crate::backup::metrics::ScheduleMetrics,
    /// What blocks the operator, in words, per source (for `/readyz`).
    problems: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

/// Reasons a VM waits for admission (`ironvisor_vms_pending`).
pub const PENDING_REASONS: [&str; 4] =
    ["QuotaExceeded", "Unschedulable", "InvalidSpec", "NoTenant"];

/// The decisions `ironvisor_admission_decisions_total` counts; any other is `Other`.
pub const DECISIONS: [&str; 12] = [
    "Scheduled",
    "Admitted",
    "Resized",
    "QuotaExceeded",
    "ResizeQuotaExceeded",
    "FailedScheduling",
    "InvalidSpec",
    "NoTenant",
    "RunningWithoutTenant",
    "Rescheduled",
    "HostLost",
    "Other",
];

/// Every phase a VM can report, so each `ironvisor_vms` series exists (at 0) from the start.
const PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Scheduled,
    Phase::Starting,
    Phase::Running,
    Phase::Stopping,
    Phase::Stopped,
    Phase::Failed,
    Phase::Unknown,
];

impl Metrics {
    /// Register every series on a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let quota_hard = IntGaugeVec::new(
            Opts::new(
                "ironvisor_quota_hard",
                "Quota limit per tenant and resource (bytes for memory and storage)",
            ),
            &["tenant", "quota", "resource"],
        )?;
        let quota_used = IntGaugeVec::new(
            Opts::new(
                "ironvisor_quota_used",
                "Quota usage per tenant and resource, summed over admitted VMs",
            ),
            &["tenant", "quota", "resource"],
        )?;
        let pending = IntGaugeVec::new(
            Opts::new("ironvisor_vms_pending", "VMs not placed, per reason"),
            &["reason"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "ironvisor_admission_decisions_total",
                "Admission and placement decisions announced, per decision (the Event reason)",
            ),
            &["decision"],
        )?;
        let scheduling_latency = Histogram::with_opts(
            HistogramOpts::new(
                "ironvisor_scheduling_latency_seconds",
                "Seconds from VM creation to placement",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "ironvisor_reconcile_errors_total",
                "Reconcile errors per controller and category",
            ),
            &["controller", "category"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "ironvisor_reconcile_duration_seconds",
                "Duration of a reconcile or a scheduling pass",
            ),
            &["controller"],
        )?;
        let leader = IntGauge::new(
            "ironvisor_operator_leader",
            "1 while this replica is the leader",
        )?;
        registry.register(Box::new(quota_hard.clone()))?;
        registry.register(Box::new(quota_used.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(scheduling_latency.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        let host_ready = IntGaugeVec::new(
            Opts::new(
                "ironvisor_host_ready",
                "1 when the host's heartbeat is fresh and it is Ready, else 0 (leader only)",
            ),
            &["host"],
        )?;
        let vms = IntGaugeVec::new(
            Opts::new(
                "ironvisor_vms",
                "VirtualMachines per status.phase (none yet counts as Pending; leader only)",
            ),
            &["phase"],
        )?;
        let blocked = IntGauge::new(
            "ironvisor_operator_blocked",
            "1 while the operator cannot work until an administrator acts (e.g. its namespace is missing); its log and /readyz say why",
        )?;
        registry.register(Box::new(blocked.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(host_ready.clone()))?;
        registry.register(Box::new(vms.clone()))?;
        let usage = crate::usage::metrics::UsageMetrics::register(&registry)?;
        let rebalance = crate::rebalance::metrics::RebalanceMetrics::register(&registry)?;
        let migrations = crate::migration::metrics::MigrationMetrics::register(&registry)?;
        let console = crate::console::metrics::SignerMetrics::register(&registry)?;
        let schedules = crate::backup::metrics::ScheduleMetrics::register(&registry)?;
        for reason in PENDING_REASONS
            .into_iter()
            .chain(crate::plan::network::REASONS)
        {
            pending.with_label_values(&[reason]).set(0);
        }
        for d in DECISIONS {
            decisions.with_label_values(&[d]).reset();
        }
        Ok(Self {
            console,
            registry,
            quota_hard,
            quota_used,
            pending,
            decisions,
            scheduling_latency,
            reconcile_errors,
            reconcile_duration,
            leader,
            host_ready,
            vms,
            blocked,
            usage,
            rebalance,
            migrations,
            schedules,
            problems: Arc::default(),
        })
        .inspect(|m| m.set_vm_phases(std::iter::empty()))
    }

    /// Host readiness, one series per Hypervisor; hosts no longer listed disappear.
    pub fn set_hosts_ready<'a>(&self, hosts: impl IntoIterator<Item = (&'a str, bool)>) {
        self.host_ready.reset();
        for (host, ready) in hosts {
            self.host_ready
                .with_label_values(&[host])
                .set(i64::from(ready));
        }
    }

    /// VM counts per phase, from every VM's phase.
    pub fn set_vm_phases(&self, phases: impl IntoIterator<Item = Option<Phase>>) {
        let mut counts = [0i64; PHASES.len()];
        for p in phases {
            let p = p.unwrap_or(Phase::Pending);
            if let Some(i) = PHASES.iter().position(|q| *q == p) {
                counts[i] += 1;
            }
        }
        for (p, n) in PHASES.iter().zip(counts) {
            self.vms.with_label_values(&[p.as_str()]).set(n);
        }
    }

    /// A replica that does not lead reports no cluster figures (they would be stale and add
    /// up with the leader's in `sum()`).
    pub fn clear_cluster_figures(&self) {
        self.host_ready.reset();
        self.quota_hard.reset();
        self.quota_used.reset();
        self.usage.reset();
        self.set_vm_phases(std::iter::empty());
    }

    /// Record what keeps the operator from working, as `source` (e.g. the leader election)
    /// sees it (`None`: nothing there).
    pub fn set_problem(&self, source: &'static str, problem: Option<String>) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(p) => problems.insert(source, p),
            None => problems.remove(source),
        };
        self.blocked.set(i64::from(!problems.is_empty()));
    }

    /// What keeps the operator from working, one line per source; `None` when nothing.
    pub fn problem(&self) -> Option<String> {
        let problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        (!problems.is_empty()).then(|| problems.values().cloned().collect::<Vec<_>>().join("\n"))
    }

    /// Count a decision announced with Event reason `reason` (outside the fixed set: `Other`).
    pub fn decision(&self, reason: &str) {
        let label = DECISIONS
            .iter()
            .find(|d| **d == reason)
            .copied()
            .unwrap_or("Other");
        self.decisions.with_label_values(&[label]).inc();
    }

    /// Count an error.
    pub fn error(&self, controller: &'static str, category: Category) {
        self.reconcile_errors
            .with_label_values(&[controller, category.as_str()])
            .inc();
    }

    /// A timer that observes the reconcile duration when dropped.
    pub fn timer(&self, controller: &'static str) -> DurationTimer {
        DurationTimer {
            hist: self.reconcile_duration.with_label_values(&[controller]),
            start: Instant::now(),
        }
    }

    /// Render every series in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Observes the elapsed time on drop.
pub struct DurationTimer {
    hist: Histogram,
    start: Instant,
}

impl Drop for DurationTimer {
    fn drop(&mut self) {
        self.hist.observe(self.start.elapsed().as_secs_f64());
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.render() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

/// 503 with the reason while the operator is blocked, else 200.
async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.problem() {
        Some(p) => (StatusCode::SERVICE_UNAVAILABLE, p),
        None => (StatusCode::OK, "ok".to_owned()),
    }
}

/// The router: `/metrics`, `/healthz` (the process answers) and `/readyz` (it can work).
pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m)
}

/// Serve the router on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, m: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(m)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_rendered_with_fixed_label_values() {
        let m = Metrics::new().unwrap();
        m.error("scheduler", Category::Conflict);
        m.quota_used
            .with_label_values(&["finance", "finance-compute", "vcpus"])
            .set(30);
        m.scheduling_latency.observe(0.2);
        drop(m.timer("scheduler"));
        let text = m.render().unwrap();
        assert!(
            text.contains(
                r#"ironvisor_reconcile_errors_total{category="conflict",controller="scheduler"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"ironvisor_quota_used{quota="finance-compute",resource="vcpus",tenant="finance"} 30"#
        ));
        assert!(text.contains(r#"ironvisor_vms_pending{reason="QuotaExceeded"} 0"#));
        assert!(text.contains(r#"ironvisor_vms_pending{reason="NoTenant"} 0"#));
        m.decision("NoTenant");
        m.decision("some-name-from-elsewhere");
        let text = m.render().unwrap();
        assert!(text.contains(r#"ironvisor_admission_decisions_total{decision="NoTenant"} 1"#));
        assert!(text.contains(r#"ironvisor_admission_decisions_total{decision="Other"} 1"#));
        assert!(text.contains(r#"ironvisor_admission_decisions_total{decision="Scheduled"} 0"#));
        assert!(!text.contains("some-name-from-elsewhere"));
        assert!(text.contains("ironvisor_scheduling_latency_seconds_count 1"));
        assert!(
            text.contains(
                r#"ironvisor_reconcile_duration_seconds_count{controller="scheduler"} 1"#
            )
        );
    }

    #[test]
    fn host_readiness_and_vm_phases_render_as_the_rules_and_dashboard_read_them() {
        let m = Metrics::new().unwrap();
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"ironvisor_vms{phase="Running"} 0"#),
            "{text}"
        );
        m.set_hosts_ready([("h1", true), ("h2", false)]);
        m.set_vm_phases([
            Some(Phase::Running),
            Some(Phase::Running),
            None,
            Some(Phase::Unknown),
        ]);
        let text = m.render().unwrap();
        // manifests/monitoring: `ironvisor_host_ready == 0` (alert, `$labels.host`),
        // `sum(ironvisor_host_ready)`, `count(ironvisor_host_ready)`, `sum by (phase) (ironvisor_vms)`.
        for line in [
            r#"ironvisor_host_ready{host="h1"} 1"#,
            r#"ironvisor_host_ready{host="h2"} 0"#,
            r#"ironvisor_vms{phase="Running"} 2"#,
            r#"ironvisor_vms{phase="Pending"} 1"#,
            r#"ironvisor_vms{phase="Unknown"} 1"#,
            r#"ironvisor_vms{phase="Stopped"} 0"#,
            "# TYPE ironvisor_host_ready gauge",
            "# TYPE ironvisor_vms gauge",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        // A host that is gone disappears; a standby reports no cluster figures at all.
        m.set_hosts_ready([("h1", true)]);
        assert!(!m.render().unwrap().contains(r#"host="h2""#));
        m.clear_cluster_figures();
        let text = m.render().unwrap();
        assert!(!text.contains("ironvisor_host_ready{"), "{text}");
        assert!(text.contains(r#"ironvisor_vms{phase="Running"} 0"#));
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_over_loopback() {
        let m = Arc::new(Metrics::new().unwrap());
        m.leader.set(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router(m)).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        server.abort();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("ironvisor_operator_leader 1"));
    }

    async fn get(m: Arc<Metrics>, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router(m)).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        server.abort();
        body
    }

    #[tokio::test]
    async fn readyz_fails_with_the_reason_while_the_operator_is_blocked() {
        let m = Arc::new(Metrics::new().unwrap());
        assert!(get(m.clone(), "/readyz").await.starts_with("HTTP/1.1 200"));
        m.set_problem(
            "election",
            Some("namespace ironvisor-system does not exist".into()),
        );
        m.set_problem("crds", Some("CRD x is not installed".into()));
        assert_eq!(
            m.problem().as_deref(),
            Some("CRD x is not installed\nnamespace ironvisor-system does not exist")
        );
        m.set_problem("crds", None);
        let body = get(m.clone(), "/readyz").await;
        assert!(body.starts_with("HTTP/1.1 503"), "{body}");
        assert!(
            body.ends_with("namespace ironvisor-system does not exist"),
            "{body}"
        );
        assert!(m.render().unwrap().contains("ironvisor_operator_blocked 1"));
        assert!(get(m.clone(), "/healthz").await.starts_with("HTTP/1.1 200"));
        m.set_problem("election", None);
        assert!(get(m.clone(), "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(m.render().unwrap().contains("ironvisor_operator_blocked 0"));
    }
}
