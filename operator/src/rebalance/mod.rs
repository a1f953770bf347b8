//! Rebalancing (DRS): even out the hosts' real load by live-migrating VMs.
//!
//! Owns the `RebalancePolicy` named `default` (its status) and the migrations it creates
//! (labelled `ironvisor.io/made-by: rebalancer`). Every few seconds the leader reads the
//! policy; when its interval has passed (or its spec changed) it reads the hosts' measured
//! load (written by the agents), waits while any migration runs or a host's load predates
//! the last one, lets the pure [`decide`] choose the moves, and then, per mode: DryRun writes
//! them to the status and an Event per new recommendation on the VM; Automatic creates a
//! `VirtualMachineMigration` naming the target per move, with an Event on the VM saying
//! which metric, which host, why this VM and the expected effect. The migrations themselves
//! go through the migration controller (its lock, target filters and any limits).
//!
//! Level-triggered: the budget and the cool-downs are counted from the status and the
//! labelled migrations, never from memory. Never writes a VM.

pub mod decide;
pub mod input;
pub mod metrics;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ironvisor_crds::Hypervisor;
use ironvisor_crds::migration::VirtualMachineMigration;
use ironvisor_crds::rebalance::{
    HostLoadSummary, MADE_BY_LABEL, MADE_BY_REBALANCER, REASON_ANNOTATION, REBALANCE_POLICY,
    RebalanceMode, RebalancePolicy, RecentMove, Recommendation,
};
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use ironvisor_crds::vm::VirtualMachine;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::leader::Leadership;
use crate::metrics::Metrics;
use decide::{Outcome, Plan, Settings};

/// How often the leader looks at the policy.
const TICK: Duration = Duration::from_secs(2);
/// The field manager of the rebalancer's writes.
const MANAGER: &str = "ironvisor-operator-rebalancer";
/// Longest Event note the API server takes.
const NOTE_MAX: usize = 1000;

/// What the rebalancer needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader acts.
    pub leadership: Leadership,
    /// Events on the VMs.
    pub recorder: Recorder,
    /// Moves and evaluations.
    pub metrics: Arc<Metrics>,
}

/// Why an evaluation did not finish (tried again at the next tick).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a read or write.
    #[error("rebalancer API call")]
    Api(#[from] kube::Error),
}

/// Run the rebalancer until the process ends.
pub async fn run(ctx: Ctx) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        if !ctx.leadership.is_leader() {
            continue;
        }
        if let Err(e) = evaluate_if_due(&ctx).await {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "rebalancer");
        }
    }
}

/// Whether the policy asks for an evaluation now.
fn due(p: &RebalancePolicy, now: Timestamp) -> bool {
    if p.spec.mode == RebalanceMode::Off {
        return false;
    }
    let Some(status) = &p.status else { return true };
    if status.observed_generation != p.metadata.generation {
        return true;
    }
    let interval = SignedDuration::from_secs(i64::try_from(p.spec.interval_seconds).unwrap_or(60));
    status
        .last_evaluation_time
        .as_ref()
        .is_none_or(|t| now.duration_since(t.0) >= interval)
}

fn settings(p: &RebalancePolicy, now: Timestamp) -> Settings {
    Settings {
        cpu_weight: p.spec.weights.cpu.max(0.0),
        memory_weight: p.spec.weights.memory.max(0.0),
        threshold: f64::from(p.spec.threshold_percent),
        min_improvement: f64::from(p.spec.min_improvement_percent),
        budget: p.spec.max_moves_per_hour,
        cooldown: SignedDuration::from_secs(i64::try_from(p.spec.cooldown_seconds).unwrap_or(0)),
        now,
    }
}

