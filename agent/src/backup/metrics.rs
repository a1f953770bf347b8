//! Backup metrics of the agent: how many backups and restores ended how, how long a backup
//! took and how many bytes it wrote. Labels from fixed sets only.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

/// How a backup ended (label `result`).
pub const BACKUP_RESULTS: [&str; 2] = ["succeeded", "failed"];
/// Why a backup failed (label `reason` of `ironvisor_agent_backup_failures_total`).
pub const FAILURE_REASONS: [&str; 5] = [
    "location_not_found",
    "location_unavailable",
    "vm_not_found",
    "copy_failed",
    "io",
];
/// How a restore of a disk from a backup ended (label `result`).
pub const RESTORE_RESULTS: [&str; 3] = ["restored", "checksum_mismatch", "failed"];

/// The backup metrics.
#[derive(Clone)]
pub struct BackupMetrics {
    backups: IntCounterVec,
    failures: IntCounterVec,
    duration: Histogram,
    bytes: IntCounter,
    restores: IntCounterVec,
}

impl BackupMetrics {
    /// Make the metrics and register them with the agent's registry.
    pub fn register(into: &crate::metrics::Metrics) -> prometheus::Result<Self> {
        let backups = IntCounterVec::new(
            Opts::new(
                "ironvisor_agent_backups_total",
                "Backups this agent finished, by result.",
            ),
            &["result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "ironvisor_agent_backup_failures_total",
                "Backups this agent failed, by reason.",
            ),
            &["reason"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "ironvisor_agent_backup_duration_seconds",
                "Time to write a backup (copy, checksum, manifest).",
            )
            .buckets(vec![1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0]),
        )?;
        let bytes = IntCounter::new(
            "ironvisor_agent_backup_bytes_total",
            "Bytes of backup images this agent wrote.",
        )?;
        let restores = IntCounterVec::new(
            Opts::new(
                "ironvisor_agent_backup_restores_total",
                "Disks restored from backups on this host, by result.",
            ),
            &["result"],
        )?;
        for r in BACKUP_RESULTS {
            let _ = backups.with_label_values(&[r]);
        }
        for r in FAILURE_REASONS {
            let _ = failures.with_label_values(&[r]);
        }
        for r in RESTORE_RESULTS {
            let _ = restores.with_label_values(&[r]);
        }
        into.register(Box::new(backups.clone()))?;
        into.register(Box::new(failures.clone()))?;
        into.register(Box::new(duration.clone()))?;
        into.register(Box::new(bytes.clone()))?;
        into.register(Box::new(restores.clone()))?;
        Ok(Self {
            backups,
            failures,
            duration,
            bytes,
            restores,
        })
    }

    /// A backup succeeded after `seconds`, writing `bytes`.
    pub fn succeeded(&self, seconds: f64, bytes: u64) {
        self.backups.with_label_values(&["succeeded"]).inc();
        self.duration.observe(seconds);
        self.bytes.inc_by(bytes);
    }

    /// A backup failed for `reason`, one of [`FAILURE_REASONS`].
    pub fn failed(&self, reason: &'static str) {
        self.backups.with_label_values(&["failed"]).inc();
        self.failures.with_label_values(&[reason]).inc();
    }

    /// A disk restore ended with `result`, one of [`RESTORE_RESULTS`].
    pub fn restore(&self, result: &'static str) {
        self.restores.with_label_values(&[result]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_at_zero_and_a_failure_counts_under_its_reason() {
        let registry = crate::metrics::Metrics::new();
        let m = BackupMetrics::register(&registry).unwrap();
        let text = registry.render();
        for r in FAILURE_REASONS {
            let series = format!("ironvisor_agent_backup_failures_total{{reason=\"{r}\"}} 0");
            assert!(text.contains(&series), "{series} in {text}");
        }
        m.failed("copy_failed");
        m.succeeded(2.5, 1024);
        let text = registry.render();
        assert!(text.contains("ironvisor_agent_backup_failures_total{reason=\"copy_failed\"} 1"));
        assert!(text.contains("ironvisor_agent_backups_total{result=\"failed\"} 1"));
        assert!(text.contains("ironvisor_agent_backups_total{result=\"succeeded\"} 1"));
        assert!(text.contains("ironvisor_agent_backup_bytes_total 1024"));
        assert!(text.contains("ironvisor_agent_backup_duration_seconds_count 1"));
    }
}
