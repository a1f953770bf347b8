//! The operator's metrics and the HTTP endpoint that serves them.
//!
//! Owns one `Metrics` struct with every series. Label values come from fixed sets (resource,
//! pending reason, error category, controller) plus tenant and quota names: tenants are
//! few and created by administrators, and the issue asks for quota figures per tenant; the
//! series of a deleted quota are removed on the next update, so they do not accumulate.

use std::net::SocketAddr;
use std::sync::Arc;
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
    /// Seconds from a VM's creation to its placement being written.
    pub scheduling_latency: Histogram,
    /// Errors per controller and category.
    pub reconcile_errors: IntCounterVec,
    /// Duration of a reconcile or pass, per controller.
    pub reconcile_duration: HistogramVec,
    /// 1 while this replica leads.
    pub leader: IntGauge,
}

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
        registry.register(Box::new(scheduling_latency.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        for reason in ["QuotaExceeded", "Unschedulable", "InvalidSpec"] {
            pending.with_label_values(&[reason]).set(0);
        }
        Ok(Self {
            registry,
            quota_hard,
            quota_used,
            pending,
            scheduling_latency,
            reconcile_errors,
            reconcile_duration,
            leader,
        })
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

/// The router: `/metrics` and `/healthz`.
pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
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
        assert!(text.contains("ironvisor_scheduling_latency_seconds_count 1"));
        assert!(
            text.contains(
                r#"ironvisor_reconcile_duration_seconds_count{controller="scheduler"} 1"#
            )
        );
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
}
