//! `devcluster-bench`: figures for docs/devcluster.md (not a timed test).
//!
//! Measures creates per second (sequential and 16 in flight, built-in ConfigMaps and a custom
//! resource with schema + CEL validation), the list of 10,000 objects, and watch event latency
//! with 100 concurrent watchers. Run with `cargo run --release -p ironvisor-devcluster --bin
//! devcluster-bench`.

use futures::{StreamExt, TryStreamExt};
use ironvisor_devcluster::DevCluster;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::discovery::ApiResource;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

async fn create_many(api: &Api<ConfigMap>, prefix: &str, n: usize, inflight: usize) -> f64 {
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                api.create(&PostParams::default(), &cm(&name))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(inflight)
        .try_collect::<Vec<_>>()
        .await
        .expect("creates succeed");
    n as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cluster = DevCluster::start_ephemeral().await?;
    let client = cluster.client()?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let seq = create_many(&api, "seq", 1000, 1).await;
    let par = create_many(&api, "par", 2000, 16).await;
    println!("| creates/s, ConfigMap, sequential | {seq:.0} |");
    println!("| creates/s, ConfigMap, 16 in flight | {par:.0} |");

    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.bench.io"},
        "spec": {"group": "bench.io", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "required": ["size"], "properties": {"size": {"type": "integer", "minimum": 1},
                    "memory": {"x-kubernetes-int-or-string": true}},
                    "x-kubernetes-validations": [{"rule": "quantity(string(self.memory)).compareTo(quantity('64Mi')) >= 0", "message": "too small"}]}}}}}]}});
    let crd_ar = ApiResource::erase::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&());
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    crds.patch(
        "widgets.bench.io",
        &PatchParams::apply("bench"),
        &Patch::Apply(&crd),
    )
    .await?;
    let ar = ApiResource {
        group: "bench.io".into(),
        version: "v1".into(),
        api_version: "bench.io/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let start = Instant::now();
    let n = 1000;
    futures::stream::iter(0..n)
        .map(|i| {
            let w = widgets.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(
                    json!({"apiVersion": "bench.io/v1", "kind": "Widget",
                    "metadata": {"name": format!("w-{i}")}, "spec": {"size": 1, "memory": "1Gi"}}),
                )?;
                w.create(&PostParams::default(), &obj).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "| creates/s, custom resource with schema + CEL, 16 in flight | {:.0} |",
        n as f64 / start.elapsed().as_secs_f64()
    );

    // Bring the ConfigMap count to 10,000 and time full lists.
    let have = api.list(&ListParams::default()).await?.items.len();
    create_many(&api, "fill", 10_000 - have, 16).await;
    let mut times = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        let l = api.list(&ListParams::default()).await?;
        assert_eq!(l.items.len(), 10_000);
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "| list of 10,000 ConfigMaps (median of 5) | {:.0} ms |",
        times[2].as_secs_f64() * 1000.0
    );

    // 100 watchers on a fresh namespace's ConfigMaps; latency from create sent to event seen.
    let sent: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let events = 200;
    let mut watchers = vec![];
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    for _ in 0..100 {
        let api = api.clone();
        let (sent, lat, rv) = (sent.clone(), lat.clone(), rv.clone());
        watchers.push(tokio::spawn(async move {
            let mut s = api
                .watch(&WatchParams::default().labels("bench=watch"), &rv)
                .await?
                .boxed();
            let mut seen = 0;
            while let Some(ev) = s.try_next().await? {
                if let WatchEvent::Added(o) = ev {
                    let name = o.metadata.name.unwrap_or_default();
                    let at = sent.lock().unwrap().get(&name).copied();
                    if let Some(at) = at {
                        lat.lock().unwrap().push(at.elapsed());
                    }
                    seen += 1;
                    if seen == events {
                        break;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..events {
        let name = format!("watched-{i}");
        let mut c = cm(&name);
        c.metadata.labels = Some(BTreeMap::from([("bench".to_string(), "watch".to_string())]));
        sent.lock().unwrap().insert(name, Instant::now());
        api.create(&PostParams::default(), &c).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w).await???;
    }
    let mut l = lat.lock().unwrap().clone();
    l.sort();
    println!(
        "| watch latency, 100 watchers x {events} events: p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&l, 0.5).as_secs_f64() * 1000.0,
        percentile(&l, 0.99).as_secs_f64() * 1000.0
    );
    cluster.shutdown().await;
    Ok(())
}
