//! One reconcile on the host, as a pipeline of small steps: identify → validate (pure) →
//! observe and adopt → images and storage → plan (pure) → seed → define when it differs →
//! decide (pure) and act → observe → status (pure).
//!
//! A step that ends the reconcile early returns [`Stop::Done`] with the status to write (a
//! spec that cannot run, a download in progress, a guest QEMU would not start) or
//! [`Stop::Error`] for a failure of the reconcile itself (libvirt unreachable), which the
//! controller retries with backoff. Never touches the Kubernetes API.

use super::engine::{CloudInitData, Engine, EngineError, Outcome, owner_of};
use super::events::events;
use super::failure::{self, FailureKind};
use super::image_failure::{self, ImageRefusal};
use super::status::{Failure, ImagesCondition, StatusInput, agent_status};
use crate::domain_xml::name::domain_name;
use crate::domain_xml::{
    DomainPlan, DomainType, Owner, PlanInput, RenderedDomain, build_plan, render,
};
use crate::hypervisor::{HvError, Observed};
use crate::lifecycle::{StopReason, VmState};
use crate::run_strategy::{Action, Decision, DecisionInput, actionable_restart, decide};
use crate::seed::{SeedContent, write_seed};
use crate::storage::cache::DownloadError;
use crate::storage::layout;
use crate::storage::prepare::{Prepared, StorageError};
use ironvisor_crds::labels::{REQUESTED_STATE, RESTART_REQUESTED_AT};
use ironvisor_crds::vm::{InterfaceStatus, RunStrategy, VirtualMachine, VirtualMachineStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How soon to look again while a guest is starting or shutting down, or an image downloads.
const FAST_REQUEUE: Duration = Duration::from_secs(2);
/// How soon to try a failed download again.
const RETRY_DOWNLOAD: Duration = Duration::from_secs(10);
/// How soon to look for the operator's seed copy again (its creation does not wake the
/// agent's watch, which sees VMs only).
const SEED_PENDING_REQUEUE: Duration = Duration::from_secs(2);
/// How soon to look for room again in a full image cache (a look reads only the cache
/// directory and the VM disks' headers).
const RETRY_CACHE_FULL: Duration = Duration::from_secs(5);

/// Why the pipeline ended before its last step.
enum Stop {
    /// With a status to write.
    Done(Box<Outcome>),
    /// The reconcile failed.
    Error(EngineError),
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        Stop::Error(e)
    }
}

impl From<HvError> for Stop {
    fn from(e: HvError) -> Self {
        Stop::Error(e.into())
    }
}

type Flow<T> = Result<T, Stop>;

/// The facts of one reconcile, fixed at its start.
/// Write the VM's `namespace/name` into its directory once (see [`layout::owner_file`]).
async fn record_owner(vm_dir: &Path, vm: &VirtualMachine) -> std::io::Result<()> {
    let path = layout::owner_file(vm_dir);
    if tokio::fs::try_exists(&path).await? {
        return Ok(());
    }
    let owner = format!(
        "{}/{}",
        vm.metadata.namespace.as_deref().unwrap_or_default(),
        vm.metadata.name.as_deref().unwrap_or_default()
    );
    tokio::fs::write(&path, owner).await
}

struct Run<'a> {
    vm: &'a VirtualMachine,
    owner: Owner,
    vm_dir: PathBuf,
    name: String,
    prev: VirtualMachineStatus,
    now: Time,
}

/// What acting on the decision did.
struct Acted {
    before: VmState,
    decision: Decision,
    started_now: bool,
    auto_restart: bool,
    requeue: Option<Duration>,
}

fn annotation<'a>(vm: &'a VirtualMachine, key: &str) -> Option<&'a str> {
    vm.annotations().get(key).map(String::as_str)
}

fn state_of(o: Option<&Observed>) -> VmState {
    o.map_or(VmState::Pending, |o| o.state)
}

