//! Snapshot metrics of the agent: snapshots taken (by consistency and result), why they
//! failed, how long they took and how many bytes they froze; layer merges and restores by
//! result and duration. Labels from fixed sets only.

use super::take::TakeError;
use ironvisor_crds::snapshot::{Consistency, SnapshotDisk};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts};
use std::time::Duration;

/// The consistency a snapshot reached (label `consistency`); `none` for a failed one.
pub const CONSISTENCIES: [&str; 5] = ["Application", "FileSystem", "Crash", "Offline", "none"];
/// How an operation ended (label `result`).
pub const RESULTS: [&str; 2] = ["ok", "error"];
/// Why a snapshot failed (label `reason` of `ironvisor_agent_snapshot_failures_total`).
pub const FAILURE_REASONS: [&str; 6] = [
    "guest_agent_required",
    "hypervisor",
    "storage",
    "disk_drift",
    "vm_not_found",
    "other",
];

/// Buckets of operation durations, seconds: a halted VM's snapshot takes milliseconds, a
/// merge of a large layer minutes.
const DURATION_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 1800.0];

/// The `reason` label of a failed snapshot, one of [`FAILURE_REASONS`].
pub fn failure_reason(e: &TakeError) -> &'static str {
    match e {
        TakeError::GuestAgentRequired(_) => "guest_agent_required",
        // A running block job makes the snapshot wait, not fail; counted as libvirt's should
        // it ever reach here.
        TakeError::Hypervisor(_) | TakeError::BlockJobActive(_) => "hypervisor",
        TakeError::Layer(_) | TakeError::Io(_) => "storage",
        TakeError::Drift { .. } => "disk_drift",
        TakeError::Xml(_) => "other",
    }
}

fn consistency_label(c: Consistency) -> &'static str {
    match c {
        Consistency::Application => "Application",
        Consistency::FileSystem => "FileSystem",
        Consistency::Crash => "Crash",
        Consistency::Offline => "Offline",
    }
}

/// The snapshot metrics.
#[derive(Clone)]
pub struct SnapshotMetrics {
    snapshots: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    size: Histogram,
    merges: IntCounterVec,
    merge_duration: Histogram,
    restores: IntCounterVec,
    restore_duration: Histogram,
}

fn counter(
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    for v in values {
        let _ = c.with_label_values(&[v]);
    }
    Ok(c)
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
}

impl SnapshotMetrics {
    /// Make the metrics and register them with the agent's registry.
    pub fn register(into: &crate::metrics::Metrics) -> prometheus::Result<Self> {
        let snapshots = IntCounterVec::new(
            Opts::new(
                "ironvisor_agent_snapshots_total",
                "Snapshots this agent took, by consistency reached and result.",
            ),
            &["consistency", "result"],
        )?;
        for c in &CONSISTENCIES[..4] {
            let _ = snapshots.with_label_values(&[c, "ok"]);
        }
        let _ = snapshots.with_label_values(&["none", "error"]);
        let failures = counter(
            "ironvisor_agent_snapshot_failures_total",
            "Snapshots this agent failed, by reason.",
            "reason",
            &FAILURE_REASONS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ironvisor_agent_snapshot_duration_seconds",
                "Time to take a snapshot (new layers, freeze, switch, thaw), by result.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["result"],
        )?;
        let size = histogram(
            "ironvisor_agent_snapshot_size_bytes",
            "Bytes a snapshot froze (allocated bytes of its layers, all disks) when it became ready.",
            prometheus::exponential_buckets(1024.0 * 1024.0, 4.0, 10)?,
        )?;
        let merges = counter(
            "ironvisor_agent_snapshot_merges_total",
            "Layer merges (snapshot deletes and restores) this agent carried out, by result.",
            "result",
            &RESULTS,
        )?;
        let merge_duration = histogram(
            "ironvisor_agent_snapshot_merge_duration_seconds",
            "Time to merge a layer into its parent on every disk.",
            DURATION_BUCKETS.to_vec(),
        )?;
        let restores = counter(
            "ironvisor_agent_snapshot_restores_total",
            "VMs this agent returned to a snapshot, by result.",
            "result",
            &RESULTS,
        )?;
        let restore_duration = histogram(
            "ironvisor_agent_snapshot_restore_duration_seconds",
            "Time to return a VM's disks to a snapshot (new layers and the merges that follow).",
            DURATION_BUCKETS.to_vec(),
        )?;
        for r in RESULTS {
            let _ = duration.with_label_values(&[r]);
        }
        into.register(Box::new(snapshots.clone()))?;
        into.register(Box::new(failures.clone()))?;
        into.register(Box::new(duration.clone()))?;
        into.register(Box::new(size.clone()))?;
        into.register(Box::new(merges.clone()))?;
        into.register(Box::new(merge_duration.clone()))?;
        into.register(Box::new(restores.clone()))?;
        into.register(Box::new(restore_duration.clone()))?;
        Ok(Self {
            snapshots,
            failures,
            duration,
            size,
            merges,
            merge_duration,
            restores,
            restore_duration,
        })
    }

