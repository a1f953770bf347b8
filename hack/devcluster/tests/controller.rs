//! A kube-rs Controller against the devcluster: reconciles objects created after it starts,
//! survives a watch that gets 410 Gone, and lands status through server-side apply.

use futures::StreamExt;
use ironvisor_devcluster::DevCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.devcluster.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    size: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    observed: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed")]
struct Failed(#[from] kube::Error);

async fn reconcile(w: Arc<Widget>, api: Arc<Api<Widget>>) -> Result<Action, Failed> {
    let status = json!({"apiVersion": "test.devcluster.io/v1", "kind": "Widget",
        "status": {"observed": w.spec.size}});
    api.patch_status(
        &w.name_any(),
        &PatchParams::apply("widget-controller").force(),
        &Patch::Apply(&status),
    )
    .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &Failed, _: Arc<Api<Widget>>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

async fn observed(api: &Api<Widget>, name: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(w) = api.get(name).await
            && w.status.as_ref().map(|s| s.observed) == Some(want)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached observed={want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_new_objects_recovers_from_410_and_lands_ssa_status() {
    let cluster = DevCluster::start_ephemeral().await.unwrap();
    let client = cluster.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .unwrap();
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    let shared = Arc::new(api.clone());
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, shared)
            .for_each(|_| async {}),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    api.create(
        &PostParams::default(),
        &Widget::new("a", WidgetSpec { size: 3 }),
    )
    .await
    .unwrap();
    observed(&api, "a", 3).await;

    let before = cluster.expired_watches();
    cluster.compact_history();
    api.create(
        &PostParams::default(),
        &Widget::new("b", WidgetSpec { size: 5 }),
    )
    .await
    .unwrap();
    observed(&api, "b", 5).await;
    assert!(
        cluster.expired_watches() > before,
        "the resumed watch was answered with 410 Gone"
    );

    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 7}})),
    )
    .await
    .unwrap();
    observed(&api, "a", 7).await;

    let a = api.get("a").await.unwrap();
    let managers: Vec<(String, Option<String>)> = a
        .managed_fields()
        .iter()
        .map(|m| (m.manager.clone().unwrap_or_default(), m.subresource.clone()))
        .collect();
    assert!(
        managers.contains(&("widget-controller".to_string(), Some("status".to_string()))),
        "{managers:?}"
    );
    assert_eq!(
        a.metadata.generation,
        Some(2),
        "the spec change bumped the generation once"
    );
    controller.abort();
    cluster.shutdown().await;
}

#[derive(Debug, thiserror::Error)]
#[error("finalizer step failed")]
struct FinalizerFailed(#[from] kube::runtime::finalizer::Error<Failed>);

async fn reconcile_with_finalizer(
    w: Arc<Widget>,
    ctx: Arc<(Api<Widget>, tokio::sync::mpsc::UnboundedSender<String>)>,
) -> Result<Action, FinalizerFailed> {
    use kube::runtime::finalizer::{Event, finalizer};
    let (api, cleaned) = (ctx.0.clone(), ctx.1.clone());
    Ok(
        finalizer(&api, "test.devcluster.io/cleanup", w, |ev| async move {
            match ev {
                Event::Apply(_) => Ok::<_, Failed>(Action::await_change()),
                Event::Cleanup(w) => {
                    let _ = cleaned.send(w.name_any());
                    Ok(Action::await_change())
                }
            }
        })
        .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_runtime_finalizer_helper_adds_runs_cleanup_and_releases() {
    let cluster = DevCluster::start_ephemeral().await.unwrap();
    let client = cluster.client().unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &Widget::crd())
        .await
        .unwrap();
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new((api.clone(), tx));
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(
                reconcile_with_finalizer,
                |_, _, _| Action::requeue(Duration::from_millis(100)),
                ctx,
            )
            .for_each(|_| async {}),
    );
    api.create(
        &PostParams::default(),
        &Widget::new("f", WidgetSpec { size: 1 }),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let w = api.get("f").await.unwrap();
        if w.finalizers()
            .iter()
            .any(|f| f == "test.devcluster.io/cleanup")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finalizer was never added"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.delete("f", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let cleaned = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap();
    assert_eq!(cleaned.as_deref(), Some("f"));
    loop {
        if api.get_opt("f").await.unwrap().is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the object was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller.abort();
}
