//! Live-migration series: migrations by result, duration and downtime histograms, and
//! gauges of what runs now (per phase, data still to copy, the oldest one's age). Labels
//! from fixed sets only: the result and the phase. Observed by the leader: the counters and
//! histograms once per migration (when it reaches its terminal phase), the gauges from
//! every migration at each [`MigrationMetrics::set_active`].

use ironvisor_crds::migration::{MigrationPhase, VirtualMachineMigration};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The `result` label values of `ironvisor_migrations_total`.
pub const RESULTS: [&str; 3] = ["Completed", "Failed", "Cancelled"];
/// The `phase` label values of `ironvisor_migrations_active` (the non-terminal phases).
pub const ACTIVE_PHASES: [MigrationPhase; 4] = [
    MigrationPhase::Pending,
    MigrationPhase::Scheduling,
    MigrationPhase::PreparingTarget,
    MigrationPhase::Migrating,
];

/// The migration series.
#[derive(Clone)]
pub struct MigrationMetrics {
    /// Migrations that ended, per result.
    pub total: IntCounterVec,
    /// Seconds from taking the VM's lock to the end, of completed migrations.
    pub duration: Histogram,
    /// The guest's pause at the switch-over as QEMU measured it, seconds.
    pub downtime: Histogram,
    /// Migrations not over, per phase.
    pub active: IntGaugeVec,
    /// Memory and disk bytes still to copy, summed over running copies.
    pub remaining: IntGauge,
    /// Age of the oldest migration past `Pending` and not over, seconds (0: none).
    pub oldest: IntGauge,
}

impl MigrationMetrics {
    /// Create and register the series.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let total = IntCounterVec::new(
            Opts::new(
                "ironvisor_migrations_total",
                "Live migrations that ended, per result (Completed, Failed, Cancelled)",
            ),
            &["result"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "ironvisor_migration_duration_seconds",
                "Seconds from a migration taking the VM's lock to the VM placed on the target",
            )
            .buckets(vec![
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        )?;
        let downtime = Histogram::with_opts(
            HistogramOpts::new(
                "ironvisor_migration_downtime_seconds",
                "The guest's pause at the switch-over of a completed migration, as QEMU measured it",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0]),
        )?;
        let active = IntGaugeVec::new(
            Opts::new(
                "ironvisor_migrations_active",
                "Live migrations not over, per phase (Pending includes those waiting for a policy limit)",
            ),
            &["phase"],
        )?;
        let remaining = IntGauge::new(
            "ironvisor_migration_data_remaining_bytes",
            "Memory and disk bytes still to copy, summed over the running migrations",
        )?;
        let oldest = IntGauge::new(
            "ironvisor_migration_oldest_active_seconds",
            "Age of the oldest migration past Pending and not over (0 when none runs)",
        )?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(downtime.clone()))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(remaining.clone()))?;
        registry.register(Box::new(oldest.clone()))?;
        for r in RESULTS {
            total.with_label_values(&[r]);
        }
        for p in ACTIVE_PHASES {
            active.with_label_values(&[p.as_str()]);
        }
        Ok(Self {
            total,
            duration,
            downtime,
            active,
            remaining,
            oldest,
        })
    }

    /// A migration reached `phase` (terminal) after `seconds` since it took the lock.
    pub fn ended(&self, phase: MigrationPhase, seconds: Option<f64>) {
        if let Some(r) = RESULTS.iter().find(|r| **r == phase.as_str()) {
            self.total.with_label_values(&[r]).inc();
        }
        if phase == MigrationPhase::Completed
            && let Some(s) = seconds
        {
            self.duration.observe(s);
        }
    }

    /// QEMU's downtime of a completed migration, milliseconds.
    pub fn downtime_ms(&self, ms: u64) {
        self.downtime.observe(ms as f64 / 1000.0);
    }

    /// Set the gauges from every migration in the cluster at `now`.
    pub fn set_active(&self, all: &[VirtualMachineMigration], now: jiff::Timestamp) {
        let g = gauges(all, now);
        for (p, n) in ACTIVE_PHASES.iter().zip(g.per_phase) {
            self.active.with_label_values(&[p.as_str()]).set(n);
        }
        self.remaining.set(g.remaining);
        self.oldest.set(g.oldest);
    }
}

