//! Host loss and return against the devcluster: a stale heartbeat makes the host Ready=False
//! and its VMs Ready=False HostLost, phase Unknown; a Restart VM without disks is placed
//! elsewhere; the others wait; when the heartbeat resumes the host and its VMs recover: the
//! operator clears its HostLost marks and the agent's forced status takes phase and Ready
//! back; the moved VM keeps its one owner.

mod common;

use std::time::Duration;

use common::{Env, Operator, eventually, fast_config};
use ironvisor_crds::labels;
use ironvisor_crds::vm::Phase;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

const NS: &str = "ops";

async fn host_ready(env: &Env, host: &str) -> Option<(String, String)> {
    let h = env.hypervisors().get(host).await.ok()?;
    let c = h
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason))
}

/// (phase, Ready status, Ready reason) of a VM.
async fn vm_state(env: &Env, name: &str) -> Option<(Option<Phase>, String, String)> {
    let st = env.vms(NS).get(name).await.ok()?.status?;
    let r = st.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((st.phase, r.status.clone(), r.reason.clone()))
}

async fn vm_lost(env: &Env, name: &str) -> bool {
    vm_state(env, name).await
        == Some((
            Some(Phase::Unknown),
            "False".to_owned(),
            "HostLost".to_owned(),
        ))
}

/// The agent of `node` reports a VM running: its status fields, applied with force under
/// its own field manager, as the agent does on every reconcile.
async fn agent_reports_running(env: &Env, node: &str, name: &str) {
    let now = jiff::Timestamp::now().to_string();
    let body = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS},
        "status": {"phase": "Running", "printableStatus": "Running",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                            "message": "", "lastTransitionTime": now}]}});
    env.vms(NS)
        .patch_status(
            name,
            &PatchParams::apply(&labels::agent_manager(node)).force(),
            &Patch::Apply(body),
        )
        .await
        .expect("agent status written");
}

/// The VMs an agent of `node` sees through its label-selected watch.
async fn selected_by(env: &Env, node: &str) -> Vec<String> {
    let lp = ListParams::default().labels(&format!("{}={node}", labels::NODE));
    let mut names: Vec<String> = env
        .vms(NS)
        .list(&lp)
        .await
        .expect("list")
        .items
        .iter()
        .map(|v| v.name_any())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_host_marks_its_vms_moves_the_restartable_one_and_recovers_on_return() {
    let env = Env::start().await;
    env.tenant(NS, &[NS], None).await;
    env.host("h1", 16, "32Gi", json!({})).await;
    let beat1 = env.keep_alive(&["h1"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    let restart = json!({"evictionStrategy": "Restart"});
    let restart_disk = json!({"evictionStrategy": "Restart",
        "disks": [{"name": "data", "size": "1Gi", "source": {"blank": {}}}]});
    env.vm(NS, "diskless", 1, "1Gi", restart).await;
    env.vm(NS, "with-disk", 1, "1Gi", restart_disk).await;
    env.vm(NS, "stays", 1, "1Gi", json!({})).await;
    for name in ["diskless", "with-disk", "stays"] {
        eventually(&format!("{name} is on h1"), || async {
            env.node_of(NS, name).await.as_deref() == Some("h1")
        })
        .await;
    }
    // h1's agent runs two of them ("stays" is never reported: an agent that had not got
    // to it yet).
    for name in ["diskless", "with-disk"] {
        agent_reports_running(&env, "h1", name).await;
    }
    env.host("h2", 16, "32Gi", json!({})).await;
    let beat2 = env.keep_alive(&["h2"]);

    // h1's heartbeat stops.
    beat1.abort();
    eventually("h1 is Ready=False HostLost", || async {
        host_ready(&env, "h1").await == Some(("False".to_owned(), "HostLost".to_owned()))
    })
    .await;
    for name in ["with-disk", "stays"] {
        eventually(&format!("{name} is lost with its host"), || {
            vm_lost(&env, name)
        })
        .await;
        assert_eq!(env.node_of(NS, name).await.as_deref(), Some("h1"));
    }
    eventually(
        "the metrics say h1 is down and two VMs are Unknown",
        || async {
            let text = op.metrics.render().expect("metrics");
            text.contains(r#"ironvisor_host_ready{host="h1"} 0"#)
                && text.contains(r#"ironvisor_host_ready{host="h2"} 1"#)
                && text.contains(r#"ironvisor_vms{phase="Unknown"} 2"#)
        },
    )
    .await;
    eventually(
        "the diskless Restart VM is placed on h2, not Ready until h2's agent reports",
        || async {
            env.node_of(NS, "diskless").await.as_deref() == Some("h2")
                && vm_state(&env, "diskless").await
                    == Some((
                        Some(Phase::Scheduled),
                        "False".to_owned(),
                        "Rescheduled".to_owned(),
                    ))
        },
    )
    .await;

    // h1 returns: heartbeat and agent status again.
    let beat1 = env.keep_alive(&["h1"]);
    env.agent_status("h1", 16, "32Gi").await;
    eventually("h1 is Ready again", || async {
        host_ready(&env, "h1")
            .await
            .is_some_and(|(s, _)| s == "True")
    })
    .await;
    // The operator clears its marks at once: the VM no agent reported is back to Scheduled,
    // Ready unknown until an agent reports it; the reported one waits for its agent.
    eventually("stays is no longer HostLost", || async {
        vm_state(&env, "stays").await
            == Some((
                Some(Phase::Scheduled),
                "Unknown".to_owned(),
                "HostReturned".to_owned(),
            ))
    })
    .await;
    eventually("the metrics say h1 is up again", || async {
        let text = op.metrics.render().expect("metrics");
        text.contains(r#"ironvisor_host_ready{host="h1"} 1"#)
            && text.contains(r#"ironvisor_vms{phase="Unknown"} 0"#)
    })
    .await;
    eventually("with-disk is no longer HostLost", || async {
        vm_state(&env, "with-disk")
            .await
            .is_some_and(|(_, s, r)| s == "Unknown" && r == "HostReturned")
    })
    .await;
    // h1's agent reconciles what its watch selects and takes phase and Ready back.
    assert_eq!(
        selected_by(&env, "h1").await,
        vec!["stays".to_owned(), "with-disk".to_owned()],
        "one owner per VM: h1's agent no longer selects the moved VM"
    );
    agent_reports_running(&env, "h1", "with-disk").await;
    tokio::time::sleep(Duration::from_secs(2)).await; // two resyncs of the operator
    assert_eq!(
        vm_state(&env, "with-disk").await,
        Some((
            Some(Phase::Running),
            "True".to_owned(),
            "Running".to_owned()
        )),
        "the agent's status stands"
    );
    assert_eq!(env.node_of(NS, "with-disk").await.as_deref(), Some("h1"));
    assert_eq!(
        env.node_of(NS, "diskless").await.as_deref(),
        Some("h2"),
        "one owner per VM: the moved VM stays moved"
    );
    assert_eq!(selected_by(&env, "h2").await, vec!["diskless".to_owned()]);

    beat1.abort();
    beat2.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}
