//! The admission and placement loop: watches feed the index, one pass decides, the writes go
//! out in decision order — only while this replica leads.
//!
//! Owns serialization of decisions. There is exactly one loop; each decision is one status
//! write (`nodeName`, `admitted`, Scheduled) recorded in the index as an assumption before the
//! next write, and a pass only starts once every watch has listed, so a decision always counts
//! every earlier one: the live ones from the API, the unconfirmed ones from the assumptions.
//! After a restart or a leader change the statuses are the whole truth. The node label is
//! copied from them afterwards, for the agents' watch selectors only.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use ironvisor_crds::backup::{BackupLocation, VirtualMachineBackup};
use ironvisor_crds::labels;
use ironvisor_crds::{
    Hypervisor, Quota, Tenant, VirtualMachine, VirtualMachineMigration, VirtualMachineSnapshot,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::Recorder;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch as tokio_watch;

use super::{patches, quota_status};
use crate::error::Category;
use crate::index::{Index, VmKey};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::plan::{self, Config, HostWrite, Plan};
use crate::units::{Resource as QuotaResource, Units};

const CONTROLLER: &str = "scheduler";

mod writes;

/// Errors of one write.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The replica stopped leading before the write.
    #[error("not the leader")]
    NotLeader,
    /// The API refused or failed the write.
    #[error("write to the API failed")]
    Api(#[from] kube::Error),
}

impl WriteError {
    /// Metric category.
    pub fn category(&self) -> Category {
        match self {
            WriteError::NotLeader => Category::NotLeader,
            WriteError::Api(e) => Category::of_kube(e),
        }
    }
}

/// What the loop needs.
pub struct Scheduler {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Gate on every write.
    pub leadership: Leadership,
    /// Decision settings.
    pub config: Config,
    /// Full pass (and status rewrite) at least this often.
    pub resync: Duration,
    /// Events.
    pub recorder: Recorder,
    /// Tenant usage after each pass, for the tenant controller.
    pub usage: tokio_watch::Sender<BTreeMap<String, Units>>,
}

#[allow(clippy::large_enum_variant)] // one event in flight at a time; boxing buys nothing
enum Change {
    Vm(Event<VirtualMachine>),
    Hv(Event<Hypervisor>),
    Lease(Event<Lease>),
    Tenant(Event<Tenant>),
    Quota(Event<Quota>),
    Snapshot(Event<VirtualMachineSnapshot>),
    Migration(Event<VirtualMachineMigration>),
    Backup(Event<VirtualMachineBackup>),
    Location(Event<BackupLocation>),
}

type Changes = Pin<Box<dyn Stream<Item = (usize, Result<Change, watcher::Error>)> + Send>>;

fn watch_kind<K, F>(api: Api<K>, cfg: watcher::Config, slot: usize, wrap: F) -> Changes
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    F: Fn(Event<K>) -> Change + Send + 'static,
{
    watcher::watcher(api, cfg)
        .default_backoff()
        .map(move |r| (slot, r.map(&wrap)))
        .boxed()
}

/// State kept between passes besides the index.
#[derive(Default)]
struct Loop {
    index: Index,
    synced: [bool; 9],
    /// Objects buffered during a relist, per kind.
    init: InitBuffers,
    quotas: BTreeMap<String, Quota>,
    /// Quota status last written, by quota name (skip identical writes).
    written_quota: BTreeMap<String, serde_json::Value>,
}

#[derive(Default)]
struct InitBuffers {
    vms: Vec<VirtualMachine>,
    hvs: Vec<Hypervisor>,
    leases: Vec<Lease>,
    tenants: Vec<Tenant>,
    quotas: Vec<Quota>,
    snapshots: Vec<VirtualMachineSnapshot>,
    migrations: Vec<VirtualMachineMigration>,
    backups: Vec<VirtualMachineBackup>,
    locations: Vec<BackupLocation>,
}

fn heartbeat_node(lease: &Lease) -> Option<String> {
    lease
        .name_any()
        .strip_prefix(labels::HEARTBEAT_LEASE_PREFIX)
        .map(str::to_owned)
}

fn apply_lease(index: &mut Index, lease: &Lease, now: jiff::Timestamp) {
    if let Some(node) = heartbeat_node(lease) {
        let renew = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        index.apply_heartbeat(&node, renew, now);
    }
}

impl Loop {
    fn apply(&mut self, change: Change) {
        let now = jiff::Timestamp::now();
        let ix = &mut self.index;
        match change {
            Change::Vm(Event::InitApply(o)) => self.init.vms.push(o),
            Change::Vm(Event::Apply(o)) => ix.apply_vm(&o),
            Change::Vm(Event::Delete(o)) => ix.delete_vm(&VmKey {
                namespace: o.namespace().unwrap_or_default(),
                name: o.name_any(),
            }),
            Change::Vm(Event::Init) => self.init.vms.clear(),
            Change::Vm(Event::InitDone) => ix.reset_vms(std::mem::take(&mut self.init.vms).iter()),
            Change::Hv(Event::Apply(o)) => ix.apply_hypervisor(&o, now),
            Change::Hv(Event::InitApply(o)) => self.init.hvs.push(o),
            Change::Hv(Event::Delete(o)) => ix.delete_hypervisor(&o.name_any()),
            Change::Hv(Event::Init) => self.init.hvs.clear(),
            Change::Hv(Event::InitDone) => {
                ix.reset_hypervisors(std::mem::take(&mut self.init.hvs).iter(), now)
            }
            Change::Lease(Event::Apply(o)) => apply_lease(ix, &o, now),
            Change::Lease(Event::InitApply(o)) => self.init.leases.push(o),
            Change::Lease(Event::Delete(_)) => {}
            Change::Lease(Event::Init) => self.init.leases.clear(),
            Change::Lease(Event::InitDone) => {
                for l in std::mem::take(&mut self.init.leases) {
                    apply_lease(ix, &l, now);
                }
            }
            Change::Tenant(Event::Apply(o)) => ix.apply_tenant(&o),
            Change::Tenant(Event::InitApply(o)) => self.init.tenants.push(o),
            Change::Tenant(Event::Delete(o)) => ix.delete_tenant(&o.name_any()),
            Change::Tenant(Event::Init) => self.init.tenants.clear(),
            Change::Tenant(Event::InitDone) => {
                ix.reset_tenants(std::mem::take(&mut self.init.tenants).iter())
            }
            Change::Quota(Event::Apply(o)) => {
                ix.apply_quota(&o);
                self.quotas.insert(o.name_any(), o);
            }
            Change::Quota(Event::InitApply(o)) => self.init.quotas.push(o),
            Change::Quota(Event::Delete(o)) => {
                ix.delete_quota(&o.name_any());
                self.quotas.remove(&o.name_any());
            }
            Change::Quota(Event::Init) => self.init.quotas.clear(),
            Change::Snapshot(Event::Apply(o)) => ix.apply_snapshot(&o),
            Change::Snapshot(Event::InitApply(o)) => self.init.snapshots.push(o),
            Change::Snapshot(Event::Delete(o)) => ix.delete_snapshot(&o),
            Change::Snapshot(Event::Init) => self.init.snapshots.clear(),
            Change::Snapshot(Event::InitDone) => {
                ix.reset_snapshots(std::mem::take(&mut self.init.snapshots).iter())
            }
            Change::Quota(Event::InitDone) => {
                let qs = std::mem::take(&mut self.init.quotas);
                ix.reset_quotas(qs.iter());
                self.quotas = qs.into_iter().map(|q| (q.name_any(), q)).collect();
            }
            Change::Migration(Event::Apply(o)) => ix.apply_migration(&o),
            Change::Migration(Event::InitApply(o)) => self.init.migrations.push(o),
            Change::Migration(Event::Delete(o)) => ix.delete_migration(&o),
            Change::Migration(Event::Init) => self.init.migrations.clear(),
            Change::Migration(Event::InitDone) => {
                ix.reset_migrations(std::mem::take(&mut self.init.migrations).iter())
            }
            Change::Backup(Event::Apply(o)) => ix.apply_backup(&o),
            Change::Backup(Event::InitApply(o)) => self.init.backups.push(o),
            Change::Backup(Event::Delete(o)) => ix.delete_backup(&o),
            Change::Backup(Event::Init) => self.init.backups.clear(),
            Change::Backup(Event::InitDone) => {
                ix.reset_backups(std::mem::take(&mut self.init.backups).iter())
            }
            Change::Location(Event::Apply(o)) => ix.apply_location(&o),
            Change::Location(Event::InitApply(o)) => self.init.locations.push(o),
            Change::Location(Event::Delete(o)) => ix.delete_location(&o.name_any()),
            Change::Location(Event::Init) => self.init.locations.clear(),
            Change::Location(Event::InitDone) => {
                ix.reset_locations(std::mem::take(&mut self.init.locations).iter())
            }
        }
    }
}

impl Scheduler {
    /// Run until the process ends. Passes run only while leading.
    pub async fn run(self) {
        let c = self.client.clone();
        let mut changes = futures::stream::select_all([
            watch_kind(
                Api::<VirtualMachine>::all(c.clone()),
                watcher::Config::default(),
                0,
                Change::Vm,
            ),
            watch_kind(
                Api::<Hypervisor>::all(c.clone()),
                watcher::Config::default(),
                1,
                Change::Hv,
            ),
            watch_kind(
                Api::<Lease>::namespaced(c.clone(), labels::SYSTEM_NAMESPACE),
                watcher::Config::default(),
                2,
                Change::Lease,
            ),
            watch_kind(
                Api::<Tenant>::all(c.clone()),
                watcher::Config::default(),
                3,
                Change::Tenant,
            ),
            watch_kind(
                Api::<Quota>::all(c.clone()),
                watcher::Config::default(),
                4,
                Change::Quota,
            ),
            // Where clones of each snapshot go.
            watch_kind(
                Api::<VirtualMachineSnapshot>::all(c.clone()),
                watcher::Config::default(),
                5,
                Change::Snapshot,
            ),
            // Live migrations reserve room on their targets during the copy.
            watch_kind(
                Api::<VirtualMachineMigration>::all(c.clone()),
                watcher::Config::default(),
                6,
                Change::Migration,
            ),
            // A VM restored from a backup goes only where the backup's location is mounted.
            watch_kind(
                Api::<VirtualMachineBackup>::all(c.clone()),
                watcher::Config::default(),
                7,
                Change::Backup,
            ),
            watch_kind(
                Api::<BackupLocation>::all(c.clone()),
                watcher::Config::default(),
                8,
                Change::Location,
            ),
        ]);
        let mut st = Loop::default();
        let mut tick = tokio::time::interval(self.resync.min(Duration::from_secs(5)));
        let mut last_full = tokio::time::Instant::now();
        let mut was_leader = false;
        loop {
            tokio::select! {
                next = changes.next() => match next {
                    Some((slot, Ok(ch))) => self.take(&mut st, slot, ch),
                    Some((_, Err(e))) => {
                        tracing::warn!(error = %e, "watch failed; it retries");
                        self.metrics.error(CONTROLLER, Category::Api);
                    }
                    None => return,
                },
                _ = tick.tick() => {}
            }
            // Batch whatever else is ready, then decide once.
            while let Some(Some((slot, r))) = changes.next().now_or_never() {
                match r {
                    Ok(ch) => self.take(&mut st, slot, ch),
                    Err(_) => self.metrics.error(CONTROLLER, Category::Api),
                }
            }
            let leading = self.leadership.is_leader();
            self.metrics.leader.set(i64::from(leading));
            if !leading || !st.synced.iter().all(|s| *s) {
                if !leading {
                    self.metrics.clear_cluster_figures();
                }
                was_leader = false;
                continue;
            }
            if !was_leader || last_full.elapsed() >= self.resync {
                // New leadership or resync: rewrite every status that differs from the API,
                // and settle writes the watch has not confirmed.
                st.written_quota.clear();
                last_full = tokio::time::Instant::now();
                self.settle_all(&mut st.index).await;
            }
            was_leader = true;
            self.pass(&mut st).await;
        }
    }

    fn take(&self, st: &mut Loop, slot: usize, ch: Change) {
        let done = matches!(
            ch,
            Change::Vm(Event::InitDone)
                | Change::Hv(Event::InitDone)
                | Change::Lease(Event::InitDone)
                | Change::Tenant(Event::InitDone)
                | Change::Quota(Event::InitDone)
                | Change::Snapshot(Event::InitDone)
                | Change::Migration(Event::InitDone)
                | Change::Backup(Event::InitDone)
                | Change::Location(Event::InitDone)
        );
        st.apply(ch);
        if done {
            st.synced[slot] = true;
        }
    }

    async fn pass(&self, st: &mut Loop) {
        let _timer = self.metrics.timer(CONTROLLER);
        let now = jiff::Timestamp::now();
        let plan = plan::plan(&st.index, self.config.clone(), now);
        for reason in crate::metrics::PENDING_REASONS
            .into_iter()
            .chain(plan::network::REASONS)
        {
            let n = plan.pending.get(reason).copied().unwrap_or(0);
            self.metrics
                .pending
                .with_label_values(&[reason])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.metrics.set_hosts_ready(
            plan.hosts_ready
                .iter()
                .map(|(h, ready)| (h.as_str(), *ready)),
        );
        self.metrics.set_vm_phases(st.index.vms().map(|v| v.phase));
        for hw in &plan.hosts {
            if let Err(e) = self.write_host(hw, now).await {
                tracing::warn!(error = %e, ?hw, "host status write failed");
                self.metrics.error(CONTROLLER, e.category());
            }
        }
        let mut failed = BTreeSet::new();
        for w in &plan.vms {
            match self.write_vm(&mut st.index, w).await {
                Ok(()) => {}
                Err(WriteError::NotLeader) => return,
                Err(e) => {
                    tracing::warn!(error = %e, vm = %w.key, "VM write failed");
                    self.metrics.error(CONTROLLER, e.category());
                    failed.insert(&w.key);
                }
            }
        }
        // Label copies only after the statuses they copy; never one whose status write failed.
        for w in plan.labels.iter().filter(|w| !failed.contains(&w.key)) {
            match self.write_label(&mut st.index, w).await {
                Ok(()) => {}
                Err(WriteError::NotLeader) => return,
                Err(e) => {
                    tracing::warn!(error = %e, vm = %w.key, "VM label write failed");
                    self.metrics.error(CONTROLLER, e.category());
                }
            }
        }
        self.publish_usage(st, &plan, now).await;
    }

    async fn write_host(&self, hw: &HostWrite, now: jiff::Timestamp) -> Result<(), WriteError> {
        if !self.leadership.is_leader() {
            return Err(WriteError::NotLeader);
        }
        let api: Api<Hypervisor> = Api::all(self.client.clone());
        let pp = PatchParams::apply(labels::OPERATOR_MANAGER).force();
        let (name, body) = match hw {
            HostWrite::Lost { host } => (
                host,
                patches::hypervisor_lost(host, now, self.config.host_grace.as_secs()),
            ),
            HostWrite::Returned { host } => (host, patches::hypervisor_released(host)),
        };
        api.patch_status(name, &pp, &Patch::Apply(body)).await?;
        Ok(())
    }

    /// Quota statuses, quota metrics, and tenant usage for the tenant controller.
    async fn publish_usage(&self, st: &mut Loop, plan: &Plan, now: jiff::Timestamp) {
        let ledger = &plan.ledger;
        self.metrics.quota_hard.reset();
        self.metrics.quota_used.reset();
        let api: Api<Quota> = Api::all(self.client.clone());
        let pp = PatchParams::apply(labels::OPERATOR_MANAGER).force();
        for (name, q) in &st.quotas {
            let status = quota_status::desired(q, ledger, now);
            let used = ledger.used(&q.spec.tenant);
            if let Ok(limits) = crate::units::Limits::parse(&q.spec.hard) {
                for r in QuotaResource::ALL {
                    let labels = [q.spec.tenant.as_str(), name.as_str(), r.as_str()];
                    if let Some(h) = limits.get(r) {
                        self.metrics
                            .quota_hard
                            .with_label_values(&labels)
                            .set(i64::try_from(h).unwrap_or(i64::MAX));
                    }
                    self.metrics
                        .quota_used
                        .with_label_values(&labels)
                        .set(i64::try_from(used.get(r)).unwrap_or(i64::MAX));
                }
            }
            // Compare without timestamps: a condition's time only moves when its status flips.
            let mut key = serde_json::to_value(&status).unwrap_or_default();
            strip_times(&mut key);
            if st.written_quota.get(name) == Some(&key) {
                continue;
            }
            if !self.leadership.is_leader() {
                return;
            }
            let body = serde_json::json!({
                "apiVersion": "ironvisor.io/v1alpha1", "kind": "Quota",
                "metadata": {"name": name}, "status": status,
            });
            match api.patch_status(name, &pp, &Patch::Apply(body)).await {
                Ok(_) => {
                    st.written_quota.insert(name.clone(), key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, quota = %name, "quota status write failed");
                    self.metrics.error(CONTROLLER, Category::of_kube(&e));
                }
            }
        }
        let mut usage: BTreeMap<String, Units> = BTreeMap::new();
        for t in st.index.tenant_names() {
            usage.insert(t.clone(), ledger.used(&t));
        }
        self.usage.send_if_modified(|old| {
            if *old == usage {
                false
            } else {
                *old = usage;
                true
            }
        });
    }
}

fn strip_times(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("lastTransitionTime");
            m.values_mut().for_each(strip_times);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_times),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str) -> VirtualMachine {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"memory": {"size": "1Gi"}},
        }))
        .expect("valid VM")
    }

    fn lease(name: &str, renew: &str) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ironvisor-system"},
            "spec": {"renewTime": renew},
        }))
        .expect("valid Lease")
    }

    fn quota(name: &str) -> Quota {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "Quota",
            "metadata": {"name": name},
            "spec": {"tenant": "t", "hard": {"vcpus": 4}},
        }))
        .expect("valid Quota")
    }

    fn names(st: &Loop) -> Vec<String> {
        st.index.vms().map(|v| v.key.name.clone()).collect()
    }

    #[test]
    fn a_relist_is_buffered_until_done_then_replaces_the_vms() {
        let mut st = Loop::default();
        for ev in [
            Event::Init,
            Event::InitApply(vm("a")),
            Event::InitApply(vm("b")),
        ] {
            st.apply(Change::Vm(ev));
        }
        assert!(names(&st).is_empty(), "nothing before InitDone");
        st.apply(Change::Vm(Event::InitDone));
        assert_eq!(names(&st), vec!["a", "b"]);
        st.apply(Change::Vm(Event::Apply(vm("c"))));
        st.apply(Change::Vm(Event::Delete(vm("a"))));
        assert_eq!(names(&st), vec!["b", "c"]);
        for ev in [Event::Init, Event::InitApply(vm("c")), Event::InitDone] {
            st.apply(Change::Vm(ev));
        }
        assert_eq!(
            names(&st),
            vec!["c"],
            "a relist drops what it no longer lists"
        );
    }

    #[test]
    fn only_heartbeat_leases_become_hosts() {
        let mut st = Loop::default();
        st.apply(Change::Lease(Event::Apply(lease(
            "ironvisor-agent-h1",
            "2026-01-01T00:00:00.000000Z",
        ))));
        st.apply(Change::Lease(Event::Apply(lease(
            "ironvisor-operator",
            "2026-01-01T00:00:00.000000Z",
        ))));
        assert_eq!(st.index.hosts().keys().collect::<Vec<_>>(), vec!["h1"]);
        assert!(st.index.hosts()["h1"].heartbeat.is_some());
    }

    #[test]
    fn quotas_are_kept_for_status_and_parsed_for_decisions() {
        let mut st = Loop::default();
        for ev in [
            Event::Init,
            Event::InitApply(quota("q1")),
            Event::InitApply(quota("q2")),
            Event::InitDone,
        ] {
            st.apply(Change::Quota(ev));
        }
        st.apply(Change::Quota(Event::Delete(quota("q1"))));
        assert_eq!(st.quotas.keys().collect::<Vec<_>>(), vec!["q2"]);
    }

    #[test]
    fn condition_times_are_ignored_when_comparing_statuses() {
        let mut a = serde_json::json!({"conditions": [{"type": "Ready", "lastTransitionTime": "1"}], "x": 1});
        let mut b = serde_json::json!({"conditions": [{"type": "Ready", "lastTransitionTime": "2"}], "x": 1});
        strip_times(&mut a);
        strip_times(&mut b);
        assert_eq!(a, b);
    }
}