impl Run<'_> {
    /// A status input with this reconcile's facts and nothing done.
    fn input(&self, state: VmState, observed: Option<&Observed>) -> StatusInput<'_> {
        StatusInput {
            prev: &self.prev,
            generation: self.vm.metadata.generation,
            state,
            domain_uuid: observed.map(|o| o.uuid.clone()),
            started_now: false,
            auto_restart: false,
            restart_handled: None,
            restart_required: false,
            interfaces: self.prev.interfaces.clone(),
            failure: None,
            images: None,
            now: self.now.clone(),
        }
    }

    fn outcome(&self, input: &StatusInput<'_>, before: VmState) -> Outcome {
        let status = agent_status(input);
        Outcome {
            events: events(&self.prev, before, &status, input.failure.as_ref()),
            retry: input.failure.as_ref().is_some_and(|f| f.retried),
            status,
            requeue: None,
            domain: self.name.clone(),
        }
    }

    /// The VM cannot run until its spec changes: the status says why.
    fn failed(&self, failure: Failure, images: Option<ImagesCondition>) -> Stop {
        let input = StatusInput {
            domain_uuid: self.prev.domain_uuid.clone(),
            interfaces: vec![],
            failure: Some(failure),
            images,
            ..self.input(VmState::Failed, None)
        };
        Stop::Done(Box::new(self.outcome(&input, VmState::Failed)))
    }

    /// Bringing the VM up failed; it is tried again after a pause. The status says why, and
    /// a guest that still runs (a redefinition refused) stays Running, though not Ready.
    fn retrying(&self, failure: Failure, observed: Option<&Observed>) -> Stop {
        let state = state_of(observed);
        let input = StatusInput {
            domain_uuid: observed
                .map(|o| o.uuid.clone())
                .or_else(|| self.prev.domain_uuid.clone()),
            interfaces: if state.is_up() {
                self.prev.interfaces.clone()
            } else {
                vec![]
            },
            failure: Some(Failure {
                retried: true,
                ..failure
            }),
            ..self.input(state, observed)
        };
        Stop::Done(Box::new(self.outcome(&input, state)))
    }

    /// Waiting for images: the status says how far they got.
    fn waiting(
        &self,
        images: ImagesCondition,
        requeue: Duration,
        observed: Option<&Observed>,
    ) -> Stop {
        let state = state_of(observed);
        let input = StatusInput {
            images: Some(images),
            ..self.input(state, observed)
        };
        Stop::Done(Box::new(Outcome {
            requeue: Some(requeue),
            ..self.outcome(&input, state)
        }))
    }

    /// A libvirt call failed: the VM's failure, unless the connection itself broke.
    fn hypervisor_failed(
        &self,
        kind: FailureKind,
        e: HvError,
        observed: Option<&Observed>,
        engine: &Engine,
    ) -> Stop {
        match failure::from_hypervisor(kind, &e) {
            Some(f) => {
                engine.metrics.vm_start_failed(kind);
                tracing::warn!(vm = %self.key(), reason = f.reason, error = %e, "the VM failed; retrying with backoff");
                self.retrying(f, observed)
            }
            None => Stop::Error(e.into()),
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.owner.namespace, self.owner.name)
    }

    /// Check the spec before touching anything (boot files are placeholders here).
    fn validate(&self, domain_type: DomainType) -> Flow<()> {
        let placeholder = PathBuf::from("/nonexistent");
        let probe = self.plan_input(domain_type, Some(placeholder.clone()), Some(placeholder));
        match build_plan(&probe) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(Failure::permanent("InvalidSpec", e.to_string()), None)),
        }
    }

    fn plan_input(
        &self,
        domain_type: DomainType,
        kernel: Option<PathBuf>,
        initrd: Option<PathBuf>,
    ) -> PlanInput<'_> {
        PlanInput {
            owner: self.owner.clone(),
            spec: &self.vm.spec,
            domain_type,
            vm_dir: &self.vm_dir,
            kernel,
            initrd,
        }
    }

    /// The domain plan over the prepared boot files (pure).
    fn plan(
        &self,
        domain_type: DomainType,
        prepared: Prepared,
        observed: Option<&Observed>,
    ) -> Flow<DomainPlan> {
        let input = self.plan_input(domain_type, prepared.kernel, prepared.initrd);
        match build_plan(&input) {
            Ok(mut p) => {
                p.uuid = observed.map(|o| o.uuid.clone());
                crate::snapshot::state::point_at_active_layer(&mut p, &self.vm_dir);
                Ok(p)
            }
            Err(e) => Err(self.failed(Failure::permanent("InvalidSpec", e.to_string()), None)),
        }
    }

    /// A storage error: a download to retry, a permanent failure, or one retried with backoff.
    fn storage_failed(
        &self,
        e: StorageError,
        observed: Option<&Observed>,
        engine: &Engine,
    ) -> Stop {
        if !e.is_permanent() {
            if let StorageError::Download(d) = e {
                if matches!(d, DownloadError::CacheFull(_)) {
                    engine.metrics.image_refused(ImageRefusal::CacheFull);
                    let images = ImagesCondition::not_ready("ImageCacheFull", d.to_string());
                    return self.waiting(images, RETRY_CACHE_FULL, observed);
                }
                let images = ImagesCondition::not_ready("DownloadFailed", format!("{d}; retrying"));
                return self.waiting(images, RETRY_DOWNLOAD, observed);
            }
            engine.metrics.vm_start_failed(FailureKind::Storage);
            tracing::warn!(vm = %self.key(), error = %failure::chain(&e), "storage failed; retrying with backoff");
            return self.retrying(failure::from_storage(&e), observed);
        }
        let message = e.to_string();
        let (reason, images, refusal) = image_failure::permanent(&e);
        if let Some(r) = refusal {
            engine.metrics.image_refused(r);
        }
        let images = images.map(|r| ImagesCondition::not_ready(r, message.clone()));
        self.failed(Failure::permanent(reason, message), images)
    }

    fn decision(&self, before: VmState, shutdown_sent_ago: Option<Duration>) -> Decision {
        let spec = &self.vm.spec;
        decide(&DecisionInput {
            strategy: spec.run_strategy,
            state: before,
            requested_state: annotation(self.vm, REQUESTED_STATE),
            restart_requested: self.restart_request(),
            last_restart_request: self.prev.last_restart_request.as_deref(),
            has_run: self.prev.started_at.is_some(),
            shutdown_sent_ago,
            grace: Duration::from_secs(
                u64::try_from(spec.termination_grace_period_seconds).unwrap_or(0),
            ),
        })
    }

    /// The restart request to act on now: none while another operation holds the VM.
    fn restart_request(&self) -> Option<&str> {
        let holder = self.vm.status.as_ref().and_then(|s| s.operation.as_ref());
        actionable_restart(annotation(self.vm, RESTART_REQUESTED_AT), holder).unwrap_or_else(|op| {
            tracing::info!(vm = %self.key(), holder = %op, "restart waits: another operation holds the VM");
            None
        })
    }

    /// Started again by the strategy itself, not on a request or a strategy change.
    fn is_auto_restart(&self, before: VmState) -> bool {
        self.prev.started_at.is_some()
            && matches!(
                self.vm.spec.run_strategy,
                RunStrategy::Always | RunStrategy::RerunOnFailure
            )
            && matches!(before, VmState::Stopped(r) if r != StopReason::NeverStarted)
    }
}

