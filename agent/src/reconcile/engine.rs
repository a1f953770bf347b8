//! The host side of a reconcile: from a VirtualMachine object to a domain in the state its
//! runStrategy asks for, and the status that results. No Kubernetes client here, so the
//! whole pipeline is tested on libvirt's test driver.
//!
//! This module owns the engine's state, its errors, the finalizer's cleanup and orphan
//! collection; the converge pipeline itself is in [`super::converge`].

use super::events::VmEvent;
use crate::domain_xml::name::domain_name;
use crate::domain_xml::{DomainType, Owner};
use crate::hypervisor::{HvError, Hypervisor, Observed};
use crate::lifecycle::{VmState, valid_transition};
use crate::metrics::{ErrorCategory, Metrics};
use crate::seed::SeedError;
use crate::storage::layout;
use crate::storage::prepare::{StorageError, StorageRoots, list_vm_dirs};
use ironvisor_crds::vm::{VirtualMachine, VirtualMachineStatus};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A domain or directory of this agent whose VM is not placed here.
#[derive(Clone, Debug)]
pub struct Leftover {
    /// The VM uid it was made for.
    pub uid: String,
    /// The VM's namespace and name, when recorded (domain metadata, or the owner file).
    pub owner: Option<(String, String)>,
    /// The domain, when there is one.
    pub domain: Option<Observed>,
}

