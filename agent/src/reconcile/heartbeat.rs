//! The host's heartbeat: the Lease `ironvisor-agent-<node>` in `ironvisor-system`, renewed
//! every 10 s, and the status of the Hypervisor named after the node, with the host's health
//! checked anew each time (a timed capability probe, /dev/kvm, the directories) and the
//! host's real load over the last period ([`crate::load`]) in the same write, so measuring
//! the load adds no writes.

use super::guard::VmObject;
use crate::health::{Monitor, Report};
use crate::host::{HostFacts, add_health, allocated, hypervisor_status};
use crate::hypervisor::Hypervisor as _;
use crate::load::{DomainSample, HostSize, Sample, host_load, pressure};
use crate::metrics::{Health, Metrics};
use ironvisor_crds::hypervisor::{Acceleration, Hypervisor};
use ironvisor_crds::labels::{HEARTBEAT_LEASE_PREFIX, SYSTEM_NAMESPACE, agent_manager};
use ironvisor_crds::load::HostLoad;
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;

/// How often the Lease is renewed and the Hypervisor status written.
pub const PERIOD: Duration = Duration::from_secs(10);
/// How long the Lease holds without renewal.
pub const LEASE_SECONDS: i32 = 40;

/// What the heartbeat reports.
pub struct Heartbeat {
    /// API client.
    pub client: Client,
    /// This node.
    pub node: String,
    /// Host facts, read at startup.
    pub facts: HostFacts,
    /// Acceleration in use.
    pub accel: Acceleration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Renewal period ([`PERIOD`] in production).
    pub period: Duration,
    /// This host's public seed key (base64), published in the Hypervisor status.
    pub seed_key: String,
    /// The host health checks.
    pub monitor: Monitor,
    /// The libvirt connection, for the capability probe.
    pub libvirt: crate::hypervisor::libvirt::Libvirt,
    /// Whether libvirt is connected (kept by the connection watch).
    pub health: Arc<Health>,
    /// The previous reading of the domains' counters (the load is the change since).
    pub last_sample: Option<Sample>,
}

