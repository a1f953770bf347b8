//! The source agent: run QEMU's copy through libvirt (peer to peer) once the target is
//! ready, report the job's statistics, abort it on cancel or timeout, and remove the VM's
//! directory here only once the API says the VM runs on the target.
//!
//! The migrate call blocks for the whole copy, so each job runs on a blocking thread of its
//! own, remembered by migration uid in [`Jobs`]. An agent restarted mid-copy finds the
//! migration reported `Running` with no job of its own and settles it from what libvirt
//! says: the domain still here (failed), or gone here and running on the target (done).

use super::cold;
use super::converge::{self, Verdict};
use super::ops::{self, Features, Request};
use super::{Config, Error, labelled, patch_status};
use crate::domain_xml::name::domain_name;
use crate::reconcile::controller::Context;
use crate::storage::layout;
use ironvisor_crds::migration::{
    MigrationPhase, MigrationProgress, SOURCE_LABEL, SourceState, VirtualMachineMigration,
};
use ironvisor_crds::migration_policy::AppliedPolicy;
use ironvisor_crds::vm::{Phase, VirtualMachine};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a running job's statistics are read, the policy applied and the progress
/// reported (one status patch per tick).
const PROGRESS: Duration = Duration::from_secs(1);

/// Migrations (by uid) whose job runs in this process.
#[derive(Clone, Default)]
pub struct Jobs(Arc<Mutex<HashSet<String>>>);

impl Jobs {
    fn insert(&self, uid: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_owned())
    }
    fn remove(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
    fn has(&self, uid: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uid)
    }
}

/// One pass over the migrations leaving this host.
pub async fn pass(ctx: &Arc<Context>, config: &Arc<Config>, jobs: &Jobs) -> Result<(), Error> {
    for m in labelled(ctx, SOURCE_LABEL).await? {
        let uid = m.uid().unwrap_or_default();
        let Some(status) = &m.status else { continue };
        let reported = status.source.as_ref().map(|s| s.state);
        let ready = status.target.as_ref().is_some_and(|t| t.ready);
        let deleting = m.metadata.deletion_timestamp.is_some();
        match (status.phase, reported) {
            (MigrationPhase::Migrating, None) if deleting && !jobs.has(&uid) => {
                let note = "cancelled before the copy started; the VM runs here as before";
                patch_status(
                    ctx,
                    &m,
                    json!({ "source": { "state": "Aborted", "message": note } }),
                )
                .await?;
            }
            (MigrationPhase::Migrating, None) if ready && jobs.insert(&uid) => {
                start(ctx.clone(), config.clone(), jobs.clone(), m.clone());
            }
            (MigrationPhase::Migrating, Some(SourceState::Running)) if !jobs.has(&uid) => {
                settle_orphan(ctx, config, &m).await?;
            }
            (MigrationPhase::Completed, _) => remove_source_copy(ctx, config, &m).await?,
            _ => {}
        }
    }
    Ok(())
}

fn domain_of(m: &VirtualMachineMigration) -> String {
    domain_name(&m.namespace().unwrap_or_default(), &m.spec.vm_name)
}

/// Start the job of `m` on its own task.
fn start(ctx: Arc<Context>, config: Arc<Config>, jobs: Jobs, m: VirtualMachineMigration) {
    tokio::spawn(async move {
        let uid = m.uid().unwrap_or_default();
        let outcome = drive(&ctx, &config, &m).await;
        let report = match outcome {
            Ok(r) => r,
            Err(e) => json!({ "state": "Failed", "message": crate::reconcile::failure::chain(&e) }),
        };
        if let Err(e) = patch_status(&ctx, &m, json!({ "source": report })).await {
            tracing::warn!(migration = m.name_any(), error = %e, "could not report the migration's outcome; the next pass settles it");
        }
        jobs.remove(&uid);
    });
}

/// Why a job was stopped before QEMU finished.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stopped {
    Cancelled,
    TimedOut,
}

/// The running job's policy state: what was applied so far.
#[derive(Default)]
struct Steering {
    downtime_set: bool,
    post_copy: bool,
    post_copy_refused: bool,
}

