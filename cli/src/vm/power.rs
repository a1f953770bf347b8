//! What `ivctl start|stop|restart` writes for a VM in a given state: a pure decision, and
//! the JSON merge patch that carries it. No I/O here.
//!
//! The contract with the agent (`agent/src/run_strategy.rs`): `spec.runStrategy` says how
//! the VM is kept running; for `Manual` VMs the `ironvisor.io/requestedState` annotation
//! (`Running`/`Stopped`) asks for a start or stop; a new value of `ironvisor.io/restartedAt`
//! asks for one restart (the agent records the value it acted on in
//! `status.lastRestartRequest`). This module must never write anything else.
//!
//! Why a JSON merge patch and not server-side apply: an apply by one field manager removes
//! the fields that manager applied before and omits now, so `ivctl restart` (applying only
//! `restartedAt`) would delete the `requestedState` an earlier `ivctl start` applied. A merge
//! patch (sent with field manager `ivctl`, so `managedFields` still names the writer) touches
//! exactly the field it names. It carries the `resourceVersion` the decision was made on, so
//! a concurrent change makes it fail with 409 and the caller decides again.

use ironvisor_crds::labels::{REQUESTED_STATE, RESTART_REQUESTED_AT};
use ironvisor_crds::vm::{Phase, RunStrategy, VirtualMachine};
use kube::ResourceExt;
use serde_json::{Value, json};

/// Field manager recorded for every write `ivctl` makes.
pub const FIELD_MANAGER: &str = "ivctl";

/// `requestedState` value asking a Manual VM to run.
pub const REQUEST_RUNNING: &str = "Running";
/// `requestedState` value asking a Manual VM to stop.
pub const REQUEST_STOPPED: &str = "Stopped";

/// The verbs that change whether a VM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `ivctl start`.
    Start,
    /// `ivctl stop`.
    Stop,
    /// `ivctl restart`.
    Restart,
}

/// The one field a verb changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set `spec.runStrategy`.
    RunStrategy {
        /// The current value.
        from: RunStrategy,
        /// The new value.
        to: RunStrategy,
    },
    /// Set the `ironvisor.io/requestedState` annotation.
    RequestedState(&'static str),
    /// Set the `ironvisor.io/restartedAt` annotation to this timestamp.
    RestartedAt(String),
}

/// What a `--wait` waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The guest runs (`phase: Running`).
    Running,
    /// The guest is not running (`Stopped`, or never started: `Scheduled`, `Pending`).
    Stopped,
    /// The agent acted on this restart request (`status.lastRestartRequest`) and the guest
    /// runs again.
    Restarted(String),
}

/// The decision for one verb on one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// What to write; `None` when the VM is already where the verb would put it.
    pub change: Option<Change>,
    /// One sentence for the user (the VM's `namespace/name` is prefixed by the caller).
    pub message: String,
    /// What `--wait` waits for.
    pub target: Target,
}

/// Why a verb is refused (exit 1, nothing written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The VM is being deleted.
    #[error("is being deleted")]
    Deleting,
    /// The run strategy keeps the stopped guest off and `start` has nothing to change.
    #[error(
        "has runStrategy {0:?} and its guest stopped, so the agent keeps it off; set spec.runStrategy to Always or Manual to run it again"
    )]
    StaysOff(RunStrategy),
    /// `restart` of a VM that should not be running.
    #[error("is not running ({0}); start it with `ivctl start`")]
    NotRunning(String),
}

fn annotation<'a>(vm: &'a VirtualMachine, key: &str) -> Option<&'a str> {
    vm.annotations().get(key).map(String::as_str)
}

/// The VM's phase as its status says (`None`: no status yet).
pub fn phase(vm: &VirtualMachine) -> Option<Phase> {
    vm.status.as_ref().and_then(|s| s.phase)
}

/// The guest is up or on its way up.
fn is_up(phase: Option<Phase>) -> bool {
    matches!(
        phase,
        Some(Phase::Running | Phase::Starting | Phase::Stopping)
    )
}