impl Heartbeat {
    /// Renew the Lease once.
    pub async fn renew_lease(&self) -> Result<(), kube::Error> {
        let name = format!("{HEARTBEAT_LEASE_PREFIX}{}", self.node);
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": MicroTime(jiff::Timestamp::now()),
            }
        });
        Api::<Lease>::namespaced(self.client.clone(), SYSTEM_NAMESPACE)
            .patch(
                &name,
                &PatchParams::apply(&agent_manager(&self.node)).force(),
                &Patch::Apply(&lease),
            )
            .await?;
        Ok(())
    }

    /// Probe libvirt and check the host; logs each change of a finding.
    pub async fn check_health(&mut self, previous: Option<&Report>) -> Report {
        let connected = self.health.libvirt_connected();
        if connected && let Some(took) = self.monitor.probe(&self.libvirt).await {
            self.metrics.observe_capability_probe(took);
        }
        let report = self.monitor.report(connected);
        self.metrics.observe_host_health(&report);
        if let Some(prev) = previous {
            for (name, before, now) in [
                ("KVMAvailable", &prev.kvm, &report.kvm),
                ("LibvirtHealthy", &prev.libvirt, &report.libvirt),
                ("StorageAccessible", &prev.storage, &report.storage),
            ] {
                if before.ok != now.ok || before.reason != now.reason {
                    if now.ok {
                        tracing::info!(
                            condition = name,
                            reason = now.reason,
                            "host health: {}",
                            now.message
                        );
                    } else {
                        tracing::warn!(
                            condition = name,
                            reason = now.reason,
                            "host health: {}",
                            now.message
                        );
                    }
                }
            }
        }
        report
    }

    /// Read the counters of the domains this agent owns and return the load since the
    /// previous reading (`None` the first time, or when libvirt does not answer).
    pub async fn sample_load(&mut self) -> Option<HostLoad> {
        let owned = match self.libvirt.list_owned().await {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "listing domains for the load failed");
                return None;
            }
        };
        let usage = match self.libvirt.domain_usage().await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "reading domain statistics failed");
                return None;
            }
        };
        let mut domains = std::collections::BTreeMap::new();
        for u in usage {
            let Some(owner) = owned
                .iter()
                .find(|o| o.name == u.name)
                .and_then(|o| o.owner())
                .filter(|m| m.node.as_deref().is_none_or(|n| n == self.node))
            else {
                continue;
            };
            domains.insert(
                u.name,
                DomainSample {
                    namespace: owner.namespace.clone(),
                    name: owner.name.clone(),
                    cpu_time_ns: u.cpu_time_ns.unwrap_or(0),
                    memory_bytes: u.memory_bytes.unwrap_or(0),
                },
            );
        }
        let now = Sample {
            at: std::time::Instant::now(),
            domains,
        };
        let size = HostSize {
            cpus: self.facts.cpus,
            memory_bytes: u64::try_from(self.facts.memory_bytes).unwrap_or(0),
        };
        let load = self
            .last_sample
            .as_ref()
            .and_then(|prev| host_load(prev, &now, size, Time(jiff::Timestamp::now()), pressure()));
        self.last_sample = Some(now);
        load
    }

    /// Create the Hypervisor object if missing and write its status.
    pub async fn report(
        &self,
        vms: &[Arc<VirtualMachine>],
        health: &Report,
        load: Option<HostLoad>,
    ) -> Result<(), kube::Error> {
        let api = Api::<Hypervisor>::all(self.client.clone());
        let hv = match api.get_opt(&self.node).await? {
            Some(hv) => hv,
            None => {
                let new = Hypervisor::new(&self.node, Default::default());
                match api.create(&PostParams::default(), &new).await {
                    Ok(hv) => hv,
                    Err(kube::Error::Api(e)) if e.code == 409 => api.get(&self.node).await?,
                    Err(e) => return Err(e),
                }
            }
        };
        // Only VMs the operator placed here count: the label that brought a VM into the
        // watch may have been set by anyone.
        let live: Vec<&VirtualMachine> = vms
            .iter()
            .map(|v| v.as_ref())
            .filter(|v| v.metadata.deletion_timestamp.is_none())
            .filter(|v| {
                v.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.node.as_str())
            })
            .collect();
        let (used, count) = allocated(live.iter().copied());
        let previous = hv
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        let mut status = hypervisor_status(
            &self.facts,
            self.accel,
            &hv.spec,
            hv.metadata.generation,
            (used, count),
            now.clone(),
            &previous,
        );
        add_health(&mut status, health, &now);
        status.seed_key = Some(self.seed_key.clone());
        status.tpm = self.monitor.caps().map(|c| c.tpm_emulator);
        status.load = load;
        if let (Some(cap), Some(alloc)) = (&status.capacity, &status.allocatable) {
            let bytes = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
                ironvisor_crds::quantity::to_bytes(&q.0).unwrap_or(0)
            };
            self.metrics
                .observe_host("capacity", cap.vcpus, bytes(&cap.memory));
            self.metrics
                .observe_host("allocatable", alloc.vcpus, bytes(&alloc.memory));
            self.metrics
                .observe_host("allocated", used.vcpus, used.memory);
        }
        self.metrics.observe_vm_count(count);
        let patch = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "Hypervisor",
            "status": status,
        });
        api.patch_status(
            &self.node,
            &PatchParams::apply(&agent_manager(&self.node)).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Renew and report every `period` until the task is aborted; `first` is the report of
    /// the check at start.
    pub async fn run(mut self, store: Store<VmObject>, first: Report) {
        let mut tick = tokio::time::interval(self.period);
        let mut last = first;
        let mut fresh = true;
        loop {
            tick.tick().await;
            if !fresh {
                last = self.check_health(Some(&last)).await;
            }
            fresh = false;
            if let Err(e) = self.renew_lease().await {
                tracing::warn!(error = %e, "renewing the heartbeat lease failed");
            }
            let load = self.sample_load().await;
            if let Err(e) = self
                .report(&super::controller::cached_vms(&store), &last, load)
                .await
            {
                tracing::warn!(error = %e, "writing the Hypervisor status failed");
            }
        }
    }
}