    /// A snapshot was taken, or failed, after `took`.
    pub fn taken(&self, result: &Result<Consistency, TakeError>, took: Duration) {
        match result {
            Ok(c) => {
                self.snapshots
                    .with_label_values(&[consistency_label(*c), "ok"])
                    .inc();
                self.duration
                    .with_label_values(&["ok"])
                    .observe(took.as_secs_f64());
            }
            Err(e) => {
                self.failed(failure_reason(e));
                self.duration
                    .with_label_values(&["error"])
                    .observe(took.as_secs_f64());
            }
        }
    }

    /// A snapshot failed before one was attempted, for `reason` (one of [`FAILURE_REASONS`]).
    pub fn failed(&self, reason: &'static str) {
        self.snapshots.with_label_values(&["none", "error"]).inc();
        self.failures.with_label_values(&[reason]).inc();
    }

    /// A snapshot became ready with these disks: its size is the sum of their allocated bytes.
    pub fn ready(&self, disks: &[SnapshotDisk]) {
        let bytes: i64 = disks.iter().filter_map(|d| d.allocated_bytes).sum();
        self.size.observe(bytes.max(0) as f64);
    }

    /// A layer merge ended after `took`.
    pub fn merged<T, E>(&self, result: &Result<T, E>, took: Duration) {
        self.merges.with_label_values(&[result_label(result)]).inc();
        self.merge_duration.observe(took.as_secs_f64());
    }

    /// A restore ended; `took` is known for one that got as far as the disks.
    pub fn restored(&self, ok: bool, took: Option<Duration>) {
        let r = if ok { "ok" } else { "error" };
        self.restores.with_label_values(&[r]).inc();
        if let Some(t) = took {
            self.restore_duration.observe(t.as_secs_f64());
        }
    }
}

fn result_label<T, E>(r: &Result<T, E>) -> &'static str {
    if r.is_ok() { "ok" } else { "error" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::HvError;

    #[test]
    fn every_take_error_maps_to_a_listed_reason() {
        let errors = [
            TakeError::GuestAgentRequired("no agent".into()),
            TakeError::Io(std::io::Error::other("disk full")),
            TakeError::Drift {
                disk: "root".into(),
                expected: "a".into(),
                found: None,
            },
            TakeError::Hypervisor(HvError::NotFound("vm".into())),
        ];
        let reasons: Vec<_> = errors.iter().map(failure_reason).collect();
        assert_eq!(
            reasons,
            [
                "guest_agent_required",
                "storage",
                "disk_drift",
                "hypervisor"
            ]
        );
        for r in reasons {
            assert!(FAILURE_REASONS.contains(&r), "{r} is not a listed reason");
        }
    }

    #[test]
    fn series_exist_at_zero_and_operations_count_under_their_labels() {
        let registry = crate::metrics::Metrics::new();
        let m = SnapshotMetrics::register(&registry).unwrap();
        let text = registry.render();
        for r in FAILURE_REASONS {
            let series = format!("ironvisor_agent_snapshot_failures_total{{reason=\"{r}\"}} 0");
            assert!(text.contains(&series), "{series} in {text}");
        }
        let ms = Duration::from_millis(30);
        m.taken(&Ok(Consistency::FileSystem), ms);
        m.taken(&Err(TakeError::GuestAgentRequired("x".into())), ms);
        m.ready(&[SnapshotDisk {
            name: "root".into(),
            layer: "s-1".into(),
            size: Default::default(),
            allocated_bytes: Some(4096),
        }]);
        m.merged::<(), ()>(&Err(()), ms);
        m.restored(true, Some(ms));
        let text = registry.render();
        for series in [
            "ironvisor_agent_snapshots_total{consistency=\"FileSystem\",result=\"ok\"} 1",
            "ironvisor_agent_snapshots_total{consistency=\"none\",result=\"error\"} 1",
            "ironvisor_agent_snapshot_failures_total{reason=\"guest_agent_required\"} 1",
            "ironvisor_agent_snapshot_duration_seconds_count{result=\"ok\"} 1",
            "ironvisor_agent_snapshot_size_bytes_sum 4096",
            "ironvisor_agent_snapshot_merges_total{result=\"error\"} 1",
            "ironvisor_agent_snapshot_merges_total{result=\"ok\"} 0",
            "ironvisor_agent_snapshot_restores_total{result=\"ok\"} 1",
            "ironvisor_agent_snapshot_restore_duration_seconds_count 1",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }
}