/// The interfaces the status lists: the plan's, with the host devices libvirt reports.
fn interfaces(plan: &DomainPlan, after: Option<&Observed>) -> Vec<InterfaceStatus> {
    plan.nics
        .iter()
        .map(|n| InterfaceStatus {
            name: n.name.clone(),
            mac_address: Some(n.mac.clone()),
            host_device: after.and_then(|o| {
                o.interfaces
                    .iter()
                    .find(|(mac, _)| mac.eq_ignore_ascii_case(&n.mac))
                    .and_then(|(_, d)| d.clone())
            }),
            ip_addresses: vec![],
        })
        .collect()
}

/// How long ago the ACPI shutdown recorded in `marker` was sent (wall clock, so it holds
/// across agent restarts); `None` when none is recorded or the record is unreadable.
async fn shutdown_sent_ago(marker: &Path) -> Option<Duration> {
    let text = tokio::fs::read_to_string(marker).await.ok()?;
    let sent: jiff::Timestamp = text.trim().parse().ok()?;
    let ago = jiff::Timestamp::now().duration_since(sent);
    // A clock that went backwards counts as "just sent".
    Some(Duration::try_from(ago).unwrap_or(Duration::ZERO))
}

impl Engine {
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
        let run = Run {
            vm,
            vm_dir: self.vm_dir(&owner.uid)?,
            name: domain_name(&owner.namespace, &owner.name),
            owner,
            prev: vm.status.clone().unwrap_or_default(),
            now,
        };
        match self.pipeline(&run, cloud_init).await {
            Ok(o) => Ok(o),
            Err(Stop::Done(o)) => Ok(*o),
            Err(Stop::Error(e)) => Err(e),
        }
    }

    async fn pipeline(&self, run: &Run<'_>, cloud_init: &CloudInitData) -> Flow<Outcome> {
        run.validate(self.domain_type)?;
        let observed = self.adopt(run).await?;
        let prepared = self.prepare_storage(run, observed.as_ref()).await?;
        let plan = run.plan(self.domain_type, prepared, observed.as_ref())?;
        self.write_seed(run, &plan, cloud_init, observed.as_ref())
            .await?;
        let rendered = render(&plan);
        let observed = self.define_if_changed(run, observed, &rendered).await?;
        let acted = self.act(run, observed.as_ref()).await?;
        self.conclude(run, &plan, &rendered, observed, acted).await
    }

    /// The domain of that name, if ours and this VM's; a deleted namesake's is removed, a
    /// domain we do not manage is a conflict.
    async fn adopt(&self, run: &Run<'_>) -> Flow<Option<Observed>> {
        let Some(o) = self.hv.observe(&run.name).await? else {
            return Ok(None);
        };
        match o.owner() {
            None => {
                let message = format!(
                    "a domain named {} exists that Ironvisor does not manage",
                    run.name
                );
                Err(run.failed(Failure::permanent("DomainConflict", message), None))
            }
            Some(m) if m.uid != run.owner.uid => {
                // A previous VM of the same namespace/name: it no longer exists. Only its
                // domain goes here; its directory is a leftover the sweep removes once the
                // API names nothing (retained snapshots, backups) that reads its layers.
                tracing::info!(
                    domain = run.name,
                    stale_uid = m.uid,
                    "removing the domain of a deleted VM; its directory is left to the leftover sweep"
                );
                self.remove_domain_only(&o).await?;
                Ok(None)
            }
            Some(_) => Ok(Some(o)),
        }
    }

    /// Images first, without waiting (a download runs in the background while the status
    /// says how far it got), then disks and boot files.
    async fn prepare_storage(&self, run: &Run<'_>, observed: Option<&Observed>) -> Flow<Prepared> {
        let spec = &run.vm.spec;
        match self.storage.images_pending(&run.vm_dir, spec).await {
            Ok(None) => {}
            Ok(Some(progress)) => {
                tracing::info!(vm = %run.key(), progress, "waiting for images");
                let images = ImagesCondition::not_ready("Downloading", progress);
                return Err(run.waiting(images, FAST_REQUEUE, observed));
            }
            Err(e) => return Err(run.storage_failed(e, observed, self)),
        }
        let prepared = self
            .storage
            .prepare(&run.vm_dir, spec)
            .await
            .map_err(|e| run.storage_failed(e, observed, self))?;
        record_owner(&run.vm_dir, run.vm)
            .await
            .map_err(|e| run.storage_failed(e.into(), observed, self))?;
        Ok(prepared)
    }

    async fn write_seed(
        &self,
        run: &Run<'_>,
        plan: &DomainPlan,
        cloud_init: &CloudInitData,
        observed: Option<&Observed>,
    ) -> Flow<()> {
        let spec = &run.vm.spec;
        if spec.cloud_init.is_none() {
            return Ok(());
        }
        if let Some(why) = &cloud_init.pending {
            tracing::info!(vm = %run.key(), why, "waiting for the seed copy");
            let images = ImagesCondition::not_ready("SeedPending", why.clone());
            return Err(run.waiting(images, SEED_PENDING_REQUEUE, observed));
        }
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| run.owner.name.clone());
        let content = SeedContent::new(
            &run.owner.uid,
            &hostname,
            cloud_init.user_data.as_deref(),
            cloud_init.network_data.as_deref(),
            &plan.nics,
        )
        .for_clone(spec.disks.iter().any(|d| d.clone_of().is_some()));
        write_seed(&layout::seed_file(&run.vm_dir), &content)
            .await
            .map_err(|e| {
                self.metrics.vm_start_failed(FailureKind::Storage);
                tracing::warn!(vm = %run.key(), error = %failure::chain(&e), "seed failed; retrying with backoff");
                run.retrying(failure::from_seed(&e), observed)
            })?;
        Ok(())
    }

    /// (Re)define the domain when its definition, generation or node differs.
    async fn define_if_changed(
        &self,
        run: &Run<'_>,
        observed: Option<Observed>,
        rendered: &RenderedDomain,
    ) -> Flow<Option<Observed>> {
        let owner = &run.owner;
        let current = observed.as_ref().and_then(|o| o.config.as_ref());
        let differs = current.is_none_or(|m| {
            m.config_hash != rendered.config_hash
                || m.generation != owner.generation
                || m.node.as_deref().unwrap_or_default() != owner.node
        });
        if !differs {
            return Ok(observed);
        }
        if let Err(e) = self.hv.define(&rendered.xml).await {
            return Err(run.hypervisor_failed(FailureKind::Define, e, observed.as_ref(), self));
        }
        Ok(self.hv.observe(&run.name).await?)
    }

    /// Decide what the run strategy asks for now, and do it.
    async fn act(&self, run: &Run<'_>, observed: Option<&Observed>) -> Flow<Acted> {
        let before = state_of(observed);
        self.record_state(&run.owner.uid, before);
        let marker = layout::shutdown_marker(&run.vm_dir);
        let decision = run.decision(before, shutdown_sent_ago(&marker).await);
        self.metrics.vm_seen(&run.owner.namespace, &run.owner.name);
        let mut acted = Acted {
            before,
            decision,
            started_now: false,
            auto_restart: false,
            requeue: None,
        };
        match acted.decision.action {
            Action::Nothing => {}
            Action::Start => {
                self.start(run, observed).await?;
                acted.started_now = true;
                acted.auto_restart = run.is_auto_restart(before);
                if acted.auto_restart {
                    self.metrics
                        .vm_restarted(&run.owner.namespace, &run.owner.name);
                }
            }
            Action::Restart => {
                if before.is_up() || before == VmState::Starting {
                    self.hv.destroy(&run.name).await?;
                }
                self.start(run, observed).await?;
                acted.started_now = true;
            }
            Action::Shutdown => {
                self.hv.shutdown(&run.name).await?;
                // On disk, so the grace period survives an agent restart.
                tokio::fs::write(&marker, jiff::Timestamp::now().to_string())
                    .await
                    .map_err(EngineError::ShutdownMarker)?;
                acted.requeue = Some(FAST_REQUEUE);
            }
            Action::AwaitShutdown(left) => acted.requeue = Some(left.min(FAST_REQUEUE)),
            Action::Destroy => self.hv.destroy(&run.name).await?,
        }
        if !matches!(
            acted.decision.action,
            Action::Shutdown | Action::AwaitShutdown(_)
        ) {
            match tokio::fs::remove_file(&marker).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::ShutdownMarker(e).into()),
            }
        }
        Ok(acted)
    }

    /// Start the guest, with at most about one start per host CPU in flight.
    async fn start(&self, run: &Run<'_>, observed: Option<&Observed>) -> Flow<()> {
        // The semaphore is never closed; were it, starting unbounded is still right.
        let _slot = self.starts.acquire().await.ok();
        self.hv
            .start(&run.name)
            .await
            .map_err(|e| run.hypervisor_failed(FailureKind::Start, e, observed, self))
    }

    /// Observe the result and compute the status.
    async fn conclude(
        &self,
        run: &Run<'_>,
        plan: &DomainPlan,
        rendered: &RenderedDomain,
        observed: Option<Observed>,
        acted: Acted,
    ) -> Flow<Outcome> {
        let after = if acted.decision.action == Action::Nothing {
            observed
        } else {
            self.hv.observe(&run.name).await?
        };
        let state = state_of(after.as_ref());
        self.record_state(&run.owner.uid, state);
        let mut requeue = acted.requeue;
        if matches!(state, VmState::Starting | VmState::Stopping) {
            requeue = Some(FAST_REQUEUE);
        }
        let restart_required = after
            .as_ref()
            .and_then(|o| o.live.as_ref())
            .is_some_and(|live| live.config_hash != rendered.config_hash);
        let input = StatusInput {
            started_now: acted.started_now,
            auto_restart: acted.auto_restart,
            restart_handled: acted.decision.restart_handled.clone(),
            restart_required,
            interfaces: interfaces(plan, after.as_ref()),
            images: Some(ImagesCondition::available()),
            ..run.input(state, after.as_ref())
        };
        if state.is_up()
            && let Ok(stats) = self.hv.stats(&run.name).await
        {
            self.metrics
                .observe_vm(&run.owner.namespace, &run.owner.name, &stats);
        }
        Ok(Outcome {
            requeue,
            ..run.outcome(&input, acted.before)
        })
    }
}