async fn evaluate_if_due(ctx: &Ctx) -> Result<(), Error> {
    let policies = Api::<RebalancePolicy>::all(ctx.client.clone());
    let Some(policy) = policies.get_opt(REBALANCE_POLICY).await? else {
        return Ok(());
    };
    let now = Timestamp::now();
    if !due(&policy, now) {
        return Ok(());
    }
    let hvs = Api::<Hypervisor>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let migrations = Api::<VirtualMachineMigration>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    if let Err(wait) = input::settled(&hvs, &migrations, now) {
        ctx.metrics
            .rebalance
            .evaluations
            .with_label_values(&["waiting"])
            .inc();
        let status = json!({
            "observedGeneration": policy.metadata.generation,
            "lastEvaluationTime": Time(now),
            "message": wait.to_string(),
        });
        return write_status(ctx, status).await;
    }
    let vms = Api::<VirtualMachine>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    // A VM with snapshot layers on its host cannot move (the migration would be refused).
    let snapshots = Api::<VirtualMachineSnapshot>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let inputs = input::build(
        &policy,
        &hvs,
        &vms,
        &migrations,
        &snapshots,
        settings(&policy, now),
    );
    let plan = decide::decide(&inputs.hosts, &inputs.vms, &inputs.settings);
    act(ctx, &policy, inputs, plan, now).await
}

/// Make (Automatic) or recommend (DryRun) the plan's moves; write the status.
async fn act(
    ctx: &Ctx,
    policy: &RebalancePolicy,
    inputs: input::Inputs,
    plan: Plan,
    now: Timestamp,
) -> Result<(), Error> {
    let mode = policy.spec.mode;
    let previous: BTreeSet<(String, String, String, String)> = policy
        .status
        .iter()
        .flat_map(|s| s.recommendations.iter())
        .map(|r| {
            (
                r.namespace.clone(),
                r.vm.clone(),
                r.from.clone(),
                r.to.clone(),
            )
        })
        .collect();
    let mut recent = inputs.recent;
    let mut recommendations = Vec::new();
    for m in &plan.moves {
        let mut rec = Recommendation {
            namespace: m.namespace.clone(),
            vm: m.vm.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            reason: m.reason.clone(),
            migration: None,
        };
        if mode == RebalanceMode::Automatic {
            match create_migration(ctx, m).await {
                Ok(name) => {
                    count(ctx, mode, "created");
                    recent.push(RecentMove {
                        namespace: m.namespace.clone(),
                        vm: m.vm.clone(),
                        migration: name.clone(),
                        time: Time(now),
                    });
                    let note = format!("{} (migration {name})", m.reason);
                    vm_event(ctx, m, "RebalanceMigration", note).await;
                    rec.migration = Some(name);
                }
                Err(e) => {
                    count(ctx, mode, "create_failed");
                    tracing::warn!(vm = %format!("{}/{}", m.namespace, m.vm), error = %e, "rebalancer could not create a migration");
                }
            }
        } else {
            count(ctx, mode, "recommended");
            let key = (
                m.namespace.clone(),
                m.vm.clone(),
                m.from.clone(),
                m.to.clone(),
            );
            if !previous.contains(&key) {
                let note = format!("recommended, not made (DryRun): {}", m.reason);
                vm_event(ctx, m, "RebalanceRecommended", note).await;
            }
        }
        recommendations.push(rec);
    }
    let made = recent
        .iter()
        .filter(|r| now.duration_since(r.time.0) < SignedDuration::from_hours(1))
        .count();
    let outcome = outcome_label(&plan);
    ctx.metrics
        .rebalance
        .evaluations
        .with_label_values(&[outcome])
        .inc();
    ctx.metrics
        .rebalance
        .imbalance
        .set(plan.spread.round() as i64);
    let status = json!({
        "observedGeneration": policy.metadata.generation,
        "lastEvaluationTime": Time(now),
        "imbalancePercent": plan.spread.round().max(0.0) as u32,
        "message": message(&plan, policy),
        "hosts": plan.loads.iter().map(|(name, cpu, mem, load)| HostLoadSummary {
            name: name.clone(),
            cpu_percent: cpu.round().max(0.0) as u32,
            memory_percent: mem.round().max(0.0) as u32,
            load_percent: load.round().max(0.0) as u32,
        }).collect::<Vec<_>>(),
        "recommendations": recommendations,
        "movesInLastHour": made,
        "recentMoves": recent,
    });
    write_status(ctx, status).await
}

fn count(ctx: &Ctx, mode: RebalanceMode, result: &str) {
    ctx.metrics
        .rebalance
        .moves
        .with_label_values(&[mode.as_str(), result])
        .inc();
}

