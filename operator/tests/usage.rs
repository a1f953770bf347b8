//! Usage accounting end to end against the devcluster, with the operator's clock in the
//! test's hand: the agent's run records (written here as the agent would) are accrued into
//! the tenant's UsageReport exactly, across an operator killed mid-period, a halt while no
//! operator runs, a leadership hand-over and a deletion while no operator runs; the parent
//! tenant's report rolls the child up.

mod common;

use std::sync::Arc;

use common::{Env, Operator, eventually, eventually_within, fast_config};
use ironvisor_crds::UsageReport;
use ironvisor_crds::usage::{USAGE_FINALIZER, USAGE_NAMESPACE, UsageTotals};
use ironvisor_operator::run::RunConfig;
use ironvisor_operator::usage::ManualClock;
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const NS: &str = "dept-ns";

fn config(identity: &str, clock: &Arc<ManualClock>) -> RunConfig {
    RunConfig {
        usage_interval: std::time::Duration::from_millis(200),
        clock: clock.clone(),
        ..fast_config(identity)
    }
}

fn record(at: Timestamp, running: bool) -> serde_json::Value {
    json!({"at": at.to_string(), "running": running, "vcpus": 2, "memoryMiB": 1024,
           "storageMiB": 0, "node": "h1"})
}

/// Write the run log as the VM's agent does.
async fn run_log(env: &Env, log: &[serde_json::Value]) {
    env.vms(NS)
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"runLog": log}})),
        )
        .await
        .expect("run log written");
}

/// `tenant`'s own usage summed over its reports, and the latest accrued-through.
async fn own(env: &Env, tenant: &str) -> (UsageTotals, Option<Timestamp>) {
    let api: Api<UsageReport> = Api::namespaced(env.client.clone(), USAGE_NAMESPACE);
    let mut total = UsageTotals::default();
    let mut through = None;
    let items = api.list(&ListParams::default()).await.map(|l| l.items);
    for r in items.unwrap_or_default() {
        if r.spec.tenant != tenant {
            continue;
        }
        let s = r.status.unwrap_or_default();
        total.add(&s.own);
        through = through.max(s.accrued_through.map(|t| t.0));
    }
    (total, through)
}

