use super::*;
use ironvisor_crds::vm::VirtualMachineStatus;
use pretty_assertions::assert_eq;

const NOW: &str = "2026-11-25T10:00:00Z";

fn vm(strategy: RunStrategy, phase: Option<Phase>, requested: Option<&str>) -> VirtualMachine {
    let mut vm: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "team", "resourceVersion": "7"},
        "spec": {"runStrategy": strategy, "memory": {"size": "1Gi"}},
    }))
    .unwrap();
    if let Some(r) = requested {
        vm.metadata.annotations = Some([(REQUESTED_STATE.to_owned(), r.to_owned())].into());
    }
    vm.status = phase.map(|p| VirtualMachineStatus {
        phase: Some(p),
        ..VirtualMachineStatus::default()
    });
    vm
}

fn change(verb: Verb, vm: &VirtualMachine) -> Option<Change> {
    plan(verb, vm, NOW).unwrap().change
}

fn flip(from: RunStrategy, to: RunStrategy) -> Option<Change> {
    Some(Change::RunStrategy { from, to })
}

#[test]
fn start_of_a_halted_vm_sets_run_strategy_always_whatever_its_phase() {
    for p in [None, Some(Phase::Stopped), Some(Phase::Stopping)] {
        let v = vm(RunStrategy::Halted, p, None);
        let plan = plan(Verb::Start, &v, NOW).unwrap();
        assert_eq!(
            plan.change,
            flip(RunStrategy::Halted, RunStrategy::Always),
            "{p:?}"
        );
        assert_eq!(plan.target, Target::Running);
    }
}

#[test]
fn stop_of_an_always_rerun_or_once_vm_that_runs_sets_halted() {
    for s in [
        RunStrategy::Always,
        RunStrategy::RerunOnFailure,
        RunStrategy::Once,
    ] {
        let v = vm(s, Some(Phase::Running), None);
        assert_eq!(
            change(Verb::Stop, &v),
            flip(s, RunStrategy::Halted),
            "{s:?}"
        );
    }
    // An Always VM that is stopped would be started again by the agent: halt it too.
    let v = vm(RunStrategy::Always, Some(Phase::Stopped), None);
    assert_eq!(
        change(Verb::Stop, &v),
        flip(RunStrategy::Always, RunStrategy::Halted)
    );
}

#[test]
fn start_and_stop_that_change_nothing_write_nothing_and_say_so() {
    let cases = [
        (
            Verb::Start,
            vm(RunStrategy::Always, Some(Phase::Running), None),
            "is already running",
        ),
        (
            Verb::Stop,
            vm(RunStrategy::Halted, Some(Phase::Stopped), None),
            "is already stopped (runStrategy Halted)",
        ),
        (
            Verb::Stop,
            vm(RunStrategy::Halted, None, None),
            "is already stopped (runStrategy Halted)",
        ),
        (
            Verb::Start,
            vm(RunStrategy::Manual, Some(Phase::Running), None),
            "is already running (runStrategy Manual)",
        ),
        (
            Verb::Start,
            vm(RunStrategy::Manual, Some(Phase::Starting), Some("Running")),
            "is already running (runStrategy Manual)",
        ),
        (
            Verb::Stop,
            vm(RunStrategy::Manual, Some(Phase::Stopped), Some("Stopped")),
            "is already stopped (runStrategy Manual)",
        ),
        (
            Verb::Stop,
            vm(RunStrategy::Manual, Some(Phase::Scheduled), None),
            "is already stopped (runStrategy Manual)",
        ),
        (
            Verb::Stop,
            vm(RunStrategy::Once, Some(Phase::Stopped), None),
            "is already stopped (runStrategy Once)",
        ),
        (
            Verb::Start,
            vm(RunStrategy::RerunOnFailure, Some(Phase::Running), None),
            "is already running (runStrategy RerunOnFailure)",
        ),
    ];
    for (verb, v, message) in cases {
        let p = plan(verb, &v, NOW).unwrap();
        assert_eq!(p.change, None, "{verb:?} {message}");
        assert_eq!(p.message, message);
    }
}

