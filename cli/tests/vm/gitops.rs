//! What a later `kubectl apply` of the VM's manifest does after `ivctl stop` (docs/ivctl.md
//! promises this): the manifest's runStrategy wins with client-side apply, server-side apply
//! reports the conflict with `ivctl`, and a manifest that does not set runStrategy, or a
//! Manual VM driven by annotations, shows no drift at all.

use ironvisor_crds::vm::RunStrategy;
use pretty_assertions::assert_eq;

use crate::common::*;

fn manifest(c: &Cluster, name: &str, strategy: Option<&str>) -> std::path::PathBuf {
    let strategy = strategy.map_or_else(String::new, |s| format!("  runStrategy: {s}\n"));
    let path = c.tmp.path().join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: ironvisor.io/v1alpha1
kind: VirtualMachine
metadata:
  name: {name}
  namespace: {NS}
spec:
{strategy}  memory:
    size: 1Gi
"
        ),
    )
    .unwrap();
    path
}

async fn apply(c: &Cluster, path: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = c.kubectl(&["apply", "-f"]);
    cmd.arg(path).args(extra);
    run(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_ivctl_stop_client_side_apply_restores_the_manifests_run_strategy() {
    let c = Cluster::start().await;
    let m = manifest(&c, "web", Some("Always"));
    ok(&apply(&c, &m, &[]).await);
    ok(&run(c.ivctl(&["stop", "web", "-n", NS])).await);
    assert_eq!(c.get("web").await.spec.run_strategy, RunStrategy::Halted);

    let out = apply(&c, &m, &[]).await;
    assert_eq!(ok(&out), "virtualmachine.ironvisor.io/web configured\n");
    assert_eq!(
        c.get("web").await.spec.run_strategy,
        RunStrategy::Always,
        "the manifest wins: a GitOps sync undoes ivctl stop"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_ivctl_stop_server_side_apply_reports_the_conflict_with_ivctl() {
    let c = Cluster::start().await;
    let m = manifest(&c, "web", Some("Always"));
    ok(&apply(&c, &m, &["--server-side"]).await);
    ok(&run(c.ivctl(&["stop", "web", "-n", NS])).await);

    let out = apply(&c, &m, &["--server-side"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("conflict with \"ivctl\""), "{err}");
    assert!(err.contains(".spec.runStrategy"), "{err}");
    assert_eq!(c.get("web").await.spec.run_strategy, RunStrategy::Halted);

    ok(&apply(&c, &m, &["--server-side", "--force-conflicts"]).await);
    assert_eq!(c.get("web").await.spec.run_strategy, RunStrategy::Always);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_that_leave_the_power_state_to_ivctl_show_no_drift() {
    let c = Cluster::start().await;
    // No runStrategy in the manifest: ivctl stop stays.
    let m = manifest(&c, "web", None);
    ok(&apply(&c, &m, &[]).await);
    ok(&run(c.ivctl(&["stop", "web", "-n", NS])).await);
    let out = apply(&c, &m, &[]).await;
    assert_eq!(ok(&out), "virtualmachine.ironvisor.io/web unchanged\n");
    assert_eq!(c.get("web").await.spec.run_strategy, RunStrategy::Halted);

    // Manual: the power state is an annotation the manifest does not mention.
    let m = manifest(&c, "job", Some("Manual"));
    ok(&apply(&c, &m, &[]).await);
    ok(&run(c.ivctl(&["start", "job", "-n", NS])).await);
    let mut diff = c.kubectl(&["diff", "-f"]);
    diff.arg(&m);
    let out = run(diff).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "no diff: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = apply(&c, &m, &[]).await;
    assert_eq!(ok(&out), "virtualmachine.ironvisor.io/job unchanged\n");
    let vm = c.get("job").await;
    assert_eq!(
        vm.metadata
            .annotations
            .unwrap_or_default()
            .get("ironvisor.io/requestedState")
            .map(String::as_str),
        Some("Running")
    );
    c.stop().await;
}
