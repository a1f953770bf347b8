//! The race: 100 VMs created in parallel against a quota of 50 VMs admit exactly 50, round
//! after round on the same cluster, and also with the operator killed (its task aborted, as
//! a crash) and a new replica started in the middle of a burst. `status.used` of the Quota
//! and the number of labelled VMs are polled throughout and never exceed `hard`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Env, Operator, fast_config, vm_object};
use futures::StreamExt;
use ironvisor_crds::VirtualMachine;
use ironvisor_crds::labels;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Mutex;

const VMS: usize = 100;
const HARD: i64 = 50;
const ROUNDS: usize = 20;
/// Rounds stop starting after this long (the suite must stay fast on 2 shared cores).
const BUDGET: Duration = Duration::from_secs(45);
/// How long one round may take to settle.
const SETTLE: Duration = Duration::from_secs(30);

/// Highest Quota status.used.virtualMachines and highest labelled-VM count seen.
#[derive(Default)]
struct Peaks {
    used: AtomicI64,
    labelled: AtomicUsize,
}

/// Follows every version of the round's VMs and Quota through watches (every intermediate
/// state, not samples) and records the peaks.
fn watch_peaks(
    env: &Env,
    quota: String,
    ns: String,
    peaks: Arc<Peaks>,
) -> tokio::task::JoinHandle<()> {
    let quotas = watcher(env.quotas(), watcher::Config::default()).applied_objects();
    let vms = watcher(env.vms(&ns), watcher::Config::default()).applied_objects();
    tokio::spawn(async move {
        let mut quotas = std::pin::pin!(quotas);
        let mut vms = std::pin::pin!(vms);
        let mut placed = BTreeSet::new();
        loop {
            tokio::select! {
                Some(Ok(q)) = quotas.next() => {
                    if q.name_any() == quota
                        && let Some(u) = q.status.and_then(|s| s.used)
                    {
                        peaks.used.fetch_max(u.virtual_machines, Ordering::SeqCst);
                    }
                }
                Some(Ok(vm)) = vms.next() => {
                    if labelled(&vm) {
                        placed.insert(vm.name_any());
                    } else {
                        placed.remove(&vm.name_any());
                    }
                    peaks.labelled.fetch_max(placed.len(), Ordering::SeqCst);
                }
                else => return,
            }
        }
    })
}

fn labelled(vm: &VirtualMachine) -> bool {
    vm.labels().contains_key(labels::NODE)
}

fn scheduled(vm: &VirtualMachine) -> Option<(&str, &str)> {
    let c = vm
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Scheduled")?;
    Some((c.status.as_str(), c.reason.as_str()))
}

/// The round's outcome as the API shows it: (labelled, QuotaExceeded, Quota status.used).
async fn outcome(env: &Env, ns: &str, quota: &str) -> Option<(usize, usize, i64)> {
    let list = env.vms(ns).list(&ListParams::default()).await.ok()?;
    let admitted = list
        .items
        .iter()
        .filter(|vm| labelled(vm) && scheduled(vm) == Some(("True", "Scheduled")))
        .count();
    let waiting = list
        .items
        .iter()
        .filter(|vm| !labelled(vm) && scheduled(vm) == Some(("False", "QuotaExceeded")))
        .count();
    let used = env.quotas().get(quota).await.ok()?.status?.used?;
    Some((admitted, waiting, used.virtual_machines))
}