#[test]
fn a_halted_vm_still_stopping_is_reported_as_stopping_not_stopped() {
    let v = vm(RunStrategy::Halted, Some(Phase::Stopping), None);
    let p = plan(Verb::Stop, &v, NOW).unwrap();
    assert_eq!(p.change, None);
    assert!(
        p.message
            .contains("the agent is stopping it (now Stopping)"),
        "{}",
        p.message
    );
}

#[test]
fn manual_vms_get_the_requested_state_annotation_not_a_strategy_change() {
    let stopped = vm(RunStrategy::Manual, Some(Phase::Stopped), None);
    assert_eq!(
        change(Verb::Start, &stopped),
        Some(Change::RequestedState("Running"))
    );
    let running = vm(RunStrategy::Manual, Some(Phase::Running), None);
    assert_eq!(
        change(Verb::Stop, &running),
        Some(Change::RequestedState("Stopped"))
    );
    // A stop in progress can be taken back, and a start in progress can be stopped.
    let stopping = vm(RunStrategy::Manual, Some(Phase::Running), Some("Stopped"));
    assert_eq!(
        change(Verb::Start, &stopping),
        Some(Change::RequestedState("Running"))
    );
    let starting = vm(RunStrategy::Manual, Some(Phase::Stopped), Some("Running"));
    assert_eq!(
        change(Verb::Stop, &starting),
        Some(Change::RequestedState("Stopped"))
    );
}

#[test]
fn start_of_a_stopped_rerun_on_failure_or_once_vm_is_refused_with_the_way_out() {
    for s in [RunStrategy::RerunOnFailure, RunStrategy::Once] {
        let v = vm(s, Some(Phase::Stopped), None);
        let e = plan(Verb::Start, &v, NOW).unwrap_err();
        assert_eq!(e, Refusal::StaysOff(s));
        assert!(
            e.to_string()
                .contains("set spec.runStrategy to Always or Manual")
        );
    }
}

#[test]
fn restart_sets_a_fresh_timestamp_and_waits_for_the_agent_to_record_it() {
    let v = vm(RunStrategy::Always, Some(Phase::Running), None);
    let p = plan(Verb::Restart, &v, NOW).unwrap();
    assert_eq!(p.change, Some(Change::RestartedAt(NOW.into())));
    assert_eq!(p.target, Target::Restarted(NOW.into()));
    let manual = vm(RunStrategy::Manual, Some(Phase::Running), Some("Running"));
    assert_eq!(
        change(Verb::Restart, &manual),
        Some(Change::RestartedAt(NOW.into()))
    );
}

#[test]
fn restart_while_another_operation_holds_the_vm_says_it_waits_and_for_whom() {
    let mut v = vm(RunStrategy::Always, Some(Phase::Running), None);
    let p = plan(Verb::Restart, &v, NOW).unwrap();
    assert!(!p.message.contains("waits"), "{}", p.message);
    v.status.as_mut().unwrap().operation = Some(ironvisor_crds::vm::VmOperation {
        kind: ironvisor_crds::vm::OperationKind::Migration,
        name: "web-drain-x".into(),
        uid: "u".into(),
        since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(NOW.parse().unwrap()),
    });
    let p = plan(Verb::Restart, &v, NOW).unwrap();
    assert_eq!(p.change, Some(Change::RestartedAt(NOW.into())));
    assert!(
        p.message
            .contains("it waits: Migration web-drain-x holds the VM since 2026-11-25T10:00:00Z"),
        "{}",
        p.message
    );
}