/// The job: the definition for the target, the migrate call, progress until it returns.
/// Returns the `source` report.
async fn drive(
    ctx: &Context,
    config: &Config,
    m: &VirtualMachineMigration,
) -> Result<Value, Error> {
    let domain = domain_of(m);
    let uri = config.libvirt_uri.clone();
    let policy = converge::policy_of(m);
    let req = match prepare(ctx, m, &policy, (&uri, &domain)).await? {
        Ok(req) => req,
        Err(why) => return Ok(json!({ "state": "Failed", "message": why })),
    };
    if m.spec.restarts()
        && let Err(why) = power_cycle_paused(ctx, m, &uri, &domain).await?
    {
        return Ok(json!({ "state": "Failed", "message": why }));
    }
    patch_status(ctx, m, json!({ "source": { "state": "Running" } })).await?;
    tracing::info!(migration = m.name_any(), domain, to = %req.target_uri, ?policy, "live migration starting");
    let (result, call, stopped, post_copy) = run(ctx, m, &policy, req).await?;
    if result.is_err() && m.spec.restarts() {
        // The guest stayed here, paused and never run: stop it, so the VM controller boots
        // it afresh here once the migration has ended.
        let (u, d) = (uri.clone(), domain.clone());
        let halted = tokio::task::spawn_blocking(move || cold::stop(&u, &d)).await?;
        tracing::info!(
            migration = m.name_any(),
            ?halted,
            "restart elsewhere failed: the paused guest is stopped here"
        );
    }
    Ok(report(m, &policy, (result, stopped), call, post_copy))
}

/// What to send where: the target's URI, address and directory from the migration's
/// status, the live definition rewritten for the target, the policy's features. `Err` is
/// why the job cannot start (the migration fails with it).
async fn prepare(
    ctx: &Context,
    m: &VirtualMachineMigration,
    policy: &AppliedPolicy,
    (uri, domain): (&str, &str),
) -> Result<Result<Request, String>, Error> {
    let status = m.status.clone().unwrap_or_default();
    let target = status.target.clone().unwrap_or_default();
    let vm_uid = status.vm_uid.clone().unwrap_or_default();
    let (Some(target_uri), Some(address), Some(target_dir), Some(target_node)) = (
        target.libvirt_uri.clone(),
        target.address.clone(),
        target.vm_dir.clone(),
        status.target_node.clone(),
    ) else {
        return Ok(Err(
            "the target reported no URI, address or directory".into()
        ));
    };
    let Some(source_dir) = layout::vm_dir(&ctx.engine.storage.state_dir, &vm_uid) else {
        return Ok(Err("the VM's uid is not a safe directory name".into()));
    };
    let (u, d) = (uri.to_owned(), domain.to_owned());
    let live = match tokio::task::spawn_blocking(move || ops::migratable_xml(&u, &d)).await? {
        Ok(x) => x,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let dest_xml = match super::xml::for_target(
        &live,
        &source_dir.to_string_lossy(),
        &target_dir,
        &target_node,
    ) {
        Ok(x) => x,
        Err(e) => return Ok(Err(e.to_string())),
    };
    Ok(Ok(Request {
        source_uri: uri.to_owned(),
        domain: domain.to_owned(),
        target_uri,
        target_address: address,
        dest_xml,
        copy_disks: live.contains("device='disk'") || live.contains("device=\"disk\""),
        bandwidth_mib: policy.bandwidth_mib_per_second,
        features: Features {
            auto_converge: policy.auto_converge,
            post_copy: policy.post_copy,
            compression: policy.compression,
        },
        paused: m.spec.restarts(),
    }))
}

/// What [`run`] ends with: the call's result, its time, why the policy stopped the job (if
/// it did) and whether it switched to post-copy.
type Ran = (
    Result<ops::Outcome, ops::OpError>,
    Duration,
    Option<Stopped>,
    bool,
);

/// The migrate call on a blocking thread, and beside it, every [`PROGRESS`], the job's
/// statistics: the policy applied to them and the progress reported.
async fn run(
    ctx: &Context,
    m: &VirtualMachineMigration,
    policy: &AppliedPolicy,
    req: Request,
) -> Result<Ran, Error> {
    let (uri, domain) = (req.source_uri.clone(), req.domain.clone());
    let started = Instant::now();
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    // Timed in the thread around the call (its connection included, as a `virsh migrate`
    // process's time includes its own): the loop below notices the end only between its
    // progress reports, which must not count as the migration's time.
    let mut job = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        (ops::migrate_falling_back(&req, &d), t.elapsed())
    });
    let mut stopped = None;
    let mut steer = Steering::default();
    // The first report a period after the start: a query at the very start (an interval's
    // first tick is immediate) only competes with the job's own start for the domain.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS, PROGRESS);
    let (result, call) = loop {
        tokio::select! {
            r = &mut job => break r?,
            _ = tick.tick() => {}
        }
        let stats = job_stats(&uri, &domain).await;
        steer.post_copy_refused |= dropped.load(Ordering::SeqCst);
        if stopped.is_none() {
            let now = (uri.as_str(), started, stats.as_ref());
            // A failed step is retried on the next tick; the job is never left unwatched.
            stopped = steer_job(ctx, m, policy, now, &mut steer)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(migration = m.name_any(), error = %e, "policy step failed");
                    None
                });
        }
        if let Some(s) = stats {
            report_progress(ctx, m, &s, steer.post_copy).await;
        }
    };
    Ok((result, call, stopped, steer.post_copy))
}

