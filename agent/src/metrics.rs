//! The agent's Prometheus metrics and the `/metrics` endpoint.
//!
//! Label values come from fixed sets only (result, error category, resource kind), except
//! the per-VM series, which carry `namespace` and `name` as their identity and are removed
//! when the VM is deleted. Never an error message as a label.

use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::hypervisor::DomainStats;
use crate::reconcile::failure::{ALL_KINDS, FailureKind};
use crate::reconcile::image_failure::{ALL_REFUSALS, ImageRefusal};

/// Fixed categories of reconcile errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The spec cannot run (permanent until it changes).
    InvalidSpec,
    /// Disks, images, seed.
    Storage,
    /// libvirt.
    Hypervisor,
    /// The Kubernetes API.
    Kubernetes,
}

impl ErrorCategory {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::InvalidSpec => "invalid_spec",
            ErrorCategory::Storage => "storage",
            ErrorCategory::Hypervisor => "hypervisor",
            ErrorCategory::Kubernetes => "kubernetes",
        }
    }
}

/// Every metric of the agent.
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    invalid_transitions: IntCounter,
    start_failures: IntCounterVec,
    vm_cpu: CounterVec,
    vm_memory: GaugeVec,
    vm_disk: CounterVec,
    vm_net: CounterVec,
    vm_restarts: IntCounterVec,
    libvirt_connected: IntGauge,
    libvirt_reconnects: IntCounter,
    host_vcpus: GaugeVec,
    host_memory: GaugeVec,
    host_vms: IntGauge,
    rss: IntGauge,
    host_condition: IntGaugeVec,
    capability_probe: Histogram,
    image_refusals: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    r.expect("static metric definitions are valid")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let vm = &["namespace", "name"];
        let m = Self {
            reconciles: must(IntCounterVec::new(
                Opts::new(
                    "ironvisor_agent_reconciles_total",
                    "Reconciles of VirtualMachines by result.",
                ),
                &["result"],
            )),
            errors: must(IntCounterVec::new(
                Opts::new(
                    "ironvisor_agent_reconcile_errors_total",
                    "Reconcile errors by category.",
                ),
                &["category"],
            )),
            duration: must(Histogram::with_opts(
                HistogramOpts::new(
                    "ironvisor_agent_reconcile_duration_seconds",
                    "Duration of one reconcile.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )),
            invalid_transitions: must(IntCounter::new(
                "ironvisor_agent_invalid_transitions_total",
                "Observed lifecycle changes the state machine does not allow (missed events or out-of-band changes).",
            )),
            start_failures: must(IntCounterVec::new(
                Opts::new(
                    "ironvisor_agent_vm_start_failures_total",
                    "Attempts to bring a VM up that failed and are retried with backoff, by what failed: define, start (QEMU), storage.",
                ),
                &["reason"],
            )),
            vm_cpu: must(CounterVec::new(
                Opts::new("ironvisor_vm_cpu_seconds_total", "CPU time of a VM."),
                vm,
            )),
            vm_memory: must(GaugeVec::new(
                Opts::new("ironvisor_vm_memory_bytes", "Memory of a VM."),
                vm,
            )),
            vm_disk: must(CounterVec::new(
                Opts::new(
                    "ironvisor_vm_disk_bytes_total",
                    "Bytes a VM read from or wrote to its disks.",
                ),
                &["namespace", "name", "direction"],
            )),
            vm_net: must(CounterVec::new(
                Opts::new(
                    "ironvisor_vm_network_bytes_total",
                    "Bytes a VM received or sent on libvirt-managed interfaces.",
                ),
                &["namespace", "name", "direction"],
            )),
            vm_restarts: must(IntCounterVec::new(
                Opts::new(
                    "ironvisor_vm_restarts_total",
                    "Times a VM's guest stopped on its own and the agent started it again (runStrategy Always or RerunOnFailure).",
                ),
                vm,
            )),
            libvirt_connected: must(IntGauge::new(
                "ironvisor_agent_libvirt_connected",
                "1 while the agent holds a working libvirt connection, else 0.",
            )),
            libvirt_reconnects: must(IntCounter::new(
                "ironvisor_agent_libvirt_reconnects_total",
                "Times the agent reopened its libvirt connection after losing it.",
            )),
            host_vcpus: must(GaugeVec::new(
                Opts::new(
                    "ironvisor_host_vcpus",
                    "Host vCPUs: capacity, allocatable, allocated.",
                ),
                &["kind"],
            )),
            host_memory: must(GaugeVec::new(
                Opts::new(
                    "ironvisor_host_memory_bytes",
                    "Host memory: capacity, allocatable, allocated.",
                ),
                &["kind"],
            )),
            host_vms: must(IntGauge::new(
                "ironvisor_host_vms",
                "VMs placed on the host.",
            )),
            rss: must(IntGauge::new(
                "ironvisor_agent_resident_memory_bytes",
                "Resident memory of the agent.",
            )),
            host_condition: must(IntGaugeVec::new(
                Opts::new(
                    "ironvisor_host_condition",
                    "1 while a host health condition holds, else 0 (kvm_available, libvirt_healthy, storage_accessible).",
                ),
                &["condition"],
            )),
            capability_probe: must(Histogram::with_opts(
                HistogramOpts::new(
                    "ironvisor_agent_capability_probe_seconds",
                    "Duration of libvirt's domain-capabilities call (seconds each time: a thrashing QEMU capability cache).",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
            )),
            image_refusals: must(IntCounterVec::new(
                Opts::new(
                    "ironvisor_agent_image_refusals_total",
                    "Images a VM could not use, by why: cache_full (retried), larger_than_disk, format.",
                ),
                &["reason"],
            )),
            registry,
        };
        for c in [
            Box::new(m.reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.errors.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.invalid_transitions.clone()),
            Box::new(m.start_failures.clone()),
            Box::new(m.vm_cpu.clone()),
            Box::new(m.vm_memory.clone()),
            Box::new(m.vm_disk.clone()),
            Box::new(m.vm_net.clone()),
            Box::new(m.vm_restarts.clone()),
            Box::new(m.libvirt_connected.clone()),
            Box::new(m.libvirt_reconnects.clone()),
            Box::new(m.host_vcpus.clone()),
            Box::new(m.host_memory.clone()),
            Box::new(m.host_vms.clone()),
            Box::new(m.rss.clone()),
            Box::new(m.host_condition.clone()),
            Box::new(m.capability_probe.clone()),
            Box::new(m.image_refusals.clone()),
        ] {
            must(m.registry.register(c));
        }
        for kind in ALL_KINDS {
            let _ = m.start_failures.with_label_values(&[kind.label()]);
        }
        for r in ALL_REFUSALS {
            let _ = m.image_refusals.with_label_values(&[r.label()]);
        }
        m
    }

    /// A timer that records the reconcile duration when dropped.
    pub fn reconcile_timer(&self) -> prometheus::HistogramTimer {
        self.duration.start_timer()
    }

    /// Count a reconcile that succeeded.
    pub fn reconcile_ok(&self) {
        self.reconciles.with_label_values(&["ok"]).inc();
    }

    /// Count a failed reconcile.
    pub fn reconcile_error(&self, category: ErrorCategory) {
        self.reconciles.with_label_values(&["error"]).inc();
        self.errors.with_label_values(&[category.as_str()]).inc();
    }

    /// Count a transition the lifecycle state machine refused.
    pub fn invalid_transition(&self) {
        self.invalid_transitions.inc();
    }

    /// Count an image a VM could not use.
    pub fn image_refused(&self, r: ImageRefusal) {
        self.image_refusals.with_label_values(&[r.label()]).inc();
    }

    /// Count a failed attempt to bring a VM up.
    pub fn vm_start_failed(&self, kind: FailureKind) {
        self.start_failures.with_label_values(&[kind.label()]).inc();
    }

    /// Record a VM's usage counters. libvirt's counters restart with the guest; a counter
    /// that went down is reset rather than decremented.
    pub fn observe_vm(&self, namespace: &str, name: &str, s: &DomainStats) {
        set_counter(&self.vm_cpu, &[namespace, name], s.cpu_time_ns as f64 / 1e9);
        self.vm_memory
            .with_label_values(&[namespace, name])
            .set(s.memory_bytes as f64);
        set_counter(
            &self.vm_disk,
            &[namespace, name, "read"],
            s.disk_read_bytes as f64,
        );
        set_counter(
            &self.vm_disk,
            &[namespace, name, "write"],
            s.disk_write_bytes as f64,
        );
        set_counter(
            &self.vm_net,
            &[namespace, name, "receive"],
            s.net_rx_bytes as f64,
        );
        set_counter(
            &self.vm_net,
            &[namespace, name, "transmit"],
            s.net_tx_bytes as f64,
        );
    }

    /// Make the VM's restart counter exist (at 0 until its first restart), so that
    /// `increase()` in the crash-loop alert sees the first restart too.
    pub fn vm_seen(&self, namespace: &str, name: &str) {
        let _ = self.vm_restarts.with_label_values(&[namespace, name]);
    }

    /// Count an automatic restart of a VM's guest.
    pub fn vm_restarted(&self, namespace: &str, name: &str) {
        self.vm_restarts.with_label_values(&[namespace, name]).inc();
    }

    /// Record the libvirt connection state and the total of reconnects so far.
    pub fn observe_libvirt(&self, connected: bool, reconnects: u64) {
        self.libvirt_connected.set(i64::from(connected));
        let seen = self.libvirt_reconnects.get();
        if reconnects > seen {
            self.libvirt_reconnects.inc_by(reconnects - seen);
        }
    }

    /// Record the host health findings.
    pub fn observe_host_health(&self, report: &crate::health::Report) {
        for (name, f) in [
            ("kvm_available", &report.kvm),
            ("libvirt_healthy", &report.libvirt),
            ("storage_accessible", &report.storage),
        ] {
            self.host_condition
                .with_label_values(&[name])
                .set(i64::from(f.ok));
        }
    }

    /// Record one capability probe's duration.
    pub fn observe_capability_probe(&self, took: std::time::Duration) {
        self.capability_probe.observe(took.as_secs_f64());
    }

    /// Remove every series of a VM.
    pub fn forget_vm(&self, namespace: &str, name: &str) {
        let _ = self.vm_restarts.remove_label_values(&[namespace, name]);
        let _ = self.vm_cpu.remove_label_values(&[namespace, name]);
        let _ = self.vm_memory.remove_label_values(&[namespace, name]);
        for d in ["read", "write"] {
            let _ = self.vm_disk.remove_label_values(&[namespace, name, d]);
        }
        for d in ["receive", "transmit"] {
            let _ = self.vm_net.remove_label_values(&[namespace, name, d]);
        }
    }

    /// Record host capacity, allocatable and allocated amounts.
    pub fn observe_host(&self, kind: &'static str, vcpus: u32, memory_bytes: i128) {
        self.host_vcpus
            .with_label_values(&[kind])
            .set(f64::from(vcpus));
        self.host_memory
            .with_label_values(&[kind])
            .set(memory_bytes as f64);
    }

    /// Record the VM count.
    pub fn observe_vm_count(&self, n: u32) {
        self.host_vms.set(i64::from(n));
    }

    /// The registry, for metrics that live beside a feature (the console port's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition, refreshing the agent's RSS first.
    pub fn render(&self) -> String {
        if let Ok(me) = procfs::process::Process::myself()
            && let Ok(stat) = me.stat()
        {
            self.rss.set((stat.rss * procfs::page_size()) as i64);
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn set_counter(c: &CounterVec, labels: &[&str], value: f64) {
    let current = c.with_label_values(labels);
    let now = current.get();
    if value >= now {
        current.inc_by(value - now);
    } else {
        let _ = c.remove_label_values(labels);
        c.with_label_values(labels).inc_by(value);
    }
}

/// What the probes report: the agent is live while it serves; it is ready once its watch
/// has listed the VMs and it holds a libvirt connection.
#[derive(Debug, Default)]
pub struct Health {
    synced: AtomicBool,
    libvirt: AtomicBool,
}

impl Health {
    /// The controller's cache has its first full list.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Whether libvirt answers.
    pub fn set_libvirt(&self, connected: bool) {
        self.libvirt.store(connected, Ordering::Relaxed);
    }

    /// Whether libvirt answered at the last check.
    pub fn libvirt_connected(&self) -> bool {
        self.libvirt.load(Ordering::Relaxed)
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.synced.load(Ordering::Relaxed) {
            Some("the VM watch has not listed yet")
        } else if !self.libvirt.load(Ordering::Relaxed) {
            Some("no libvirt connection")
        } else {
            None
        }
    }
}

/// `/metrics`, `/healthz` (liveness) and `/readyz` (readiness).
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let h = health.clone();
                async move {
                    match h.not_ready() {
                        None => (StatusCode::OK, "ok\n".to_owned()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        )
}

/// Serve [`router`] on `addr` until the process ends.
pub async fn serve(
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(metrics, health)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_series_appear_and_disappear_with_the_vm() {
        let m = Metrics::new();
        let s = DomainStats {
            cpu_time_ns: 2_500_000_000,
            memory_bytes: 64 << 20,
            disk_read_bytes: 10,
            ..Default::default()
        };
        m.observe_vm("ns", "web", &s);
        let text = m.render();
        assert!(
            text.contains("ironvisor_vm_cpu_seconds_total{name=\"web\",namespace=\"ns\"} 2.5"),
            "{text}"
        );
        assert!(text.contains(
            "ironvisor_vm_disk_bytes_total{direction=\"read\",name=\"web\",namespace=\"ns\"} 10"
        ));
        m.forget_vm("ns", "web");
        assert!(!m.render().contains("name=\"web\""));
    }

    #[test]
    fn a_counter_that_goes_down_restarts_instead_of_going_negative() {
        let m = Metrics::new();
        m.observe_vm(
            "ns",
            "a",
            &DomainStats {
                cpu_time_ns: 5_000_000_000,
                ..Default::default()
            },
        );
        m.observe_vm(
            "ns",
            "a",
            &DomainStats {
                cpu_time_ns: 1_000_000_000,
                ..Default::default()
            },
        );
        assert!(
            m.render()
                .contains("ironvisor_vm_cpu_seconds_total{name=\"a\",namespace=\"ns\"} 1\n")
        );
    }

    #[test]
    fn restarts_start_at_zero_count_up_and_vanish_with_the_vm() {
        let m = Metrics::new();
        m.vm_seen("ns", "web");
        assert!(
            m.render()
                .contains("ironvisor_vm_restarts_total{name=\"web\",namespace=\"ns\"} 0\n")
        );
        m.vm_restarted("ns", "web");
        m.vm_restarted("ns", "web");
        assert!(
            m.render()
                .contains("ironvisor_vm_restarts_total{name=\"web\",namespace=\"ns\"} 2\n")
        );
        m.forget_vm("ns", "web");
        assert!(!m.render().contains("ironvisor_vm_restarts_total{"));
    }

    #[test]
    fn libvirt_reconnects_are_counted_from_the_connection_total() {
        let m = Metrics::new();
        m.observe_libvirt(true, 0);
        m.observe_libvirt(false, 0);
        m.observe_libvirt(true, 2);
        let text = m.render();
        assert!(
            text.contains("ironvisor_agent_libvirt_connected 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ironvisor_agent_libvirt_reconnects_total 2\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_probes_answer_on_the_metrics_address() {
        let health = Arc::new(Health::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::new(Metrics::new()), health.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await.0, 200);
        let (code, body) = get("/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("watch"), "{body}");
        health.set_synced();
        let (code, body) = get("/readyz").await;
        assert_eq!((code, body.as_str()), (503, "no libvirt connection\n"));
        health.set_libvirt(true);
        assert_eq!(get("/readyz").await.0, 200);
        let (code, body) = get("/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("ironvisor_agent_resident_memory_bytes"));
    }

    #[test]
    fn errors_are_labelled_by_fixed_category_and_rss_is_reported() {
        let m = Metrics::new();
        m.reconcile_error(ErrorCategory::Storage);
        m.reconcile_ok();
        drop(m.reconcile_timer());
        let text = m.render();
        assert!(text.contains("ironvisor_agent_reconcile_errors_total{category=\"storage\"} 1"));
        assert!(text.contains("ironvisor_agent_reconciles_total{result=\"ok\"} 1"));
        assert!(text.contains("ironvisor_agent_reconcile_duration_seconds_count 1"));
        let rss_line = text
            .lines()
            .find(|l| l.starts_with("ironvisor_agent_resident_memory_bytes "))
            .unwrap();
        let rss: f64 = rss_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(rss > 1e6, "{rss_line}");
    }

    #[test]
    fn start_failures_are_counted_by_a_fixed_reason_from_zero() {
        let m = Metrics::new();
        let text = m.render();
        for reason in ["define", "start", "storage"] {
            assert!(
                text.contains(&format!(
                    "ironvisor_agent_vm_start_failures_total{{reason=\"{reason}\"}} 0"
                )),
                "{text}"
            );
        }
        m.vm_start_failed(FailureKind::Start);
        m.vm_start_failed(FailureKind::Start);
        assert!(
            m.render()
                .contains("ironvisor_agent_vm_start_failures_total{reason=\"start\"} 2")
        );
    }
}