async fn accrued_to(env: &Env, at: Timestamp) -> UsageTotals {
    eventually("the report is accrued to the clock", || async {
        own(env, "dept").await.1 == Some(at)
    })
    .await;
    own(env, "dept").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_across_restarts_failover_an_outage_halt_and_deletion() {
    let env = Env::start().await;
    env.tenant("org", &[], None).await;
    env.tenant("dept", &[NS], Some("org")).await;
    env.host("h1", 16, "64Gi", json!({})).await;
    let beat = env.keep_alive(&["h1"]);
    let t0 = Timestamp::from_second(Timestamp::now().as_second() - 3 * 3600).unwrap();
    let at = |secs: i64| t0 + SignedDuration::from_secs(secs);
    let clock = Arc::new(ManualClock::new(t0));
    // Prices take effect half an hour into the VM's life: the first half hour is free.
    let prices: ironvisor_crds::PriceList = serde_json::from_value(json!({
        "metadata": {"name": "default"},
        "spec": {"currency": "EUR", "rates": [{"effectiveFrom": at(1800).to_string(),
                 "vcpuHour": "0.04", "memoryGiBHour": "0.01", "storageGiBMonth": "0.1"}],
                 "budgets": [{"tenant": "org", "monthly": "1"}]}
    }))
    .unwrap();
    Api::<ironvisor_crds::PriceList>::all(env.client.clone())
        .create(&Default::default(), &prices)
        .await
        .expect("price list created");
    let op = Operator::start(env.client.clone(), config("op-1", &clock));
    env.vm(NS, "a", 2, "1Gi", json!({})).await;
    eventually(
        "the VM is placed and carries the usage finalizer",
        || async {
            let vm = env.vms(NS).get("a").await.ok();
            vm.is_some_and(|v| v.finalizers().iter().any(|f| f == USAGE_FINALIZER))
        },
    )
    .await;

    run_log(&env, &[record(t0, true)]).await;
    clock.set(at(3600));
    let u = accrued_to(&env, at(3600)).await;
    assert_eq!((u.running_seconds, u.vcpu_seconds), (3600, 7200));

    // Killed mid-period; the guest halts while no operator runs.
    op.kill().await;
    run_log(&env, &[record(t0, true), record(at(5400), false)]).await;
    clock.set(at(7200));
    let op = Operator::start(env.client.clone(), config("op-2", &clock));
    let u = accrued_to(&env, at(7200)).await;
    assert_eq!((u.running_seconds, u.reserved_seconds), (5400, 1800));
    assert_eq!(u.memory_mib_seconds, 1024 * 5400);
    // One priced hour of running: 2 vCPU-hours at 0.04 and 1 GiB-hour at 0.01.
    let api: Api<UsageReport> = Api::namespaced(env.client.clone(), USAGE_NAMESPACE);
    eventually(
        "the cost is priced from the rate's effective time",
        || async {
            let reports = api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let cost = |t: &str| {
                reports
                    .iter()
                    .filter(|r| r.spec.tenant == t)
                    .filter_map(|r| r.status.clone()?.cost)
                    .map(|c| (c.own, c.total, c.budget))
                    .collect::<Vec<_>>()
            };
            cost("dept") == [("0.09".into(), "0.09".into(), None)]
                && cost("org") == [("0.00".into(), "0.09".into(), Some("1.00".into()))]
        },
    )
    .await;

    // Leadership moves to a standby.
    let standby = Operator::start(env.client.clone(), config("op-3", &clock));
    op.stop().await;
    clock.set(at(9000));
    let u = accrued_to(&env, at(9000)).await;
    assert_eq!((u.running_seconds, u.reserved_seconds), (5400, 3600));

    // Deleted while no operator runs: accounted up to the deletion request.
    standby.kill().await;
    env.vms(NS)
        .delete("a", &DeleteParams::default())
        .await
        .expect("VM deleted");
    let deleted_at = env.vms(NS).get("a").await.expect("held by the finalizer");
    let deleted_at = deleted_at.metadata.deletion_timestamp.expect("deleting").0;
    let later = Timestamp::from_second(Timestamp::now().as_second() + 600).unwrap();
    clock.set(later);
    let op = Operator::start(env.client.clone(), config("op-4", &clock));
    eventually_within("the VM is gone", common::WAIT * 2, || async {
        env.vms(NS).get_opt("a").await.ok().flatten().is_none()
    })
    .await;
    let u = accrued_to(&env, later).await;
    let halted = deleted_at.as_second() - at(5400).as_second();
    assert_eq!((u.running_seconds, u.reserved_seconds), (5400, halted));

    // The parent sees the child's usage in its total.
    eventually("org's total rolls dept up", || async {
        let reports = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let total = |t: &str| {
            let mut sum = UsageTotals::default();
            for r in reports.iter().filter(|r| r.spec.tenant == t) {
                sum.add(&r.status.clone().unwrap_or_default().total);
            }
            sum
        };
        total("org") == u && total("dept") == u
    })
    .await;
    op.stop().await;
    beat.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_reports_cannot_be_named_does_not_stop_the_others() {
    let env = Env::start().await;
    let long: ironvisor_crds::Tenant =
        serde_json::from_value(json!({"metadata": {"name": "l".repeat(250)}, "spec": {}})).unwrap();
    env.tenants()
        .create(&Default::default(), &long)
        .await
        .expect("tenant created");
    env.tenant("fine", &[], None).await;
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let op = Operator::start(env.client.clone(), config("op-names", &clock));
    let api: Api<UsageReport> = Api::namespaced(env.client.clone(), USAGE_NAMESPACE);
    eventually("the other tenant gets its report", || async {
        let items = api.list(&ListParams::default()).await.map(|l| l.items);
        items.is_ok_and(|i| i.iter().any(|r| r.spec.tenant == "fine"))
    })
    .await;
    eventually("the failure is counted", || async {
        let text = op.metrics.render().unwrap_or_default();
        text.lines().any(|l| {
            l.starts_with("ironvisor_reconcile_errors_total")
                && l.contains("controller=\"usage\"")
                && l.contains("category=\"invalid_spec\"")
                && !l.ends_with(" 0")
        })
    })
    .await;
    op.stop().await;
}
