//! Creation → placement latency through a real (local) API server: the devcluster in-process,
//! 100 simulated hosts, one operator replica in-process, and N VMs created by 16 concurrent
//! clients. A VM's latency runs from just before its create request to the moment a watch
//! sees its `ironvisor.io/node` label. Prints p50/p99/max and placements per second.
//!
//! Run: `cargo run -p ironvisor-operator --example devcluster_latency --release -- [VMS]`
//! (default 1,000 VMs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ironvisor_crds::{Hypervisor, VirtualMachine, labels};
use ironvisor_devcluster::DevCluster;
use ironvisor_operator::metrics::Metrics;
use ironvisor_operator::run::{RunConfig, run};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

const HOSTS: usize = 100;
const CLIENTS: usize = 16;

async fn setup(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ironvisor_crds::crdgen::all() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in [labels::SYSTEM_NAMESPACE, "bench"] {
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    }
    let vms: Api<VirtualMachine> = Api::all(client.clone());
    while vms.list(&ListParams::default()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hvs: Api<Hypervisor> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), labels::SYSTEM_NAMESPACE);
    for i in 0..HOSTS {
        let name = format!("host-{i:03}");
        hvs.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}, "spec": {}}))?,
        )
        .await?;
        let now = jiff::Timestamp::now().to_string();
        let res = json!({"vcpus": 64, "memory": "256Gi"});
        let status = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
            "metadata": {"name": name},
            "status": {"capacity": res, "allocatable": res, "lastHeartbeatTime": now,
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                                "message": "", "lastTransitionTime": now}]}});
        let pp = PatchParams::apply(&labels::agent_manager(&name)).force();
        hvs.patch_status(&name, &pp, &Patch::Apply(status)).await?;
        let lease = format!("{}{name}", labels::HEARTBEAT_LEASE_PREFIX);
        let renew = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease, "namespace": labels::SYSTEM_NAMESPACE},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew}});
        leases.patch(&lease, &pp, &Patch::Apply(body)).await?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let cluster = DevCluster::start_ephemeral().await?;
    let client = cluster.client()?;
    setup(&client).await?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let op = tokio::spawn(run(
        client.clone(),
        RunConfig::new("bench"),
        Arc::new(Metrics::new()?),
        async {
            let _ = stopped.await;
        },
    ));

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let placed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), "bench");
    let watch = {
        let placed = placed.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Ok(Some(ev)) = s.try_next().await {
                let objs: Vec<VirtualMachine> = match ev {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                    _ => vec![],
                };
                for o in objs {
                    if o.labels().contains_key(labels::NODE) {
                        placed
                            .lock()
                            .expect("lock")
                            .entry(o.name_any())
                            .or_insert_with(Instant::now);
                    }
                }
            }
        })
    };

    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let created = created.clone();
            async move {
                let name = format!("vm-{i:05}");
                let vm: VirtualMachine = serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "bench"},
                    "spec": {"runStrategy": "Always", "cpu": {"cores": 1 + i % 4},
                             "memory": {"size": format!("{}Gi", 1 + i % 8)}}}))
                .expect("VM");
                created.lock().expect("lock").insert(name, Instant::now());
                api.create(&PostParams::default(), &vm)
                    .await
                    .expect("create");
            }
        })
        .buffer_unordered(CLIENTS)
        .collect::<Vec<()>>()
        .await;
    let created_all = started.elapsed();
    while placed.lock().expect("lock").len() < n {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "not all VMs placed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = started.elapsed();
    let created = created.lock().expect("lock").clone();
    let placed = placed.lock().expect("lock").clone();
    let mut lat: Vec<Duration> = created
        .iter()
        .filter_map(|(k, c)| placed.get(k).map(|p| p.saturating_duration_since(*c)))
        .collect();
    lat.sort();
    println!(
        "{n} VMs over {HOSTS} hosts, {CLIENTS} concurrent creators: created in {created_all:.2?}, all placed in {total:.2?} ({:.0} placements/s)",
        n as f64 / total.as_secs_f64()
    );
    println!(
        "creation -> placement: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    watch.abort();
    let _ = stop.send(());
    op.await??;
    cluster.shutdown().await;
    Ok(())
}