/// What the gauges show, computed from the migrations.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Per [`ACTIVE_PHASES`] entry.
    pub per_phase: [i64; 4],
    /// Bytes still to copy.
    pub remaining: i64,
    /// Oldest started migration's age, seconds.
    pub oldest: i64,
}

/// The gauges' values. Pure.
pub fn gauges(all: &[VirtualMachineMigration], now: jiff::Timestamp) -> Gauges {
    let mut g = Gauges::default();
    for m in all {
        let s = m.status.clone().unwrap_or_default();
        let Some(i) = ACTIVE_PHASES.iter().position(|p| *p == s.phase) else {
            continue;
        };
        g.per_phase[i] += 1;
        if s.phase == MigrationPhase::Migrating
            && let Some(p) = s.source.as_ref().and_then(|x| x.progress.as_ref())
        {
            let left = p
                .memory_remaining_bytes
                .saturating_add(p.disk_remaining_bytes);
            g.remaining = g
                .remaining
                .saturating_add(i64::try_from(left).unwrap_or(i64::MAX));
        }
        if s.phase != MigrationPhase::Pending
            && let Some(t) = &s.start_time
        {
            let age = now.duration_since(t.0).as_secs().max(0);
            g.oldest = g.oldest.max(age);
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::migration::{
        MigrationProgress, MigrationSource, VirtualMachineMigrationStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn m(phase: MigrationPhase, started: i64, remaining: u64) -> VirtualMachineMigration {
        let mut m = VirtualMachineMigration::new(
            "m",
            serde_json::from_value(serde_json::json!({"vmName": "v"})).unwrap(),
        );
        m.status = Some(VirtualMachineMigrationStatus {
            phase,
            start_time: Some(Time(jiff::Timestamp::from_second(started).unwrap())),
            source: Some(MigrationSource {
                progress: Some(MigrationProgress {
                    memory_remaining_bytes: remaining,
                    disk_remaining_bytes: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        m
    }

    #[test]
    fn gauges_count_phases_sum_what_is_left_and_age_the_oldest_started() {
        use MigrationPhase::*;
        let all = [
            m(Pending, 0, 5),
            m(Migrating, 100, 1000),
            m(Migrating, 150, 10),
            m(PreparingTarget, 50, 7),
            m(Completed, 1, 99),
        ];
        let now = jiff::Timestamp::from_second(200).unwrap();
        let g = gauges(&all, now);
        assert_eq!(g.per_phase, [1, 0, 1, 2]);
        // Only running copies count; the disk's byte too.
        assert_eq!(g.remaining, 1012);
        // The pending one (created at 0) waits for a place: not "stuck".
        assert_eq!(g.oldest, 150);
        assert_eq!(gauges(&[], now), Gauges::default());
    }

    #[test]
    fn results_are_a_fixed_set_and_only_completions_are_timed() {
        let reg = Registry::new();
        let mm = MigrationMetrics::register(&reg).unwrap();
        mm.ended(MigrationPhase::Failed, Some(3.0));
        mm.ended(MigrationPhase::Completed, Some(3.0));
        mm.ended(MigrationPhase::Migrating, Some(3.0));
        assert_eq!(mm.total.with_label_values(&["Failed"]).get(), 1);
        assert_eq!(mm.total.with_label_values(&["Completed"]).get(), 1);
        assert_eq!(mm.duration.get_sample_count(), 1);
        let families = reg.gather();
        let total = families
            .iter()
            .find(|f| f.name() == "ironvisor_migrations_total")
            .unwrap();
        assert_eq!(total.get_metric().len(), RESULTS.len());
    }
}