/// Whether a Manual VM is meant to run: its request, else what the guest is doing (the
/// agent leaves an unrequested Manual VM as it is).
fn manual_wants_running(vm: &VirtualMachine) -> bool {
    match annotation(vm, REQUESTED_STATE) {
        Some(REQUEST_RUNNING) => true,
        Some(REQUEST_STOPPED) => false,
        _ => matches!(phase(vm), Some(Phase::Running | Phase::Starting)),
    }
}

/// Whether the agent keeps this VM's guest running (or is bringing it up).
fn wants_running(vm: &VirtualMachine) -> bool {
    match vm.spec.run_strategy {
        RunStrategy::Always => true,
        RunStrategy::Halted => false,
        RunStrategy::Manual => manual_wants_running(vm),
        RunStrategy::RerunOnFailure | RunStrategy::Once => phase(vm) != Some(Phase::Stopped),
    }
}

fn phase_text(vm: &VirtualMachine) -> String {
    vm.status
        .as_ref()
        .and_then(|s| {
            s.printable_status
                .clone()
                .or(s.phase.map(|p| p.as_str().into()))
        })
        .unwrap_or_else(|| "no status yet".into())
}

/// Decide what `verb` writes for `vm`. `now` is the RFC 3339 timestamp a restart request
/// carries (see [`restart_value`]).
pub fn plan(verb: Verb, vm: &VirtualMachine, now: &str) -> Result<Plan, Refusal> {
    if vm.metadata.deletion_timestamp.is_some() {
        return Err(Refusal::Deleting);
    }
    let strategy = vm.spec.run_strategy;
    let up = is_up(phase(vm));
    match verb {
        Verb::Start => plan_start(vm, strategy, up),
        Verb::Stop => Ok(plan_stop(vm, strategy, up)),
        Verb::Restart => {
            if !wants_running(vm) {
                return Err(Refusal::NotRunning(format!(
                    "runStrategy {strategy:?}, {}",
                    phase_text(vm)
                )));
            }
            let value = restart_value(now, annotation(vm, RESTART_REQUESTED_AT));
            let waits = vm
                .status
                .as_ref()
                .and_then(|s| s.operation.as_ref())
                .filter(|op| op.kind != ironvisor_crds::vm::OperationKind::Reset)
                .map(|op| {
                    format!(
                        "; it waits: {} {} holds the VM since {}, the guest is restarted once \
                         that has finished",
                        op.kind.as_str(),
                        op.name,
                        op.since.0
                    )
                })
                .unwrap_or_default();
            Ok(Plan {
                message: format!("restart requested ({RESTART_REQUESTED_AT}={value}){waits}"),
                target: Target::Restarted(value.clone()),
                change: Some(Change::RestartedAt(value)),
            })
        }
    }
}

fn plan_start(vm: &VirtualMachine, strategy: RunStrategy, up: bool) -> Result<Plan, Refusal> {
    let already = |what: &str| Plan {
        change: None,
        message: what.to_owned(),
        target: Target::Running,
    };
    match strategy {
        RunStrategy::Halted => Ok(Plan {
            change: Some(Change::RunStrategy {
                from: RunStrategy::Halted,
                to: RunStrategy::Always,
            }),
            message: "runStrategy Halted -> Always; the agent starts the guest".into(),
            target: Target::Running,
        }),
        RunStrategy::Manual if manual_wants_running(vm) => {
            Ok(already("is already running (runStrategy Manual)"))
        }
        RunStrategy::Manual => Ok(Plan {
            change: Some(Change::RequestedState(REQUEST_RUNNING)),
            message: format!("start requested ({REQUESTED_STATE}={REQUEST_RUNNING})"),
            target: Target::Running,
        }),
        RunStrategy::Always if phase(vm) == Some(Phase::Running) => {
            Ok(already("is already running"))
        }
        RunStrategy::Always => Ok(already(&format!(
            "already has runStrategy Always; the agent keeps it running (now {})",
            phase_text(vm)
        ))),
        RunStrategy::RerunOnFailure | RunStrategy::Once if phase(vm) == Some(Phase::Stopped) => {
            Err(Refusal::StaysOff(strategy))
        }
        RunStrategy::RerunOnFailure | RunStrategy::Once if up => Ok(already(&format!(
            "is already running (runStrategy {strategy:?})"
        ))),
        RunStrategy::RerunOnFailure | RunStrategy::Once => Ok(already(&format!(
            "has runStrategy {strategy:?}; the agent starts it (now {})",
            phase_text(vm)
        ))),
    }
}

