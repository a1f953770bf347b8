//! Object lifecycle through kube-rs: namespace deletion, ownerReferences garbage collection,
//! events through both Event APIs, label-selected lists and pagination.

use ironvisor_devcluster::DevCluster;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use std::time::Duration;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_what_it_holds() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let client = c.client().unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("doomed".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("s".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    nss.delete("doomed", &DeleteParams::background())
        .await
        .unwrap();
    let refused = cms.create(&PostParams::default(), &cm("late", &[])).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{refused:?}"
    );
    eventually("the namespace is gone", || async {
        nss.get_opt("doomed").await.unwrap().is_none()
    })
    .await;
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_go_when_their_owner_is_deleted() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let owner = cms
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let mut child = cm("child", &[]);
    child.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    cms.create(&PostParams::default(), &child).await.unwrap();
    cms.create(&PostParams::default(), &cm("bystander", &[]))
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("the child is collected", || async {
        cms.get_opt("child").await.unwrap().is_none()
    })
    .await;
    assert!(cms.get_opt("bystander").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_through_events_k8s_io_read_as_core_events() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let client = c.client().unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let target = cms
        .create(&PostParams::default(), &cm("subject", &[]))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ironvisor-test".into(),
            instance: None,
        },
    );
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: EventType::Normal,
                reason: "Tested".into(),
                note: Some("it works".into()),
                action: "Test".into(),
                secondary: None,
            },
            &target.object_ref(&()),
        )
        .await
        .unwrap();
    let events: Api<Event> = Api::default_namespaced(client);
    let lp = ListParams::default().fields("involvedObject.name=subject");
    let list = events.list(&lp).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("it works"));
    assert_eq!(e.reason.as_deref(), Some("Tested"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_select_by_label_and_paginate() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), &[("tier", tier)]),
        )
        .await
        .unwrap();
    }
    let even = cms
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(
        even.items.iter().map(|o| o.name_any()).collect::<Vec<_>>(),
        vec!["c0", "c2", "c4", "c6"]
    );
    let set = cms
        .list(&ListParams::default().labels("tier in (odd),tier notin (even)"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 3);
    let mut names = vec![];
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|o| o.name_any()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    let want: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
    assert_eq!(names, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selected_watch_sees_objects_enter_and_leave_the_selection() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
    let c = DevCluster::start_ephemeral().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    cms.create(&PostParams::default(), &cm("x", &[("node", "a")]))
        .await
        .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = cms
        .watch(&WatchParams::default().labels("node=b").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let relabel = |n: &'static str| {
        let cms = cms.clone();
        async move {
            let p = serde_json::json!({"metadata": {"labels": {"node": n}}});
            cms.patch("x", &PatchParams::default(), &Patch::Merge(&p))
                .await
                .unwrap();
        }
    };
    relabel("b").await;
    relabel("a").await;
    let mut seen = vec![];
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), w.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(o)) => seen.push(format!("ADDED {}", o.name_any())),
            Some(WatchEvent::Deleted(o)) => seen.push(format!("DELETED {}", o.name_any())),
            Some(WatchEvent::Modified(o)) => seen.push(format!("MODIFIED {}", o.name_any())),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(seen, vec!["ADDED x", "DELETED x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_removes_dependents_first_and_orphan_keeps_them() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    for (owner, child) in [("fg", "fg-child"), ("or", "or-child")] {
        let o = cms
            .create(&PostParams::default(), &cm(owner, &[]))
            .await
            .unwrap();
        let mut ch = cm(child, &[]);
        ch.metadata.owner_references = Some(vec![o.controller_owner_ref(&()).unwrap()]);
        cms.create(&PostParams::default(), &ch).await.unwrap();
    }
    cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    eventually("the foreground owner is gone", || async {
        cms.get_opt("fg").await.unwrap().is_none()
    })
    .await;
    assert!(
        cms.get_opt("fg-child").await.unwrap().is_none(),
        "its dependent went first"
    );
    cms.delete("or", &DeleteParams::orphan()).await.unwrap();
    eventually("the orphaning owner is gone", || async {
        cms.get_opt("or").await.unwrap().is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let child = cms.get("or-child").await.unwrap();
    assert!(
        child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "the orphan lost its owner reference"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_reads_return_partial_object_metadata() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    cms.create(&PostParams::default(), &cm("m", &[("a", "b")]))
        .await
        .unwrap();
    let one = cms.get_metadata("m").await.unwrap();
    assert_eq!(
        one.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(
        one.metadata
            .labels
            .unwrap_or_default()
            .get("a")
            .map(String::as_str),
        Some("b")
    );
    let list = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m"));
}
