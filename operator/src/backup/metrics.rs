//! Schedule series: objects schedules made and pruned, per action (`Snapshot`, `Backup`:
//! the fixed set of `ScheduleAction`). Observed by the leader, once per object.

use ironvisor_crds::schedule::ScheduleAction;
use prometheus::{IntCounterVec, Opts, Registry};

/// The `action` label values.
pub const ACTIONS: [&str; 2] = ["Snapshot", "Backup"];

/// The label value of an action.
pub fn action_label(a: ScheduleAction) -> &'static str {
    match a {
        ScheduleAction::Snapshot => "Snapshot",
        ScheduleAction::Backup => "Backup",
    }
}

/// The schedule series.
#[derive(Clone)]
pub struct ScheduleMetrics {
    /// Objects schedules made, per action.
    pub made: IntCounterVec,
    /// Objects schedules pruned by retention, per action.
    pub pruned: IntCounterVec,
}

impl ScheduleMetrics {
    /// Create and register the series (every action at 0).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let made = IntCounterVec::new(
            Opts::new(
                "ironvisor_schedule_objects_made_total",
                "Snapshots and backups that VirtualMachineSchedules made, per action",
            ),
            &["action"],
        )?;
        let pruned = IntCounterVec::new(
            Opts::new(
                "ironvisor_schedule_objects_pruned_total",
                "Snapshots and backups that schedules deleted by their retention, per action",
            ),
            &["action"],
        )?;
        for a in ACTIONS {
            made.with_label_values(&[a]).reset();
            pruned.with_label_values(&[a]).reset();
        }
        registry.register(Box::new(made.clone()))?;
        registry.register(Box::new(pruned.clone()))?;
        Ok(Self { made, pruned })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder as _;

    #[test]
    fn both_actions_exist_at_zero_and_count_apart() {
        let registry = Registry::new();
        let m = ScheduleMetrics::register(&registry).unwrap();
        m.made
            .with_label_values(&[action_label(ScheduleAction::Backup)])
            .inc();
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ironvisor_schedule_objects_made_total{action=\"Backup\"} 1"));
        assert!(text.contains("ironvisor_schedule_objects_made_total{action=\"Snapshot\"} 0"));
        assert!(text.contains("ironvisor_schedule_objects_pruned_total{action=\"Snapshot\"} 0"));
    }
}