fn plan_stop(vm: &VirtualMachine, strategy: RunStrategy, up: bool) -> Plan {
    let already = |what: String| Plan {
        change: None,
        message: what,
        target: Target::Stopped,
    };
    let halt = Plan {
        change: Some(Change::RunStrategy {
            from: strategy,
            to: RunStrategy::Halted,
        }),
        message: format!("runStrategy {strategy:?} -> Halted; the agent shuts the guest down"),
        target: Target::Stopped,
    };
    match strategy {
        RunStrategy::Halted if up => already(format!(
            "already has runStrategy Halted; the agent is stopping it (now {})",
            phase_text(vm)
        )),
        RunStrategy::Halted => already("is already stopped (runStrategy Halted)".into()),
        RunStrategy::Manual if manual_wants_running(vm) || up => Plan {
            change: Some(Change::RequestedState(REQUEST_STOPPED)),
            message: format!("stop requested ({REQUESTED_STATE}={REQUEST_STOPPED})"),
            target: Target::Stopped,
        },
        RunStrategy::Manual => already("is already stopped (runStrategy Manual)".into()),
        RunStrategy::Always => halt,
        RunStrategy::RerunOnFailure | RunStrategy::Once if phase(vm) == Some(Phase::Stopped) => {
            already(format!("is already stopped (runStrategy {strategy:?})"))
        }
        RunStrategy::RerunOnFailure | RunStrategy::Once => halt,
    }
}

/// The restart request value: `now` (RFC 3339, seconds, as `kubectl rollout restart`
/// writes), unless that equals the value already there (two restarts within a second),
/// then `now` with nanoseconds, so the agent sees a new value.
pub fn restart_value(now: &str, existing: Option<&str>) -> String {
    let Ok(ts) = now.parse::<k8s_openapi::jiff::Timestamp>() else {
        return now.to_owned();
    };
    let seconds = ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    if existing != Some(seconds.as_str()) {
        return seconds;
    }
    let precise = ts.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string();
    if existing == Some(precise.as_str()) || precise == seconds {
        // Same instant to the nanosecond (or a whole second): one nanosecond later.
        let next = ts + k8s_openapi::jiff::SignedDuration::from_nanos(1);
        return next.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string();
    }
    precise
}

/// The JSON merge patch that makes `change`, guarded by the `resourceVersion` the decision
/// was made on (`None`: unguarded).
pub fn merge_patch(change: &Change, resource_version: Option<&str>) -> Value {
    let mut patch = match change {
        Change::RunStrategy { to, .. } => json!({"spec": {"runStrategy": to}}),
        Change::RequestedState(s) => {
            json!({"metadata": {"annotations": {REQUESTED_STATE: s}}})
        }
        Change::RestartedAt(v) => {
            json!({"metadata": {"annotations": {RESTART_REQUESTED_AT: v}}})
        }
    };
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    patch
}

/// Whether the VM has reached `target`. `Err` carries why it never will (a Failed VM).
pub fn reached(target: &Target, vm: &VirtualMachine) -> Result<bool, String> {
    let status = vm.status.clone().unwrap_or_default();
    let failed = || {
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        Err(match ready {
            Some(c) => format!("the VM failed: {}: {}", c.reason, c.message),
            None => "the VM failed".to_owned(),
        })
    };
    match target {
        Target::Running => match status.phase {
            Some(Phase::Running) => Ok(true),
            Some(Phase::Failed) => failed(),
            _ => Ok(false),
        },
        Target::Stopped => Ok(matches!(
            status.phase,
            None | Some(Phase::Stopped | Phase::Scheduled | Phase::Pending | Phase::Failed)
        )),
        Target::Restarted(value) => {
            if status.phase == Some(Phase::Failed) {
                return failed();
            }
            Ok(
                status.last_restart_request.as_deref() == Some(value.as_str())
                    && status.phase == Some(Phase::Running),
            )
        }
    }
}

#[cfg(test)]
#[path = "power_tests.rs"]
mod tests;
