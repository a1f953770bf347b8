//! The target's room: Tenants, Quotas and Hypervisors (from the cluster or from YAML files),
//! and a ledger that takes each planned VM from its tenant's quotas and from a host.
//!
//! The ledger is cumulative: migrated VMs stay, so wave 3 is checked against what waves 1
//! and 2 already took. Quotas apply to a tenant and all its descendants, as the operator
//! enforces them. A host's room is `allocatable − allocated` (allocatable already includes
//! overcommit and reservations); cordoned hosts get nothing. Pure, all arithmetic checked.

use std::collections::BTreeMap;

use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::{Hypervisor, Quota, Tenant};
use serde::{Deserialize, Serialize};

/// What a VM needs on the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Demand {
    /// vCPUs.
    pub vcpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Declared disk sizes in bytes (what quotas account).
    pub storage_bytes: u64,
}

/// The objects read, and where from.
#[derive(Clone, Debug, Default)]
pub struct TargetFacts {
    /// Tenants.
    pub tenants: Vec<Tenant>,
    /// Quotas.
    pub quotas: Vec<Quota>,
    /// Hypervisors.
    pub hypervisors: Vec<Hypervisor>,
    /// `cluster`, the files, or `none`.
    pub source: String,
}

/// Why a YAML file of objects is unusable.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// Not YAML.
    #[error("{file}: does not parse as YAML")]
    Yaml {
        /// The file.
        file: String,
        /// The cause.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// An object of a known kind with a bad shape.
    #[error("{file}: a {kind} does not match its schema")]
    Object {
        /// The file.
        file: String,
        /// Its kind.
        kind: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl TargetFacts {
    /// Add the Tenants, Quotas and Hypervisors of a multi-document YAML file (`kind: List`
    /// as `kubectl get -o yaml` writes it included); other kinds are skipped.
    pub fn add_yaml(&mut self, file: &str, text: &str) -> Result<(), FactsError> {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(text).map_err(|source| FactsError::Yaml {
                file: file.into(),
                source: Box::new(source),
            })?;
        let mut queue: Vec<serde_json::Value> = docs;
        while let Some(doc) = queue.pop() {
            let kind = doc
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            let bad = |kind: &str| {
                let file = file.to_string();
                let kind = kind.to_string();
                move |source| FactsError::Object { file, kind, source }
            };
            match kind.as_str() {
                "List" | "TenantList" | "QuotaList" | "HypervisorList" => {
                    if let Some(items) = doc.get("items").and_then(|i| i.as_array()) {
                        queue.extend(items.iter().cloned());
                    }
                }
                "Tenant" => self
                    .tenants
                    .push(serde_json::from_value(doc).map_err(bad(&kind))?),
                "Quota" => self
                    .quotas
                    .push(serde_json::from_value(doc).map_err(bad(&kind))?),
                "Hypervisor" => self
                    .hypervisors
                    .push(serde_json::from_value(doc).map_err(bad(&kind))?),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A resource that ran out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shortfall {
    /// The quota (or `hosts`).
    pub limit: String,
    /// virtualMachines, vcpus, memory or storage.
    pub resource: String,
    /// What the VM needs.
    pub needed: u64,
    /// What is left.
    pub left: u64,
}

#[derive(Clone, Debug)]
struct QuotaRoom {
    name: String,
    tenant: String,
    // virtualMachines, vcpus, memory, storage; None = unlimited.
    left: [Option<u64>; 4],
}

#[derive(Clone, Debug)]
struct HostRoom {
    name: String,
    vcpus: u64,
    memory: u64,
}

/// Cumulative room left in quotas and hosts.
#[derive(Clone, Debug)]
pub struct Ledger {
    parents: BTreeMap<String, String>,
    quotas: Vec<QuotaRoom>,
    hosts: Vec<HostRoom>,
    /// Whether any Hypervisor was given (otherwise hosts are not checked).
    pub hosts_known: bool,
}

const RESOURCES: [&str; 4] = ["virtualMachines", "vcpus", "memory", "storage"];

fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<u64> {
    q.and_then(|q| to_bytes(&q.0).ok())
        .map(|b| u64::try_from(b.max(0)).unwrap_or(u64::MAX))
}

fn quota_room(q: &Quota) -> QuotaRoom {
    let used = q.status.as_ref().and_then(|s| s.used.as_ref());
    let hard = &q.spec.hard;
    let hard: [Option<u64>; 4] = [
        hard.virtual_machines.map(|v| u64::try_from(v).unwrap_or(0)),
        hard.vcpus.map(|v| u64::try_from(v).unwrap_or(0)),
        bytes(hard.memory.as_ref()),
        bytes(hard.storage.as_ref()),
    ];
    let used: [u64; 4] = used.map_or([0; 4], |u| {
        [
            u64::try_from(u.virtual_machines).unwrap_or(0),
            u64::try_from(u.vcpus).unwrap_or(0),
            bytes(Some(&u.memory)).unwrap_or(0),
            bytes(Some(&u.storage)).unwrap_or(0),
        ]
    });
    let left: [Option<u64>; 4] =
        std::array::from_fn(|i| hard[i].map(|h| h.saturating_sub(used[i])));
    QuotaRoom {
        name: q.metadata.name.clone().unwrap_or_default(),
        tenant: q.spec.tenant.clone(),
        left,
    }
}

fn host_room(h: &Hypervisor) -> Option<HostRoom> {
    if h.spec.unschedulable {
        return None;
    }
    let status = h.status.as_ref()?;
    let alloc = status.allocatable.as_ref()?;
    let used = status.allocated.as_ref();
    Some(HostRoom {
        name: h.metadata.name.clone().unwrap_or_default(),
        vcpus: u64::from(alloc.vcpus).saturating_sub(used.map_or(0, |u| u64::from(u.vcpus))),
        memory: bytes(Some(&alloc.memory))
            .unwrap_or(0)
            .saturating_sub(used.and_then(|u| bytes(Some(&u.memory))).unwrap_or(0)),
    })
}

impl Ledger {
    /// Start from the facts.
    pub fn new(facts: &TargetFacts) -> Self {
        Self {
            parents: facts
                .tenants
                .iter()
                .filter_map(|t| Some((t.metadata.name.clone()?, t.spec.parent.clone()?)))
                .collect(),
            quotas: facts.quotas.iter().map(quota_room).collect(),
            hosts: facts.hypervisors.iter().filter_map(host_room).collect(),
            hosts_known: !facts.hypervisors.is_empty(),
        }
    }

    /// The tenant and its ancestors (a cycle or a chain deeper than 16 stops there).
    fn chain(&self, tenant: &str) -> Vec<String> {
        let mut chain = vec![tenant.to_string()];
        while chain.len() < 16 {
            match chain.last().and_then(|t| self.parents.get(t)) {
                Some(p) if !chain.contains(p) => chain.push(p.clone()),
                _ => break,
            }
        }
        chain
    }

    /// Take a VM's demand for a tenant: from every quota on its chain and from the host with
    /// the most free memory that fits. Nothing is taken unless everything fits.
    pub fn take(&mut self, tenant: Option<&str>, d: Demand) -> Result<Option<String>, Shortfall> {
        let need = [1, d.vcpus, d.memory_bytes, d.storage_bytes];
        let chain = tenant.map(|t| self.chain(t)).unwrap_or_default();
        let affected: Vec<usize> = (0..self.quotas.len())
            .filter(|i| chain.contains(&self.quotas[*i].tenant))
            .collect();
        for &i in &affected {
            let q = &self.quotas[i];
            for r in 0..4 {
                if let Some(left) = q.left[r]
                    && need[r] > left
                {
                    return Err(Shortfall {
                        limit: format!("Quota {} (tenant {})", q.name, q.tenant),
                        resource: RESOURCES[r].into(),
                        needed: need[r],
                        left,
                    });
                }
            }
        }
        let host = if self.hosts_known {
            let best = (0..self.hosts.len())
                .filter(|i| {
                    self.hosts[*i].vcpus >= d.vcpus && self.hosts[*i].memory >= d.memory_bytes
                })
                .max_by_key(|i| (self.hosts[*i].memory, std::cmp::Reverse(*i)));
            let Some(i) = best else {
                let most = self.hosts.iter().map(|h| h.memory).max().unwrap_or(0);
                return Err(Shortfall {
                    limit: "hosts".into(),
                    resource: "memory and vcpus on one host".into(),
                    needed: d.memory_bytes,
                    left: most,
                });
            };
            let h = &mut self.hosts[i];
            h.vcpus -= d.vcpus;
            h.memory -= d.memory_bytes;
            Some(h.name.clone())
        } else {
            None
        };
        for i in affected {
            for (left, n) in self.quotas[i].left.iter_mut().zip(need) {
                if let Some(left) = left.as_mut() {
                    *left -= n;
                }
            }
        }
        Ok(host)
    }

    /// The quotas' room left, for the report: (quota, tenant, resource, left).
    pub fn quota_left(&self) -> Vec<(String, String, String, u64)> {
        self.quotas
            .iter()
            .flat_map(|q| {
                (0..4).filter_map(move |r| {
                    Some((
                        q.name.clone(),
                        q.tenant.clone(),
                        RESOURCES[r].to_string(),
                        q.left[r]?,
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS: &str = "
apiVersion: ironvisor.io/v1alpha1
kind: Tenant
metadata: { name: finance }
spec: { parent: corp }
---
apiVersion: ironvisor.io/v1alpha1
kind: Quota
metadata: { name: corp-quota }
spec: { tenant: corp, hard: { vcpus: 8, memory: 16Gi } }
status: { used: { virtualMachines: 1, vcpus: 2, memory: 4Gi, storage: '0' } }
---
apiVersion: v1
kind: List
items:
  - apiVersion: ironvisor.io/v1alpha1
    kind: Hypervisor
    metadata: { name: h1 }
    spec: {}
    status:
      allocatable: { vcpus: 16, memory: 32Gi }
      allocated: { vcpus: 0, memory: '0' }
  - apiVersion: ironvisor.io/v1alpha1
    kind: Hypervisor
    metadata: { name: cordoned }
    spec: { unschedulable: true }
    status: { allocatable: { vcpus: 64, memory: 256Gi } }
";

    fn demand(vcpus: u64, gib: u64) -> Demand {
        Demand {
            vcpus,
            memory_bytes: gib << 30,
            storage_bytes: 1 << 30,
        }
    }

    #[test]
    fn a_parent_quota_limits_a_child_tenant_cumulatively() {
        let mut facts = TargetFacts::default();
        facts.add_yaml("f.yaml", FACTS).unwrap();
        assert_eq!(
            (
                facts.tenants.len(),
                facts.quotas.len(),
                facts.hypervisors.len()
            ),
            (1, 1, 2)
        );
        let mut ledger = Ledger::new(&facts);
        assert_eq!(
            ledger.take(Some("finance"), demand(4, 8)),
            Ok(Some("h1".into()))
        );
        let short = ledger.take(Some("finance"), demand(4, 8)).unwrap_err();
        assert_eq!(
            (short.resource.as_str(), short.needed, short.left),
            ("vcpus", 4, 2)
        );
        assert!(short.limit.contains("corp-quota"));
        // Another tenant is not limited by corp's quota, only by the host.
        assert!(ledger.take(Some("other"), demand(12, 24)).is_ok());
        let short = ledger.take(Some("other"), demand(1, 1)).unwrap_err();
        assert_eq!(short.limit, "hosts");
    }

    #[test]
    fn a_yaml_object_of_a_known_kind_with_a_bad_shape_is_an_error() {
        let mut facts = TargetFacts::default();
        let e = facts
            .add_yaml(
                "q.yaml",
                "kind: Quota\nmetadata: { name: q }\nspec: { hard: 5 }\n",
            )
            .unwrap_err();
        assert!(e.to_string().contains("a Quota"), "{e}");
    }
}
