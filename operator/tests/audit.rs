//! The audit trail through the real operator against the devcluster: who created, changed
//! and asked to delete a VM shows in its Events (by field manager), each once, across an
//! operator restart; a tenant cannot silence it through metadata.

mod common;

use common::{Env, Operator, eventually, fast_config, vm_object};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

const NS: &str = "audited";

async fn trail(env: &Env, name: &str) -> Vec<(String, String)> {
    let mut evs: Vec<Event> = Api::<Event>::namespaced(env.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.action.as_deref() == Some("Audit")
        })
        .collect();
    evs.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    evs.into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_changes_and_deletion_are_in_the_vms_events_with_their_writer_once() {
    let env = Env::start().await;
    env.tenant("aud", &[NS], None).await;
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    let mut vm = vm_object(NS, "web", 1, "1Gi", json!({}));
    // Held (as an agent's finalizer would) so the deletion request is observable.
    vm.metadata.finalizers = Some(vec!["test.ironvisor.io/hold".into()]);
    let create = PostParams {
        field_manager: Some("gitops-sync".into()),
        ..Default::default()
    };
    env.vms(NS).create(&create, &vm).await.expect("created");
    eventually("Created by gitops-sync", || async {
        trail(&env, "web").await
            == vec![(
                "Created".into(),
                "created by field manager gitops-sync".into(),
            )]
    })
    .await;

    // The tenant edits the spec with kubectl-edit, and tries to silence the trail through
    // an annotation: the trail reads only the status.
    env.vms(NS)
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({
                "metadata": {"annotations": {"ironvisor.io/audited": "99"}},
                "spec": {"cpu": {"cores": 2}},
            })),
        )
        .await
        .expect("edited");
    eventually("SpecChanged by kubectl-edit", || async {
        trail(&env, "web").await.get(1)
            == Some(&(
                "SpecChanged".into(),
                "spec changed to generation 2 by field manager kubectl-edit".into(),
            ))
    })
    .await;

    // A new leader announces nothing twice.
    op.stop().await;
    let op = Operator::start(env.client.clone(), fast_config("op-2"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        trail(&env, "web").await.len(),
        2,
        "{:?}",
        trail(&env, "web").await
    );

    env.vms(NS)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete accepted");
    eventually("DeletionRequested", || async {
        trail(&env, "web")
            .await
            .iter()
            .any(|(r, n)| r == "DeletionRequested" && n.starts_with("deletion requested"))
    })
    .await;
    env.vms(NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("released");
    op.stop().await;
}