/// The source's final report of a job that ended: its state, libvirt's (or the policy's)
/// message and the call's time.
fn report(
    m: &VirtualMachineMigration,
    policy: &AppliedPolicy,
    (result, stopped): (Result<ops::Outcome, ops::OpError>, Option<Stopped>),
    call: Duration,
    post_copy: bool,
) -> Value {
    let elapsed = u64::try_from(call.as_millis()).unwrap_or(u64::MAX);
    match (result, stopped) {
        (Ok(outcome), _) => {
            tracing::info!(
                migration = m.name_any(),
                elapsed_ms = elapsed,
                post_copy,
                ?outcome,
                "live migration completed"
            );
            let mut done = json!({ "state": "Succeeded", "elapsedMilliseconds": elapsed, "postCopy": post_copy });
            if let ops::Outcome::CompletedWithoutPostCopy(why) = outcome {
                done["message"] = json!(format!(
                    "completed without post-copy, which the policy allows but QEMU refused \
                     ({why}): let QEMU use userfaultfd on both hosts (docs/migration-live.md)"
                ));
            }
            done
        }
        (Err(e), Some(Stopped::Cancelled)) => {
            json!({ "state": "Aborted", "message": format!("cancelled: {e}"), "elapsedMilliseconds": elapsed })
        }
        (Err(e), Some(Stopped::TimedOut)) => json!({
            "state": "Failed",
            "message": format!(
                "did not converge within the policy's {} s (auto-converge {}, post-copy {}), aborted: {e}",
                policy.completion_timeout_seconds,
                on_off(policy.auto_converge),
                on_off(policy.post_copy),
            ),
            "elapsedMilliseconds": elapsed,
        }),
        (Err(e), None) => {
            tracing::warn!(migration = m.name_any(), error = %e, "live migration failed");
            json!({ "state": "Failed", "message": e.to_string(), "elapsedMilliseconds": elapsed, "postCopy": post_copy })
        }
    }
}

