//! The rebalancer's series. Labels from fixed sets only: the mode (DryRun, Automatic), the
//! result of a move (recommended, created, create_failed) and the outcome of an evaluation.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// `result` label values of `ironvisor_rebalance_moves_total`.
pub const RESULTS: [&str; 3] = ["recommended", "created", "create_failed"];
/// `outcome` label values of `ironvisor_rebalance_evaluations_total`.
pub const OUTCOMES: [&str; 6] = [
    "balanced",
    "moved",
    "budget_exhausted",
    "no_improving_move",
    "too_few_hosts",
    "waiting",
];

/// The rebalancer's series.
#[derive(Clone)]
pub struct RebalanceMetrics {
    /// Moves per mode and result.
    pub moves: IntCounterVec,
    /// Evaluations per outcome.
    pub evaluations: IntCounterVec,
    /// The spread of the hosts' weighted load at the last evaluation, percentage points.
    pub imbalance: IntGauge,
}

impl RebalanceMetrics {
    /// Create and register the series, every label combination at 0.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let moves = IntCounterVec::new(
            Opts::new(
                "ironvisor_rebalance_moves_total",
                "Rebalancing moves per mode (DryRun, Automatic) and result (recommended, created, create_failed)",
            ),
            &["mode", "result"],
        )?;
        let evaluations = IntCounterVec::new(
            Opts::new(
                "ironvisor_rebalance_evaluations_total",
                "Rebalancer evaluations per outcome (leader only)",
            ),
            &["outcome"],
        )?;
        let imbalance = IntGauge::new(
            "ironvisor_rebalance_imbalance_percent",
            "Busiest minus least busy host's weighted load at the last evaluation, percentage points",
        )?;
        registry.register(Box::new(moves.clone()))?;
        registry.register(Box::new(evaluations.clone()))?;
        registry.register(Box::new(imbalance.clone()))?;
        for mode in ["DryRun", "Automatic"] {
            for r in RESULTS {
                moves.with_label_values(&[mode, r]);
            }
        }
        for o in OUTCOMES {
            evaluations.with_label_values(&[o]);
        }
        Ok(Self {
            moves,
            evaluations,
            imbalance,
        })
    }
}