/// What every VM of `ns` says, for a failure message.
async fn describe(env: &Env, ns: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for vm in env
        .vms(ns)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let key = format!(
            "label={:?} scheduled={:?}",
            vm.labels().get(labels::NODE),
            scheduled(&vm)
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

/// Creates the round's tenant, namespace and quota, then 100 VMs at once; `mid` runs after
/// half of them have been created. Returns once exactly 50 are admitted (label and
/// Scheduled=True), 50 wait with QuotaExceeded and the Quota reports 50 used; fails if that
/// does not settle within `SETTLE` or if more than 50 were ever admitted or counted.
async fn round<F, Fut>(env: &Env, i: usize, mid: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let ns = format!("race-{i}");
    let tenant = format!("tenant-{i}");
    let quota = format!("quota-{i}");
    env.tenant(&tenant, &[&ns], None).await;
    env.quota(&quota, &tenant, json!({"virtualMachines": HARD}))
        .await;
    let peaks = Arc::new(Peaks::default());
    let watcher = watch_peaks(env, quota.clone(), ns.clone(), peaks.clone());
    let api = env.vms(&ns);
    let create = |j: usize| {
        let api = api.clone();
        let vm = vm_object(&ns, &format!("vm-{j:03}"), 1, "64Mi", json!({}));
        async move {
            api.create(&PostParams::default(), &vm)
                .await
                .expect("VM created");
        }
    };
    let t0 = Instant::now();
    let first: Vec<_> = (0..VMS / 2).map(create).collect();
    futures::stream::iter(first)
        .buffer_unordered(VMS / 2)
        .collect::<Vec<()>>()
        .await;
    let second: Vec<_> = (VMS / 2..VMS).map(create).collect();
    let (_, ()) = tokio::join!(
        futures::stream::iter(second)
            .buffer_unordered(VMS / 2)
            .collect::<Vec<()>>(),
        mid()
    );
    let created = t0.elapsed();
    let want = (VMS / 2, VMS / 2, HARD);
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut last = None;
    while last != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "round {i}: not settled after {SETTLE:?}: (admitted, waiting, used) = {last:?}; \
             VMs: {:#?}",
            describe(env, &ns).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = outcome(env, &ns, &quota).await;
    }
    eprintln!(
        "round {i}: created in {created:?}, settled in {:?}",
        t0.elapsed()
    );
    watcher.abort();
    let _ = watcher.await;
    assert!(
        peaks.used.load(Ordering::SeqCst) <= HARD,
        "round {i}: status.used peaked at {} > {HARD}",
        peaks.used.load(Ordering::SeqCst)
    );
    assert!(
        peaks.labelled.load(Ordering::SeqCst) <= VMS / 2,
        "round {i}: {} VMs were labelled at once",
        peaks.labelled.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_creates_against_a_quota_of_fifty_admit_exactly_fifty_every_round() {
    let env = Env::start().await;
    env.host("big", 4096, "4096Gi", json!({})).await;
    let beat = env.keep_alive(&["big"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < ROUNDS && started.elapsed() < BUDGET {
        round(&env, rounds, || async {}).await;
        rounds += 1;
    }
    eprintln!(
        "{rounds} rounds on one cluster took {:?}",
        started.elapsed()
    );
    assert!(rounds >= 5, "only {rounds} rounds fit in {BUDGET:?}");
    beat.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_holds_when_the_operator_is_killed_and_restarted_mid_burst() {
    let env = Env::start().await;
    env.host("big", 4096, "4096Gi", json!({})).await;
    let beat = env.keep_alive(&["big"]);
    let current = Arc::new(Mutex::new(Some(Operator::start(
        env.client.clone(),
        fast_config("op-0"),
    ))));
    // The kill lands at a different point of the burst each round: as the second half of
    // the creates starts, then while the operator is writing its decisions.
    for (i, delay_ms) in [0u64, 150, 400].into_iter().enumerate() {
        let slot = current.clone();
        let client = env.client.clone();
        round(&env, i, move || async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let mut slot = slot.lock().await;
            if let Some(op) = slot.take() {
                op.kill().await;
            }
            *slot = Some(Operator::start(
                client,
                fast_config(&format!("op-{}", i + 1)),
            ));
        })
        .await;
    }
    beat.abort();
    if let Some(op) = current.lock().await.take() {
        op.stop().await;
    }
    env.cluster.shutdown().await;
}