#[test]
fn restart_of_a_vm_meant_to_be_off_is_refused() {
    for v in [
        vm(RunStrategy::Halted, Some(Phase::Stopped), None),
        vm(RunStrategy::Halted, Some(Phase::Running), None),
        vm(RunStrategy::Manual, Some(Phase::Stopped), None),
        vm(RunStrategy::Manual, Some(Phase::Running), Some("Stopped")),
        vm(RunStrategy::Once, Some(Phase::Stopped), None),
    ] {
        let e = plan(Verb::Restart, &v, NOW).unwrap_err();
        assert!(matches!(e, Refusal::NotRunning(_)), "{e}");
    }
    let e = plan(
        Verb::Restart,
        &vm(RunStrategy::Halted, Some(Phase::Stopped), None),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "is not running (runStrategy Halted, Stopped); start it with `ivctl start`"
    );
}

#[test]
fn a_vm_being_deleted_is_left_alone() {
    let mut v = vm(RunStrategy::Always, Some(Phase::Running), None);
    v.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        NOW.parse().unwrap(),
    ));
    for verb in [Verb::Start, Verb::Stop, Verb::Restart] {
        assert_eq!(plan(verb, &v, NOW), Err(Refusal::Deleting));
    }
}

#[test]
fn a_second_restart_within_the_same_second_still_gets_a_new_value() {
    assert_eq!(restart_value("2026-11-25T10:00:00.25Z", None), NOW);
    assert_eq!(
        restart_value("2026-11-25T10:00:00.25Z", Some(NOW)),
        "2026-11-25T10:00:00.25Z"
    );
    assert_eq!(
        restart_value(NOW, Some(NOW)),
        "2026-11-25T10:00:00.000000001Z"
    );
    assert_eq!(
        restart_value("2026-11-25T10:00:00.25Z", Some("2026-11-25T10:00:00.25Z")),
        NOW
    );
}

#[test]
fn merge_patches_name_exactly_one_field_and_the_resource_version() {
    assert_eq!(
        merge_patch(
            &Change::RunStrategy {
                from: RunStrategy::Always,
                to: RunStrategy::Halted
            },
            Some("7")
        ),
        json!({"spec": {"runStrategy": "Halted"}, "metadata": {"resourceVersion": "7"}})
    );
    assert_eq!(
        merge_patch(&Change::RequestedState("Running"), Some("7")),
        json!({"metadata": {"resourceVersion": "7",
            "annotations": {"ironvisor.io/requestedState": "Running"}}})
    );
    assert_eq!(
        merge_patch(&Change::RestartedAt(NOW.into()), None),
        json!({"metadata": {"annotations": {"ironvisor.io/restartedAt": NOW}}})
    );
}

#[test]
fn waits_end_on_the_phase_or_the_recorded_restart_and_fail_on_failed() {
    let running = vm(RunStrategy::Always, Some(Phase::Running), None);
    assert_eq!(reached(&Target::Running, &running), Ok(true));
    assert_eq!(reached(&Target::Stopped, &running), Ok(false));
    let scheduled = vm(RunStrategy::Manual, Some(Phase::Scheduled), None);
    assert_eq!(reached(&Target::Stopped, &scheduled), Ok(true));
    let mut restarted = running.clone();
    assert_eq!(
        reached(&Target::Restarted(NOW.into()), &restarted),
        Ok(false)
    );
    restarted.status.as_mut().unwrap().last_restart_request = Some(NOW.into());
    assert_eq!(
        reached(&Target::Restarted(NOW.into()), &restarted),
        Ok(true)
    );
    let mut failed = vm(RunStrategy::Always, Some(Phase::Failed), None);
    failed.status.as_mut().unwrap().conditions = vec![ironvisor_crds::common::new_condition(
        "Ready",
        false,
        "InvalidSpec",
        "disk d has no source".into(),
        None,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(NOW.parse().unwrap()),
    )];
    assert_eq!(
        reached(&Target::Running, &failed),
        Err("the VM failed: InvalidSpec: disk d has no source".into())
    );
}