/// A transient reconcile failure (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The object lacks uid, namespace or name.
    #[error("the VirtualMachine has no {0}")]
    Identity(&'static str),
    /// libvirt failed.
    #[error(transparent)]
    Hypervisor(#[from] HvError),
    /// Storage failed (transiently).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The seed could not be written.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// Removing the VM's directory failed.
    #[error("cannot remove the VM directory")]
    Cleanup(#[source] std::io::Error),
    /// The shutdown time could not be recorded or cleared.
    #[error("cannot record the ACPI shutdown time in the VM directory")]
    ShutdownMarker(#[source] std::io::Error),
}

impl EngineError {
    /// The metrics category.
    pub fn category(&self) -> ErrorCategory {
        match self {
            EngineError::Identity(_) => ErrorCategory::InvalidSpec,
            EngineError::Hypervisor(_) => ErrorCategory::Hypervisor,
            EngineError::Storage(_)
            | EngineError::Seed(_)
            | EngineError::Cleanup(_)
            | EngineError::ShutdownMarker(_) => ErrorCategory::Storage,
        }
    }
}

/// Cloud-init data resolved from the spec and the operator's seed copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudInitData {
    /// User data.
    pub user_data: Option<String>,
    /// Network data.
    pub network_data: Option<String>,
    /// Set while data the spec takes from a Secret is not available yet (the operator has
    /// not copied it): the VM waits, and this says why.
    pub pending: Option<String>,
}

/// The result of one reconcile.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The status the agent owns.
    pub status: VirtualMachineStatus,
    /// Events to publish.
    pub events: Vec<VmEvent>,
    /// Look again after this long (`None`: the regular resync).
    pub requeue: Option<Duration>,
    /// The domain name.
    pub domain: String,
    /// The VM failed in a way that is retried (a guest QEMU would not start): the caller
    /// picks the pause, growing with each failure in a row.
    pub retry: bool,
}

/// Host-side reconcile state shared by all VMs. Only the last observed state lives in
/// memory (losing it on restart costs one unchecked transition); when an ACPI shutdown was
/// sent is kept in the VM's directory, so the grace period survives a restart.
pub struct Engine {
    /// The hypervisor.
    pub hv: Arc<dyn Hypervisor>,
    /// Storage roots.
    pub storage: StorageRoots,
    /// kvm or qemu.
    pub domain_type: DomainType,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// This node, recorded in the domains' metadata. When set, only domains recorded for
    /// this node are collected as leftovers; empty: every domain with our metadata.
    pub node: String,
    pub(super) last_state: Mutex<HashMap<String, VmState>>,
    /// Bounds the guest starts in flight to about the number of host CPUs: a QEMU start is
    /// CPU-bound, and a burst started all at once makes every guest wait for the slowest.
    pub(super) starts: tokio::sync::Semaphore,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The VM's identity, or which field is missing.
pub fn owner_of(vm: &VirtualMachine) -> Result<Owner, EngineError> {
    Ok(Owner {
        uid: vm
            .metadata
            .uid
            .clone()
            .ok_or(EngineError::Identity("uid"))?,
        namespace: vm
            .metadata
            .namespace
            .clone()
            .ok_or(EngineError::Identity("namespace"))?,
        name: vm
            .metadata
            .name
            .clone()
            .ok_or(EngineError::Identity("name"))?,
        generation: vm.metadata.generation.unwrap_or(0),
        node: String::new(),
    })
}

impl Engine {
    /// An engine over `hv` and `storage`.
    pub fn new(
        hv: Arc<dyn Hypervisor>,
        storage: StorageRoots,
        domain_type: DomainType,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            hv,
            storage,
            domain_type,
            metrics,
            node: String::new(),
            last_state: Mutex::default(),
            starts: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
        }
    }

    pub(super) fn vm_dir(&self, uid: &str) -> Result<PathBuf, EngineError> {
        layout::vm_dir(&self.storage.state_dir, uid).ok_or(EngineError::Identity("safe uid"))
    }

    pub(super) fn record_state(&self, uid: &str, state: VmState) {
        let mut last = lock(&self.last_state);
        if let Some(prev) = last.insert(uid.to_owned(), state)
            && !valid_transition(prev, state)
        {
            self.metrics.invalid_transition();
            tracing::info!(uid, from = ?prev, to = ?state, "lifecycle change outside the state machine");
        }
    }

    /// Destroy and undefine a domain we own, and remove that VM's directory.
    async fn remove_domain_of(&self, o: &Observed, uid: &str) -> Result<(), EngineError> {
        self.remove_domain_only(o).await?;
        self.storage
            .remove_vm(uid)
            .await
            .map_err(EngineError::Cleanup)?;
        Ok(())
    }

    /// Destroy and undefine a domain we own; its directory stays.
    pub(super) async fn remove_domain_only(&self, o: &Observed) -> Result<(), EngineError> {
        if o.state.is_up() || o.state == VmState::Starting {
            self.hv.destroy(&o.name).await?;
        }
        self.hv.undefine(&o.name).await?;
        Ok(())
    }

    /// The finalizer's cleanup: destroy and undefine the VM's domain (only if it is ours and
    /// this VM's), remove its directory, forget its metrics. The caller has asked the API
    /// that nothing holds the VM's layers ([`crate::snapshot::retained::holders_of`]).
    pub async fn remove(&self, vm: &VirtualMachine) -> Result<(), EngineError> {
        self.remove_owned(&owner_of(vm)?).await
    }

    /// [`remove`](Self::remove) by identity alone (a VM whose spec cannot be read).
    pub async fn remove_owned(&self, owner: &Owner) -> Result<(), EngineError> {
        self.remove_owned_with(owner, false).await
    }

    /// The cleanup of a VM whose layers something still holds (retained snapshots, a backup
    /// being written): destroy and undefine its domain, forget its metrics, and leave its
    /// directory (the layers) in place.
    pub async fn remove_keeping_disks(&self, owner: &Owner) -> Result<(), EngineError> {
        self.remove_owned_with(owner, true).await
    }

    async fn remove_owned_with(&self, owner: &Owner, keep_dir: bool) -> Result<(), EngineError> {
        let name = domain_name(&owner.namespace, &owner.name);
        if let Some(o) = self.hv.observe(&name).await?
            && o.owner().is_some_and(|m| m.uid == owner.uid)
        {
            if o.state.is_up() || o.state == VmState::Starting {
                self.hv.destroy(&name).await?;
            }
            self.hv.undefine(&name).await?;
        }
        if !keep_dir {
            self.storage
                .remove_vm(&owner.uid)
                .await
                .map_err(EngineError::Cleanup)?;
        }
        self.metrics.forget_vm(&owner.namespace, &owner.name);
        lock(&self.last_state).remove(&owner.uid);
        Ok(())
    }

    /// What this agent holds (domains recorded for its node, directories under its state
    /// dir) for VMs not among `placed`: candidates only. Nothing is removed here; the caller
    /// confirms with the API that each VM is gone before [`Engine::remove_leftover`].
    pub async fn leftovers(&self, placed: &HashSet<String>) -> Result<Vec<Leftover>, EngineError> {
        let mut out: Vec<Leftover> = Vec::new();
        for o in self.hv.list_owned().await? {
            let Some(m) = o.owner() else {
                continue;
            };
            if !self.node.is_empty() && m.node.as_deref() != Some(self.node.as_str()) {
                // Another agent's (or an older agent's) domain on a shared libvirt.
                continue;
            }
            if placed.contains(&m.uid) {
                continue;
            }
            // The agent creates a VM's directory before its domain and removes it after,
            // so a domain of ours always has one under our --state-dir. A domain without
            // one belongs to another agent sharing this libvirtd (tests, the demo next to
            // a test run): never ours to remove.
            let Ok(dir) = self.vm_dir(&m.uid) else {
                continue;
            };
            if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                continue;
            }
            out.push(Leftover {
                uid: m.uid.clone(),
                owner: Some((m.namespace.clone(), m.name.clone())),
                domain: Some(o.clone()),
            });
        }
        let dirs = list_vm_dirs(&self.storage.state_dir)
            .await
            .map_err(EngineError::Cleanup)?;
        for uid in dirs {
            if placed.contains(&uid) || out.iter().any(|l| l.uid == uid) {
                continue;
            }
            let owner = match self.vm_dir(&uid) {
                Ok(dir) => tokio::fs::read_to_string(layout::owner_file(&dir))
                    .await
                    .ok()
                    .and_then(|s| {
                        s.trim()
                            .split_once('/')
                            .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    }),
                Err(_) => None,
            };
            out.push(Leftover {
                uid,
                owner,
                domain: None,
            });
        }
        Ok(out)
    }

    /// Remove a leftover whose VM the API confirmed gone: its domain, then its directory.
    pub async fn remove_leftover(&self, l: &Leftover) -> Result<(), EngineError> {
        match &l.domain {
            Some(o) => self.remove_domain_of(o, &l.uid).await,
            None => self
                .storage
                .remove_vm(&l.uid)
                .await
                .map(|_| ())
                .map_err(EngineError::Cleanup),
        }
    }

    /// Remove only the domain of a leftover whose VM is gone but whose retained snapshots
    /// keep its directory (nothing when it has no domain).
    pub async fn remove_leftover_domain(&self, l: &Leftover) -> Result<(), EngineError> {
        match &l.domain {
            Some(o) => self.remove_domain_only(o).await,
            None => Ok(()),
        }
    }

    /// Power off the guest of a leftover whose VM runs on another node; its definition and
    /// disks stay. Looks again first (the guest may have stopped since the listing) and acts
    /// only on a domain still recorded for this VM. Says whether a guest was stopped.
    pub async fn stop_leftover(&self, l: &Leftover) -> Result<bool, EngineError> {
        let Some(listed) = &l.domain else {
            return Ok(false);
        };
        let Some(o) = self.hv.observe(&listed.name).await? else {
            return Ok(false);
        };
        let ours = o.owner().is_some_and(|m| m.uid == l.uid);
        if !ours || !(o.state.is_up() || o.state == VmState::Starting) {
            return Ok(false);
        }
        self.hv.destroy(&o.name).await?;
        Ok(true)
    }

    /// The VM (namespace, name) a domain belongs to, for routing libvirt events.
    pub async fn owner_of_domain(&self, domain: &str) -> Option<(String, String)> {
        let o = self.hv.observe(domain).await.ok()??;
        o.owner().map(|m| (m.namespace.clone(), m.name.clone()))
    }
}
