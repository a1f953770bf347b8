//! The utilization sampler: what this host's guests actually use, for right-sizing.
//!
//! Every sample period it reads each running guest's CPU time, balloon memory figures and
//! disks' block allocation from libvirt ([`Hypervisor::stats`]), aggregates them into
//! buckets ([`window`]) and, when a bucket closes, appends it to the VM's
//! `status.utilization` with its own field manager (so the VM controller's status writes
//! never remove it). One write per VM per bucket (an hour by default) keeps the API quiet;
//! the samples in between stay in memory. It writes only VMs placed on this node, as the
//! status admission policy demands, and never anything but `status.utilization`.

pub mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ironvisor_crds::VirtualMachine;
use ironvisor_crds::utilization::UtilizationBucket;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::hypervisor::{HvError, Hypervisor};
use window::{Settings, Windows};

/// What the sampler needs.
pub struct Sampler {
    /// API client.
    pub client: Client,
    /// This host.
    pub node: String,
    /// The hypervisor.
    pub hv: Arc<dyn Hypervisor>,
    /// How often guests are sampled.
    pub every: Duration,
    /// How samples become buckets.
    pub settings: Settings,
}

/// Why a bucket could not be written (it is dropped: the next one is written anyway).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API refused or failed a call.
    #[error("writing the utilization of {0}")]
    Api(String, #[source] kube::Error),
    /// The hypervisor failed.
    #[error(transparent)]
    Hypervisor(#[from] HvError),
}

/// The field manager of the sampler's writes on `node`.
pub fn field_manager(node: &str) -> String {
    format!("ironvisor-agent-utilization/{node}")
}

/// A running guest of this host: (uid, namespace, name, domain name).
struct Guest {
    uid: String,
    namespace: String,
    name: String,
    domain: String,
}

impl Sampler {
    /// Sample for ever.
    pub async fn run(self) {
        let mut windows = Windows::new(self.settings);
        let mut names: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.pass(&mut windows, &mut names).await {
                tracing::warn!(error = %e, "sampling the guests' utilization failed; retried next period");
            }
        }
    }

    async fn guests(&self) -> Result<Vec<Guest>, HvError> {
        let owned = self.hv.list_owned().await?;
        Ok(owned
            .into_iter()
            .filter(|o| o.state.is_up())
            .filter_map(|o| {
                let m = o.owner()?;
                if m.node.as_deref().is_some_and(|n| n != self.node) {
                    return None;
                }
                Some(Guest {
                    uid: m.uid.clone(),
                    namespace: m.namespace.clone(),
                    name: m.name.clone(),
                    domain: o.name.clone(),
                })
            })
            .collect())
    }

    /// One sample of every running guest; closed buckets written.
    async fn pass(
        &self,
        windows: &mut Windows,
        names: &mut BTreeMap<String, (String, String)>,
    ) -> Result<(), WriteError> {
        let guests = self.guests().await?;
        let mut closed: Vec<(String, UtilizationBucket)> = Vec::new();
        let mut running = BTreeSet::new();
        for g in &guests {
            // A guest that stopped between the list and now is sampled next time, if ever.
            let Ok(stats) = self.hv.stats(&g.domain).await else {
                continue;
            };
            let at_ms = jiff::Timestamp::now().as_millisecond();
            running.insert(g.uid.clone());
            names.insert(g.uid.clone(), (g.namespace.clone(), g.name.clone()));
            if let Some(b) = windows.observe(&g.uid, at_ms, &stats) {
                closed.push((g.uid.clone(), b));
            }
        }
        closed.extend(windows.forget_others(&running));
        for (uid, bucket) in closed {
            let Some((ns, name)) = names.get(&uid).cloned() else {
                continue;
            };
            if let Err(e) = self.write(&ns, &name, &uid, bucket).await {
                tracing::warn!(vm = %format!("{ns}/{name}"), error = %e, "a utilization bucket was not written");
            }
        }
        names.retain(|uid, _| running.contains(uid));
        Ok(())
    }

    /// Append `bucket` to the VM's `status.utilization`, if it is still the VM with `uid`
    /// placed on this node.
    async fn write(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        bucket: UtilizationBucket,
    ) -> Result<(), WriteError> {
        let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), ns);
        let err = |e| WriteError::Api(format!("{ns}/{name}"), e);
        let Some(vm) = api.get_opt(name).await.map_err(err)? else {
            return Ok(());
        };
        let status = vm.status.as_ref();
        let here = status.and_then(|s| s.node_name.as_deref()) == Some(self.node.as_str());
        if vm.uid().as_deref() != Some(uid) || !here {
            return Ok(());
        }
        let prev = status.and_then(|s| s.utilization.as_ref());
        let next = window::append(prev, bucket, &self.settings);
        let patch = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "status": {"utilization": next},
        });
        let params = PatchParams::apply(&field_manager(&self.node)).force();
        api.patch_status(name, &params, &Patch::Apply(&patch))
            .await
            .map_err(err)?;
        Ok(())
    }
}