/// A restart elsewhere, before the copy: shut the guest down (ACPI, destroyed after the VM's
/// `terminationGracePeriodSeconds`) and start it again paused, so the copy carries its disks
/// and a guest that never ran. `Err(why)` when that failed (the VM controller starts the
/// guest here again once the migration has ended).
async fn power_cycle_paused(
    ctx: &Context,
    m: &VirtualMachineMigration,
    uri: &str,
    domain: &str,
) -> Result<Result<(), String>, Error> {
    let api =
        Api::<VirtualMachine>::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let grace = api
        .get_opt(&m.spec.vm_name)
        .await?
        .map_or(60, |vm| vm.spec.termination_grace_period_seconds);
    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    let (u, d) = (uri.to_owned(), domain.to_owned());
    let off = tokio::task::spawn_blocking(move || cold::power_off(&u, &d, grace)).await?;
    let how = match off {
        Ok(how) => how,
        Err(e) => return Ok(Err(format!("shutting the guest down for the restart: {e}"))),
    };
    tracing::info!(
        migration = m.name_any(),
        ?how,
        "guest shut down for a restart elsewhere"
    );
    let (u, d) = (uri.to_owned(), domain.to_owned());
    let started = tokio::task::spawn_blocking(move || cold::start_paused(&u, &d)).await?;
    Ok(started.map_err(|e| format!("starting the guest paused for the copy: {e}")))
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The running job's statistics, when there is a job.
async fn job_stats(uri: &str, domain: &str) -> Option<ops::JobStats> {
    let (u, d) = (uri.to_owned(), domain.to_owned());
    match tokio::task::spawn_blocking(move || ops::job_stats(&u, &d, false)).await {
        Ok(Ok(s)) if s.active => Some(s),
        _ => None,
    }
}

/// Apply the policy to the running job: the downtime once, then the convergence verdict
/// (post-copy or abort), and a cancel. Returns why the job is being stopped, if it is.
async fn steer_job(
    ctx: &Context,
    m: &VirtualMachineMigration,
    policy: &AppliedPolicy,
    (uri, started, stats): (&str, Instant, Option<&ops::JobStats>),
    steer: &mut Steering,
) -> Result<Option<Stopped>, Error> {
    let (uri, domain) = (uri.to_owned(), domain_of(m));
    if let (Some(ms), Some(_), false) =
        (policy.max_downtime_milliseconds, stats, steer.downtime_set)
    {
        let (u, d) = (uri.clone(), domain.clone());
        let r = tokio::task::spawn_blocking(move || ops::set_max_downtime(&u, &d, ms)).await?;
        tracing::info!(migration = m.name_any(), ms, result = ?r, "maximum downtime set");
        steer.downtime_set = true;
    }
    if cancelled(ctx, m).await {
        abort(m, &uri, &domain).await?;
        return Ok(Some(Stopped::Cancelled));
    }
    let seen = converge::Seen {
        elapsed: started.elapsed(),
        iteration: stats.map_or(0, |s| s.iteration),
        post_copy: steer.post_copy,
    };
    let policy = AppliedPolicy {
        post_copy: policy.post_copy && !steer.post_copy_refused,
        ..policy.clone()
    };
    match converge::decide(&policy, seen) {
        Verdict::Continue => Ok(None),
        Verdict::Abort => {
            abort(m, &uri, &domain).await?;
            Ok(Some(Stopped::TimedOut))
        }
        Verdict::StartPostCopy => {
            let (u, d) = (uri, domain);
            let r = tokio::task::spawn_blocking(move || ops::start_post_copy(&u, &d)).await?;
            tracing::info!(migration = m.name_any(), result = ?r, "the copy does not converge: switching to post-copy");
            // A refused switch is not retried: the timeout then aborts the job.
            steer.post_copy = r.is_ok();
            steer.post_copy_refused = r.is_err();
            if let Err(e) = r {
                tracing::warn!(migration = m.name_any(), error = %e, "post-copy refused");
            }
            Ok(None)
        }
    }
}

async fn abort(m: &VirtualMachineMigration, uri: &str, domain: &str) -> Result<(), Error> {
    let (u, d) = (uri.to_owned(), domain.to_owned());
    let aborted = tokio::task::spawn_blocking(move || ops::abort_job(&u, &d)).await?;
    tracing::info!(
        migration = m.name_any(),
        ?aborted,
        "aborting the migration job"
    );
    Ok(())
}

/// Whether the migration was deleted (cancel).
async fn cancelled(ctx: &Context, m: &VirtualMachineMigration) -> bool {
    let api = Api::<VirtualMachineMigration>::namespaced(
        ctx.client.clone(),
        &m.namespace().unwrap_or_default(),
    );
    match api.get_opt(&m.name_any()).await {
        Ok(Some(now)) => now.uid() != m.uid() || now.metadata.deletion_timestamp.is_some(),
        Ok(None) => true,
        // The API unreachable is no cancel: QEMU goes on.
        Err(_) => false,
    }
}

async fn report_progress(
    ctx: &Context,
    m: &VirtualMachineMigration,
    s: &ops::JobStats,
    post_copy: bool,
) {
    let mut p = MigrationProgress {
        memory_total_bytes: s.mem_total,
        memory_remaining_bytes: s.mem_remaining,
        memory_bytes_per_second: s.mem_bps,
        iteration: s.iteration,
        dirty_pages_per_second: s.dirty_rate,
        disk_total_bytes: s.disk_total,
        disk_remaining_bytes: s.disk_remaining,
        percent: String::new(),
    };
    p.percent = format!("{}%", p.percent_done());
    let body = json!({ "source": { "state": "Running", "progress": p, "postCopy": post_copy } });
    if let Err(e) = patch_status(ctx, m, body).await {
        tracing::debug!(error = %e, "progress not reported");
    }
}

/// A job reported running that this process does not run (the agent restarted during it):
/// decide from libvirt what became of it.
async fn settle_orphan(
    ctx: &Context,
    config: &Config,
    m: &VirtualMachineMigration,
) -> Result<(), Error> {
    let domain = domain_of(m);
    let (u, d) = (config.libvirt_uri.clone(), domain.clone());
    let here = tokio::task::spawn_blocking(move || ops::job_stats(&u, &d, false)).await?;
    let report = match here {
        // libvirtd still runs the job it was given; it outlives the agent. Wait for it.
        Ok(s) if s.active => return Ok(()),
        Ok(_) => {
            json!({ "state": "Failed", "message": "the agent restarted during the migration; the VM still runs on its source" })
        }
        Err(_) => {
            let target_uri = m
                .status
                .as_ref()
                .and_then(|s| s.target.as_ref())
                .and_then(|t| t.libvirt_uri.clone());
            let running_there = match target_uri {
                Some(t) => tokio::task::spawn_blocking(move || ops::is_running(&t, &domain))
                    .await?
                    .unwrap_or(false),
                None => false,
            };
            if running_there {
                json!({ "state": "Succeeded" })
            } else {
                json!({ "state": "Failed", "message": "the domain is neither here nor running on the target" })
            }
        }
    };
    patch_status(ctx, m, json!({ "source": report })).await
}

/// After a completed migration: remove the VM's directory here once the API confirms, by
/// uid, that the VM is placed on the target and reported running there, and no domain of it
/// is left here.
async fn remove_source_copy(
    ctx: &Context,
    config: &Config,
    m: &VirtualMachineMigration,
) -> Result<(), Error> {
    let status = m.status.clone().unwrap_or_default();
    let (Some(uid), Some(target)) = (status.vm_uid, status.target_node) else {
        return Ok(());
    };
    let storage = &ctx.engine.storage;
    let Some(vm_dir) = layout::vm_dir(&storage.state_dir, &uid) else {
        return Ok(());
    };
    if !tokio::fs::try_exists(&vm_dir).await? {
        return Ok(());
    }
    let api =
        Api::<VirtualMachine>::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let Some(vm) = api.get_opt(&m.spec.vm_name).await? else {
        return Ok(());
    };
    let vs = vm.status.clone().unwrap_or_default();
    // Not while another migration holds the VM: it may be bringing it back here, into
    // this very directory.
    let confirmed = vm.metadata.uid.as_deref() == Some(uid.as_str())
        && vs.node_name.as_deref() == Some(target.as_str())
        && vs.phase == Some(Phase::Running)
        && !crate::reconcile::controller::migrating(&vm)
        && !tokio::fs::try_exists(vm_dir.join(super::target::INCOMING_MARKER)).await?;
    let (u, d) = (config.libvirt_uri.clone(), domain_of(m));
    let here = tokio::task::spawn_blocking(move || ops::is_running(&u, &d))
        .await?
        .unwrap_or(true);
    if confirmed && !here && crate::reconcile::release::moved_dir_free(ctx, &vm).await? {
        tracing::info!(
            migration = m.name_any(),
            uid,
            "the VM runs on {target}: removing its directory here"
        );
        storage.remove_vm(&uid).await?;
    }
    Ok(())
}