fn outcome_label(plan: &Plan) -> &'static str {
    match (&plan.outcome, plan.moves.is_empty()) {
        (_, false) => "moved",
        (Outcome::Balanced, true) => "balanced",
        (Outcome::BudgetExhausted, true) => "budget_exhausted",
        (Outcome::NoImprovingMove { .. }, true) => "no_improving_move",
        (Outcome::TooFewHosts, true) => "too_few_hosts",
    }
}

/// The evaluation in one sentence.
fn message(plan: &Plan, p: &RebalancePolicy) -> String {
    let spread = format!(
        "spread {:.0} points (threshold {})",
        plan.spread, p.spec.threshold_percent
    );
    let verb = if p.spec.mode == RebalanceMode::Automatic {
        "migrating"
    } else {
        "recommending (DryRun)"
    };
    let moves = if plan.moves.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = plan
            .moves
            .iter()
            .map(|m| format!("{}/{} {} -> {}", m.namespace, m.vm, m.from, m.to))
            .collect();
        format!("{verb} {}; ", list.join(", "))
    };
    let why = match &plan.outcome {
        Outcome::TooFewHosts => "fewer than two hosts report a fresh load".to_owned(),
        Outcome::Balanced => format!("balanced: {spread}"),
        Outcome::BudgetExhausted => format!(
            "migration budget of {} moves per hour used up; {spread}",
            p.spec.max_moves_per_hour
        ),
        Outcome::NoImprovingMove { why } => format!("{spread}, but {why}"),
    };
    format!("{moves}{why}")
}

async fn write_status(ctx: &Ctx, status: serde_json::Value) -> Result<(), Error> {
    Api::<RebalancePolicy>::all(ctx.client.clone())
        .patch_status(
            REBALANCE_POLICY,
            &PatchParams::apply(MANAGER),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// Create the migration of one move; its name comes from the API server.
async fn create_migration(ctx: &Ctx, m: &decide::Move) -> Result<String, kube::Error> {
    let prefix: String = m.vm.chars().take(40).collect();
    let mig: VirtualMachineMigration = serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachineMigration",
        "metadata": {
            "generateName": format!("rebalance-{}-", prefix.trim_end_matches(['-', '.'])),
            "namespace": m.namespace,
            "labels": { MADE_BY_LABEL: MADE_BY_REBALANCER },
            "annotations": { REASON_ANNOTATION: truncate(&m.reason, NOTE_MAX) },
        },
        "spec": { "vmName": m.vm, "targetNode": m.to },
    }))
    .map_err(kube::Error::SerdeError)?;
    let created = Api::<VirtualMachineMigration>::namespaced(ctx.client.clone(), &m.namespace)
        .create(&PostParams::default(), &mig)
        .await?;
    Ok(created.metadata.name.unwrap_or_default())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

async fn vm_event(ctx: &Ctx, m: &decide::Move, reason: &str, note: String) {
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &m.namespace)
        .get_opt(&m.vm)
        .await;
    let Ok(Some(vm)) = vm else { return };
    let ev = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(truncate(&note, NOTE_MAX)),
        action: "Rebalance".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &vm.object_ref(&())).await {
        tracing::debug!(error = %e, "rebalance event not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_never_due_and_a_changed_spec_is_due_at_once() {
        let now: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        let mut p = RebalancePolicy::new("default", Default::default());
        assert!(!due(&p, now), "Off by default");
        p.spec.mode = RebalanceMode::DryRun;
        p.spec.interval_seconds = 60;
        assert!(due(&p, now), "never evaluated");
        p.metadata.generation = Some(2);
        p.status = Some(ironvisor_crds::rebalance::RebalancePolicyStatus {
            observed_generation: Some(2),
            last_evaluation_time: Some(Time(now - SignedDuration::from_secs(30))),
            ..Default::default()
        });
        assert!(!due(&p, now));
        assert!(due(&p, now + SignedDuration::from_secs(30)));
        p.metadata.generation = Some(3);
        assert!(due(&p, now), "the spec changed");
    }

    #[test]
    fn event_notes_are_cut_at_a_character_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, NOTE_MAX);
        assert!(t.len() <= NOTE_MAX && t.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short", NOTE_MAX), "short");
    }
}
