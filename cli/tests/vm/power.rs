//! `ivctl start|stop|restart` against the devcluster: the exact field written, its owner,
//! idempotence, `--wait` with the agent's status writes played by the test.

use ironvisor_crds::labels::{REQUESTED_STATE, RESTART_REQUESTED_AT};
use ironvisor_crds::vm::RunStrategy;
use k8s_openapi::jiff::Timestamp;
use pretty_assertions::assert_eq;
use serde_json::json;
use std::process::Stdio;

use crate::common::*;

fn annotations(
    vm: &ironvisor_crds::vm::VirtualMachine,
) -> std::collections::BTreeMap<String, String> {
    vm.metadata.annotations.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_halts_an_always_vm_with_a_merge_patch_owned_by_ivctl_and_a_second_stop_changes_nothing()
 {
    let c = Cluster::start().await;
    c.create_vm("web", "Always", json!({})).await;
    c.agent_reports("web", "Running", json!({})).await;

    let out = run(c.ivctl(&["stop", "web", "-n", NS])).await;
    assert_eq!(
        ok(&out),
        "team/web: runStrategy Always -> Halted; the agent shuts the guest down\n"
    );
    let vm = c.get("web").await;
    assert_eq!(vm.spec.run_strategy, RunStrategy::Halted);
    assert_eq!(
        annotations(&vm),
        Default::default(),
        "no annotation written"
    );
    assert_eq!(
        managers_of(&vm, &["f:spec", "f:runStrategy"]),
        [("ivctl".to_owned(), "Update".to_owned())],
        "ivctl owns runStrategy now"
    );
    // The status the agent and operator own is untouched.
    assert_eq!(
        vm.status.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(HOST)
    );

    let rv = vm.metadata.resource_version.clone();
    let again = run(c.ivctl(&["stop", "web", "-n", NS])).await;
    assert_eq!(
        ok(&again),
        "team/web: already has runStrategy Halted; the agent is stopping it (now Running)\n"
    );
    assert_eq!(
        c.get("web").await.metadata.resource_version,
        rv,
        "nothing written"
    );
    c.agent_reports("web", "Stopped", json!({})).await;
    let third = run(c.ivctl(&["stop", "web", "-n", NS])).await;
    assert_eq!(
        ok(&third),
        "team/web: is already stopped (runStrategy Halted)\n"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_of_a_halted_vm_sets_always_and_wait_shows_each_phase_until_running() {
    let c = Cluster::start().await;
    c.create_vm("web", "Halted", json!({})).await;
    c.agent_reports("web", "Stopped", json!({})).await;

    let mut cmd = c.ivctl(&["start", "web", "-n", NS, "--wait", "--timeout", "20s"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("ivctl runs");
    // The agent: sees Always, reports Starting, then Running.
    c.eventually("runStrategy Always", || async {
        (c.get("web").await.spec.run_strategy == RunStrategy::Always).then_some(())
    })
    .await;
    c.agent_reports("web", "Starting", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.agent_reports(
        "web",
        "Running",
        json!({"startedAt": "2026-11-25T09:30:00Z"}),
    )
    .await;
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("ivctl ends")
        .expect("output");
    assert_eq!(
        ok(&out),
        "team/web: runStrategy Halted -> Always; the agent starts the guest\nteam/web is Running\n"
    );
    let progress = stderr(&out);
    for line in [
        "waiting for team/web to be Running: Stopped on host-a",
        "waiting for team/web to be Running: Starting on host-a",
        "waiting for team/web to be Running: Running on host-a",
    ] {
        assert!(progress.contains(line), "{line:?} in:\n{progress}");
    }
    let vm = c.get("web").await;
    assert_eq!(
        managers_of(&vm, &["f:spec", "f:runStrategy"]),
        [("ivctl".to_owned(), "Update".to_owned())]
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_vms_are_started_and_stopped_through_the_requested_state_annotation() {
    let c = Cluster::start().await;
    c.create_vm("job", "Manual", json!({"team.example/owner": "ops"}))
        .await;
    c.agent_reports("job", "Stopped", json!({})).await;

    let out = run(c.ivctl(&["start", "job", "-n", NS])).await;
    assert_eq!(
        ok(&out),
        "team/job: start requested (ironvisor.io/requestedState=Running)\n"
    );
    let vm = c.get("job").await;
    assert_eq!(
        vm.spec.run_strategy,
        RunStrategy::Manual,
        "the strategy stays"
    );
    assert_eq!(
        annotations(&vm),
        [
            (
                "ironvisor.io/requestedState".to_owned(),
                "Running".to_owned()
            ),
            ("team.example/owner".to_owned(), "ops".to_owned()),
        ]
        .into(),
        "only our annotation is added"
    );
    assert_eq!(
        managers_of(
            &vm,
            &[
                "f:metadata",
                "f:annotations",
                &format!("f:{REQUESTED_STATE}")
            ]
        ),
        [("ivctl".to_owned(), "Update".to_owned())]
    );
    let again = run(c.ivctl(&["start", "job", "-n", NS])).await;
    assert_eq!(
        ok(&again),
        "team/job: is already running (runStrategy Manual)\n"
    );

    c.agent_reports("job", "Running", json!({})).await;
    let out = run(c.ivctl(&["stop", "job", "-n", NS])).await;
    assert_eq!(
        ok(&out),
        "team/job: stop requested (ironvisor.io/requestedState=Stopped)\n"
    );
    assert_eq!(
        annotations(&c.get("job").await)
            .get(REQUESTED_STATE)
            .map(String::as_str),
        Some("Stopped")
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_writes_an_rfc3339_timestamp_and_waits_until_the_agent_acted_on_it() {
    let c = Cluster::start().await;
    c.create_vm("web", "Always", json!({})).await;
    c.agent_reports("web", "Running", json!({})).await;
    let before = Timestamp::now();

    let mut cmd = c.ivctl(&["restart", "web", "-n", NS, "--wait", "--timeout", "20s"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("ivctl runs");
    let value = c
        .eventually("the restart annotation", || async {
            annotations(&c.get("web").await)
                .get(RESTART_REQUESTED_AT)
                .cloned()
        })
        .await;
    let at: Timestamp = value.parse().expect("RFC 3339");
    assert!(
        at.as_second() >= before.as_second() && at <= Timestamp::now(),
        "{value} is the time of the request"
    );
    // The agent restarts the guest and records the request it handled.
    c.agent_reports("web", "Starting", json!({})).await;
    c.agent_reports("web", "Running", json!({"lastRestartRequest": value}))
        .await;
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("ivctl ends")
        .expect("output");
    assert_eq!(
        ok(&out),
        format!(
            "team/web: restart requested (ironvisor.io/restartedAt={value})\nteam/web is restarted and Running\n"
        )
    );
    let vm = c.get("web").await;
    assert_eq!(vm.spec.run_strategy, RunStrategy::Always);
    assert_eq!(
        managers_of(
            &vm,
            &[
                "f:metadata",
                "f:annotations",
                &format!("f:{RESTART_REQUESTED_AT}")
            ]
        ),
        [("ivctl".to_owned(), "Update".to_owned())]
    );

    // A second restart at once gets a new value, so the agent restarts again.
    let out = run(c.ivctl(&["restart", "web", "-n", NS])).await;
    ok(&out);
    let second = annotations(&c.get("web").await)[RESTART_REQUESTED_AT].clone();
    assert_ne!(second, value);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_vm_and_namespace_and_refusals_write_nothing() {
    let c = Cluster::start().await;
    let out = run(c.ivctl(&["start", "nope", "-n", NS])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: VirtualMachine \"nope\" not found in namespace \"team\"\n"
    );

    c.create_vm("off", "Halted", json!({})).await;
    c.agent_reports("off", "Stopped", json!({})).await;
    let rv = c.get("off").await.metadata.resource_version;
    let out = run(c.ivctl(&["restart", "off", "-n", NS])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: team/off is not running (runStrategy Halted, Stopped); start it with `ivctl start`\n"
    );
    assert_eq!(c.get("off").await.metadata.resource_version, rv);

    c.create_vm("batch", "Once", json!({})).await;
    c.agent_reports("batch", "Stopped", json!({})).await;
    let out = run(c.ivctl(&["start", "batch", "-n", NS])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("team/batch has runStrategy Once and its guest stopped"),
        "{}",
        stderr(&out)
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_gives_up_after_the_timeout_and_says_where_the_vm_is() {
    let c = Cluster::start().await;
    c.create_vm("web", "Halted", json!({})).await;
    c.agent_reports("web", "Stopped", json!({})).await;
    let started = std::time::Instant::now();
    let out = run(c.ivctl(&["start", "web", "-n", NS, "--wait", "--timeout", "1"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        stderr(&out).ends_with(
            "error: timed out after 1s waiting for team/web to be Running (now: Stopped on host-a)\n"
        ),
        "{}",
        stderr(&out)
    );
    // The write happened; only the wait failed.
    assert_eq!(c.get("web").await.spec.run_strategy, RunStrategy::Always);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_comes_from_the_context_unless_n_is_given() {
    let c = Cluster::start().await;
    c.create_vm("web", "Always", json!({})).await;
    // The current context's namespace is "sandbox": not found there.
    let out = run(c.ivctl(&["stop", "web"])).await;
    assert_eq!(
        stderr(&out),
        "error: VirtualMachine \"web\" not found in namespace \"sandbox\"\n"
    );
    // --context team selects namespace team; --kubeconfig beats KUBECONFIG.
    let mut cmd = c.ivctl(&["stop", "web", "--context", "team", "--kubeconfig"]);
    cmd.arg(&c.kubeconfig).env("KUBECONFIG", "/nonexistent");
    ok(&run(cmd).await);
    assert_eq!(c.get("web").await.spec.run_strategy, RunStrategy::Halted);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_terminal_wait_draws_a_spinner_with_the_phase() {
    let c = Cluster::start().await;
    c.create_vm("web", "Halted", json!({})).await;
    c.agent_reports("web", "Stopped", json!({})).await;
    // `script` gives ivctl a pseudo-terminal, so indicatif draws instead of printing lines.
    let line = format!(
        "{} start web -n {NS} --wait --timeout 20s",
        env!("CARGO_BIN_EXE_ivctl")
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("script runs (bsdutils)");
    c.eventually("runStrategy Always", || async {
        (c.get("web").await.spec.run_strategy == RunStrategy::Always).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    c.agent_reports("web", "Running", json!({})).await;
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("ivctl ends")
        .expect("output");
    let screen = ok(&out);
    assert!(
        screen.contains("waiting for team/web to be Running: Stopped on host-a ("),
        "the spinner shows the phase and the elapsed time: {screen:?}"
    );
    assert!(
        !screen.contains("[0s]"),
        "no line-per-change output on a terminal: {screen:?}"
    );
    assert!(screen.contains("team/web is Running"), "{screen:?}");
    c.stop().await;
}
