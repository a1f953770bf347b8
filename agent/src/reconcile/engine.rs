//! The host side of a reconcile: from a VirtualMachine object to a domain in the state its
//! runStrategy asks for, and the status that results. No Kubernetes client here, so the
//! whole pipeline is tested on libvirt's test driver.
//!
//! Pipeline: identify → validate (pure) → observe → prepare storage and seed → build the
//! domain (pure) → define when it differs → decide (pure) → act → observe → status (pure).

use super::status::{Failure, ImagesCondition, StatusInput, VmEvent, agent_status, events};
use crate::domain_xml::name::domain_name;
use crate::domain_xml::{DomainType, Owner, PlanInput, build_plan, render};
use crate::hypervisor::{HvError, Hypervisor, Observed};
use crate::lifecycle::{StopReason, VmState, valid_transition};
use crate::metrics::{ErrorCategory, Metrics};
use crate::run_strategy::{Action, DecisionInput, decide};
use crate::seed::{SeedContent, SeedError, write_seed};
use crate::storage::cache::DownloadError;
use crate::storage::layout;
use crate::storage::prepare::{StorageError, StorageRoots, list_vm_dirs, remove_vm_dir};
use ironvisor_crds::labels::{REQUESTED_STATE, RESTART_REQUESTED_AT};
use ironvisor_crds::vm::{InterfaceStatus, RunStrategy, VirtualMachine, VirtualMachineStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How soon to look again while a guest is starting or shutting down, or an image downloads.
const FAST_REQUEUE: Duration = Duration::from_secs(2);
/// How soon to try a failed download again.
const RETRY_DOWNLOAD: Duration = Duration::from_secs(10);

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

/// Cloud-init data resolved from the spec and its Secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudInitData {
    /// User data.
    pub user_data: Option<String>,
    /// Network data.
    pub network_data: Option<String>,
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
    last_state: Mutex<HashMap<String, VmState>>,
    /// Bounds the guest starts in flight to about the number of host CPUs: a QEMU start is
    /// CPU-bound, and a burst started all at once makes every guest wait for the slowest.
    starts: tokio::sync::Semaphore,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long ago the ACPI shutdown recorded in `marker` was sent (wall clock, so it holds
/// across agent restarts); `None` when none is recorded or the record is unreadable.
async fn shutdown_sent_ago(marker: &std::path::Path) -> Option<Duration> {
    let text = tokio::fs::read_to_string(marker).await.ok()?;
    let sent: jiff::Timestamp = text.trim().parse().ok()?;
    let ago = jiff::Timestamp::now().duration_since(sent);
    // A clock that went backwards counts as "just sent".
    Some(Duration::try_from(ago).unwrap_or(Duration::ZERO))
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

fn annotation<'a>(vm: &'a VirtualMachine, key: &str) -> Option<&'a str> {
    vm.annotations().get(key).map(String::as_str)
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

    fn vm_dir(&self, uid: &str) -> Result<PathBuf, EngineError> {
        layout::vm_dir(&self.storage.state_dir, uid).ok_or(EngineError::Identity("safe uid"))
    }

    fn record_state(&self, uid: &str, state: VmState) {
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
        if o.state.is_up() || o.state == VmState::Starting {
            self.hv.destroy(&o.name).await?;
        }
        self.hv.undefine(&o.name).await?;
        remove_vm_dir(&self.storage.state_dir, uid)
            .await
            .map_err(EngineError::Cleanup)?;
        Ok(())
    }

    /// Bring the VM's domain to where its spec asks.
    pub async fn converge(
        &self,
        vm: &VirtualMachine,
        cloud_init: &CloudInitData,
        now: Time,
    ) -> Result<Outcome, EngineError> {
        let owner = Owner {
            node: self.node.clone(),
            ..owner_of(vm)?
        };
        let vm_dir = self.vm_dir(&owner.uid)?;
        let name = domain_name(&owner.namespace, &owner.name);
        let spec = &vm.spec;
        let prev = vm.status.clone().unwrap_or_default();
        let fail = |failure: Failure, state: VmState, images: Option<ImagesCondition>| -> Outcome {
            let status = agent_status(&StatusInput {
                prev: &prev,
                generation: vm.metadata.generation,
                state,
                domain_uuid: prev.domain_uuid.clone(),
                started_now: false,
                auto_restart: false,
                restart_handled: None,
                restart_required: false,
                interfaces: vec![],
                failure: Some(failure.clone()),
                images,
                now: now.clone(),
            });
            let events = events(prev.phase, state, &status, Some(&failure));
            Outcome {
                status,
                events,
                requeue: None,
                domain: name.clone(),
            }
        };

        // Validate before touching anything: boot files are placeholders here.
        let placeholder = PathBuf::from("/nonexistent");
        let probe = PlanInput {
            owner: owner.clone(),
            spec,
            domain_type: self.domain_type,
            vm_dir: &vm_dir,
            kernel: Some(placeholder.clone()),
            initrd: Some(placeholder),
        };
        if let Err(e) = build_plan(&probe) {
            return Ok(fail(
                Failure {
                    reason: "InvalidSpec",
                    message: e.to_string(),
                },
                VmState::Failed,
                None,
            ));
        }

        let mut observed = self.hv.observe(&name).await?;
        if let Some(o) = &observed {
            match o.owner() {
                None => {
                    let message =
                        format!("a domain named {name} exists that Ironvisor does not manage");
                    return Ok(fail(
                        Failure {
                            reason: "DomainConflict",
                            message,
                        },
                        VmState::Failed,
                        None,
                    ));
                }
                Some(m) if m.uid != owner.uid => {
                    // A previous VM of the same namespace/name: it no longer exists.
                    tracing::info!(
                        domain = name,
                        stale_uid = m.uid,
                        "removing the domain of a deleted VM"
                    );
                    let stale_uid = m.uid.clone();
                    self.remove_domain_of(o, &stale_uid).await?;
                    observed = None;
                }
                Some(_) => {}
            }
        }

        // Images first, without waiting: a download runs in the background while the
        // status says how far it got.
        let waiting = |images: ImagesCondition, requeue: Duration| -> Outcome {
            let state = observed.as_ref().map_or(VmState::Pending, |o| o.state);
            let status = agent_status(&StatusInput {
                prev: &prev,
                generation: vm.metadata.generation,
                state,
                domain_uuid: observed.as_ref().map(|o| o.uuid.clone()),
                started_now: false,
                auto_restart: false,
                restart_handled: None,
                restart_required: false,
                interfaces: prev.interfaces.clone(),
                failure: None,
                images: Some(images),
                now: now.clone(),
            });
            Outcome {
                events: events(prev.phase, state, &status, None),
                status,
                requeue: Some(requeue),
                domain: name.clone(),
            }
        };
        let storage_failed = |e: StorageError| -> Result<Outcome, EngineError> {
            if !e.is_permanent() {
                return match e {
                    StorageError::Download(d) => Ok(waiting(
                        ImagesCondition::not_ready("DownloadFailed", format!("{d}; retrying")),
                        RETRY_DOWNLOAD,
                    )),
                    e => Err(e.into()),
                };
            }
            let message = e.to_string();
            let (reason, images) = match &e {
                StorageError::Download(DownloadError::Checksum { .. }) => {
                    ("ImageChecksumMismatch", Some("ChecksumMismatch"))
                }
                StorageError::Download(_) => ("ImageChecksumMismatch", Some("InvalidDigest")),
                StorageError::Path(_) => ("StorageFailed", Some("ImageUnavailable")),
                _ => ("StorageFailed", None),
            };
            let images = images.map(|r| ImagesCondition::not_ready(r, message.clone()));
            Ok(fail(Failure { reason, message }, VmState::Failed, images))
        };
        match self.storage.images_pending(&vm_dir, spec).await {
            Ok(None) => {}
            Ok(Some(progress)) => {
                tracing::info!(vm = %format!("{}/{}", owner.namespace, owner.name), progress, "waiting for images");
                return Ok(waiting(
                    ImagesCondition::not_ready("Downloading", progress),
                    FAST_REQUEUE,
                ));
            }
            Err(e) => return storage_failed(e),
        }
        let prepared = match self.storage.prepare(&vm_dir, spec).await {
            Ok(p) => p,
            Err(e) => return storage_failed(e),
        };
        let input = PlanInput {
            kernel: prepared.kernel,
            initrd: prepared.initrd,
            ..probe
        };
        let plan = match build_plan(&input) {
            Ok(mut p) => {
                p.uuid = observed.as_ref().map(|o| o.uuid.clone());
                p
            }
            Err(e) => {
                return Ok(fail(
                    Failure {
                        reason: "InvalidSpec",
                        message: e.to_string(),
                    },
                    VmState::Failed,
                    None,
                ));
            }
        };
        if spec.cloud_init.is_some() {
            let hostname = spec.hostname.clone().unwrap_or_else(|| owner.name.clone());
            let content = SeedContent::new(
                &owner.uid,
                &hostname,
                cloud_init.user_data.as_deref(),
                cloud_init.network_data.as_deref(),
                &plan.nics,
            );
            write_seed(&layout::seed_file(&vm_dir), &content).await?;
        }

        let rendered = render(&plan);
        let current = observed.as_ref().and_then(|o| o.config.as_ref());
        if current.is_none_or(|m| {
            m.config_hash != rendered.config_hash
                || m.generation != owner.generation
                || m.node.as_deref().unwrap_or_default() != owner.node
        }) {
            self.hv.define(&rendered.xml).await?;
            observed = self.hv.observe(&name).await?;
        }
        let before = observed.as_ref().map_or(VmState::Pending, |o| o.state);
        self.record_state(&owner.uid, before);

        let marker = layout::shutdown_marker(&vm_dir);
        let shutdown_sent_ago = shutdown_sent_ago(&marker).await;
        let decision = decide(&DecisionInput {
            strategy: spec.run_strategy,
            state: before,
            requested_state: annotation(vm, REQUESTED_STATE),
            restart_requested: annotation(vm, RESTART_REQUESTED_AT),
            last_restart_request: prev.last_restart_request.as_deref(),
            has_run: prev.started_at.is_some(),
            shutdown_sent_ago,
            grace: Duration::from_secs(
                u64::try_from(spec.termination_grace_period_seconds).unwrap_or(0),
            ),
        });
        self.metrics.vm_seen(&owner.namespace, &owner.name);
        let mut started_now = false;
        let mut auto_restart = false;
        let mut requeue = None;
        match decision.action {
            Action::Nothing => {}
            Action::Start => {
                // The semaphore is never closed; were it, starting unbounded is still right.
                let _slot = self.starts.acquire().await.ok();
                self.hv.start(&name).await?;
                started_now = true;
                // Started again by the strategy itself, not on a request or a strategy change.
                auto_restart = prev.started_at.is_some()
                    && matches!(
                        spec.run_strategy,
                        RunStrategy::Always | RunStrategy::RerunOnFailure
                    )
                    && matches!(before, VmState::Stopped(r) if r != StopReason::NeverStarted);
                if auto_restart {
                    self.metrics.vm_restarted(&owner.namespace, &owner.name);
                }
            }
            Action::Restart => {
                if before.is_up() || before == VmState::Starting {
                    self.hv.destroy(&name).await?;
                }
                let _slot = self.starts.acquire().await.ok();
                self.hv.start(&name).await?;
                started_now = true;
            }
            Action::Shutdown => {
                self.hv.shutdown(&name).await?;
                // On disk, so the grace period survives an agent restart.
                tokio::fs::write(&marker, jiff::Timestamp::now().to_string())
                    .await
                    .map_err(EngineError::Cleanup)?;
                requeue = Some(FAST_REQUEUE);
            }
            Action::AwaitShutdown(left) => requeue = Some(left.min(FAST_REQUEUE)),
            Action::Destroy => self.hv.destroy(&name).await?,
        }
        if !matches!(decision.action, Action::Shutdown | Action::AwaitShutdown(_)) {
            match tokio::fs::remove_file(&marker).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::ShutdownMarker(e)),
            }
        }

        let after = if decision.action == Action::Nothing {
            observed
        } else {
            self.hv.observe(&name).await?
        };
        let state = after.as_ref().map_or(VmState::Pending, |o| o.state);
        self.record_state(&owner.uid, state);
        if matches!(state, VmState::Starting | VmState::Stopping) {
            requeue = Some(FAST_REQUEUE);
        }
        let restart_required = after
            .as_ref()
            .and_then(|o| o.live.as_ref())
            .is_some_and(|live| live.config_hash != rendered.config_hash);
        let interfaces = plan
            .nics
            .iter()
            .map(|n| InterfaceStatus {
                name: n.name.clone(),
                mac_address: Some(n.mac.clone()),
                host_device: after.as_ref().and_then(|o| {
                    o.interfaces
                        .iter()
                        .find(|(mac, _)| mac.eq_ignore_ascii_case(&n.mac))
                        .and_then(|(_, d)| d.clone())
                }),
                ip_addresses: vec![],
            })
            .collect();
        let status = agent_status(&StatusInput {
            prev: &prev,
            generation: vm.metadata.generation,
            state,
            domain_uuid: after.as_ref().map(|o| o.uuid.clone()),
            started_now,
            auto_restart,
            restart_handled: decision.restart_handled,
            restart_required,
            interfaces,
            failure: None,
            images: Some(ImagesCondition::available()),
            now,
        });
        let events = events(prev.phase, before, &status, None);
        if state.is_up()
            && let Ok(stats) = self.hv.stats(&name).await
        {
            self.metrics
                .observe_vm(&owner.namespace, &owner.name, &stats);
        }
        Ok(Outcome {
            status,
            events,
            requeue,
            domain: name,
        })
    }

    /// The finalizer's cleanup: destroy and undefine the VM's domain (only if it is ours and
    /// this VM's), remove its directory, forget its metrics.
    pub async fn remove(&self, vm: &VirtualMachine) -> Result<(), EngineError> {
        self.remove_owned(&owner_of(vm)?).await
    }

    /// [`remove`](Self::remove) by identity alone (a VM whose spec cannot be read).
    pub async fn remove_owned(&self, owner: &Owner) -> Result<(), EngineError> {
        let name = domain_name(&owner.namespace, &owner.name);
        if let Some(o) = self.hv.observe(&name).await?
            && o.owner().is_some_and(|m| m.uid == owner.uid)
        {
            if o.state.is_up() || o.state == VmState::Starting {
                self.hv.destroy(&name).await?;
            }
            self.hv.undefine(&name).await?;
        }
        remove_vm_dir(&self.storage.state_dir, &owner.uid)
            .await
            .map_err(EngineError::Cleanup)?;
        self.metrics.forget_vm(&owner.namespace, &owner.name);
        lock(&self.last_state).remove(&owner.uid);
        Ok(())
    }

    /// At startup: remove our domains and VM directories whose VM no longer exists (by
    /// uid). Domains without our metadata, and ours whose directory is not under this
    /// agent's state dir (another agent's, on a shared libvirtd), are never touched.
    /// Returns the removed uids.
    pub async fn collect_orphans(
        &self,
        live_uids: &HashSet<String>,
    ) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for o in self.hv.list_owned().await? {
            let Some(m) = o.owner() else {
                continue;
            };
            if !self.node.is_empty() && m.node.as_deref() != Some(self.node.as_str()) {
                // Another agent's (or an older agent's) domain on a shared libvirt.
                continue;
            }
            let uid = m.uid.clone();
            if !live_uids.contains(&uid) {
                // The agent creates a VM's directory before its domain and removes it after,
                // so a domain of ours always has one under our --state-dir. A domain without
                // one belongs to another agent sharing this libvirtd (tests, the demo next to
                // a test run): never ours to remove.
                let Ok(dir) = self.vm_dir(&uid) else {
                    continue;
                };
                if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                    tracing::debug!(
                        domain = o.name,
                        uid,
                        "leaving a domain whose directory is not under this agent's state dir"
                    );
                    continue;
                }
                tracing::info!(
                    domain = o.name,
                    uid,
                    "removing the domain of a VM that no longer exists"
                );
                self.remove_domain_of(&o, &uid).await?;
                removed.push(uid);
            }
        }
        let dirs = list_vm_dirs(&self.storage.state_dir)
            .await
            .map_err(EngineError::Cleanup)?;
        for uid in dirs {
            if !live_uids.contains(&uid) && !removed.contains(&uid) {
                remove_vm_dir(&self.storage.state_dir, &uid)
                    .await
                    .map_err(EngineError::Cleanup)?;
                removed.push(uid);
            }
        }
        Ok(removed)
    }

    /// The VM (namespace, name) a domain belongs to, for routing libvirt events.
    pub async fn owner_of_domain(&self, domain: &str) -> Option<(String, String)> {
        let o = self.hv.observe(domain).await.ok()??;
        o.owner().map(|m| (m.namespace.clone(), m.name.clone()))
    }
}
