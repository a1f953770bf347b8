//! Follows `VirtualMachineSchedule`s: makes a snapshot or backup when one is due (named after
//! the schedule and the time, labelled with the schedule's uid), prunes what the schedule
//! made beyond its retention, and records when the next one is due. Pruning lists by the
//! label and deletes only objects whose label is this very schedule's uid: never one a
//! person made, nor one of a deleted namesake schedule. Only the leader writes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::backup::{BackupPhase, VirtualMachineBackup, VirtualMachineBackupSpec};
use ironvisor_crds::schedule::{
    SCHEDULE_UID_LABEL, ScheduleAction, VirtualMachineSchedule, VirtualMachineScheduleStatus,
    schedule_reason,
};
use ironvisor_crds::snapshot::{SnapshotPhase, VirtualMachineSnapshot, VirtualMachineSnapshotSpec};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt};

use super::metrics::{ScheduleMetrics, action_label};
use super::plan::{Made, PlanError, Schedule, object_name, parse_max_age, prune};
use crate::leader::Leadership;
use crate::status_write::{self, set_ready};

/// Longest pause between two looks at a schedule (age-based pruning needs a clock).
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// What the schedule controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader writes.
    pub leadership: Leadership,
    /// Objects made and pruned.
    pub metrics: ScheduleMetrics,
    /// Events on schedules (`Made`, `Pruned`).
    pub recorder: Recorder,
}

/// A Normal Event on the schedule; a failure to publish is logged, never fatal.
async fn publish(ctx: &Ctx, s: &VirtualMachineSchedule, reason: &str, note: String) {
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "Schedule".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &s.object_ref(&())).await {
        tracing::warn!(schedule = %s.name_any(), error = %e, "publishing an event failed");
    }
}

/// Why a schedule step failed (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
}

fn labels(uid: &str) -> std::collections::BTreeMap<String, String> {
    [(SCHEDULE_UID_LABEL.to_owned(), uid.to_owned())].into()
}

/// Make the object due at `t`; an object of that name made already is fine.
async fn make(ctx: &Ctx, s: &VirtualMachineSchedule, t: Timestamp) -> Result<String, Error> {
    let ns = s.namespace().unwrap_or_default();
    let uid = s.uid().unwrap_or_default();
    let name = object_name(&s.name_any(), t);
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        labels: Some(labels(&uid)),
        ..ObjectMeta::default()
    };
    let pp = PostParams::default();
    let made = match s.spec.action {
        ScheduleAction::Snapshot => {
            let obj = VirtualMachineSnapshot {
                metadata: meta,
                spec: VirtualMachineSnapshotSpec {
                    vm_name: s.spec.vm_name.clone(),
                    retain_policy: Default::default(),
                    freeze: Default::default(),
                },
                status: None,
            };
            Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns)
                .create(&pp, &obj)
                .await
                .map(|_| ())
        }
        ScheduleAction::Backup => {
            let obj = VirtualMachineBackup {
                metadata: meta,
                spec: VirtualMachineBackupSpec {
                    vm_name: Some(s.spec.vm_name.clone()),
                    snapshot_name: None,
                    location: s.spec.location.clone().unwrap_or_default(),
                },
                status: None,
            };
            Api::<VirtualMachineBackup>::namespaced(ctx.client.clone(), &ns)
                .create(&pp, &obj)
                .await
                .map(|_| ())
        }
    };
    match made {
        Ok(()) => Ok(name),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(name),
        Err(e) => Err(e.into()),
    }
}

/// What this schedule made, as pruning sees it (confirmed by the label's value).
async fn made_by(ctx: &Ctx, s: &VirtualMachineSchedule) -> Result<Vec<Made>, Error> {
    let ns = s.namespace().unwrap_or_default();
    let uid = s.uid().unwrap_or_default();
    let lp = ListParams::default().labels(&format!("{SCHEDULE_UID_LABEL}={uid}"));
    let ours =
        |l: &std::collections::BTreeMap<String, String>| l.get(SCHEDULE_UID_LABEL) == Some(&uid);
    let created = |m: &ObjectMeta| {
        m.creation_timestamp
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    };
    let out = match s.spec.action {
        ScheduleAction::Snapshot => {
            Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns)
                .list(&lp)
                .await?
                .items
                .into_iter()
                .filter(|o| ours(o.labels()) && o.metadata.deletion_timestamp.is_none())
                .map(|o| Made {
                    name: o.name_any(),
                    created: created(&o.metadata),
                    finished: o.status.as_ref().is_some_and(|st| st.phase.is_terminal()),
                    succeeded: o
                        .status
                        .as_ref()
                        .is_some_and(|st| st.phase == SnapshotPhase::Succeeded),
                })
                .collect()
        }
        ScheduleAction::Backup => Api::<VirtualMachineBackup>::namespaced(ctx.client.clone(), &ns)
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter(|o| ours(o.labels()) && o.metadata.deletion_timestamp.is_none())
            .map(|o| Made {
                name: o.name_any(),
                created: created(&o.metadata),
                finished: o.status.as_ref().is_some_and(|st| st.phase.is_terminal()),
                succeeded: o
                    .status
                    .as_ref()
                    .is_some_and(|st| st.phase == BackupPhase::Succeeded),
            })
            .collect(),
    };
    Ok(out)
}

async fn delete(ctx: &Ctx, s: &VirtualMachineSchedule, name: &str) -> Result<(), Error> {
    let ns = s.namespace().unwrap_or_default();
    let dp = DeleteParams::default();
    let r = match s.spec.action {
        ScheduleAction::Snapshot => {
            Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns)
                .delete(name, &dp)
                .await
                .map(|_| ())
        }
        ScheduleAction::Backup => Api::<VirtualMachineBackup>::namespaced(ctx.client.clone(), &ns)
            .delete(name, &dp)
            .await
            .map(|_| ()),
    };
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map_err(Error::from),
    }
}

async fn write(
    ctx: &Ctx,
    s: &VirtualMachineSchedule,
    st: &VirtualMachineScheduleStatus,
) -> Result<(), Error> {
    status_write::apply(&ctx.client, s, st).await?;
    Ok(())
}

fn ready(
    st: &mut VirtualMachineScheduleStatus,
    ok: bool,
    reason: &str,
    msg: String,
    generation: Option<i64>,
) {
    st.observed_generation = generation;
    set_ready(&mut st.conditions, ok, reason, msg, generation);
}

/// The parsed schedule and maximum age.
fn parse(
    s: &VirtualMachineSchedule,
) -> Result<(Schedule, Option<jiff::SignedDuration>), PlanError> {
    let cron = Schedule::parse(&s.spec.schedule)?;
    let age = s
        .spec
        .retention
        .max_age
        .as_deref()
        .map(parse_max_age)
        .transpose()?;
    Ok((cron, age))
}

async fn reconcile(s: Arc<VirtualMachineSchedule>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() || s.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut st = s.status.clone().unwrap_or_default();
    let generation = s.metadata.generation;
    let (cron, max_age) = match parse(&s) {
        Ok(p) => p,
        Err(e) => {
            ready(
                &mut st,
                false,
                schedule_reason::INVALID_SCHEDULE,
                e.to_string(),
                generation,
            );
            st.next_schedule_time = None;
            write(&ctx, &s, &st).await?;
            return Ok(Action::await_change());
        }
    };
    let now = Timestamp::now();
    let since = st
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or(s.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    if !s.spec.suspend
        && let Some(due) = cron.due(since, now)
    {
        let name = make(&ctx, &s, due).await?;
        tracing::info!(schedule = %s.name_any(), made = name, "scheduled {:?} made", s.spec.action);
        let action = action_label(s.spec.action);
        ctx.metrics.made.with_label_values(&[action]).inc();
        let note = format!("{action} {name} of VM {} made", s.spec.vm_name);
        publish(&ctx, &s, "Made", note).await;
        st.last_schedule_time = Some(Time(due));
        st.last_created = Some(name);
    }
    let made = made_by(&ctx, &s).await?;
    let doomed = prune(&made, s.spec.retention.keep_last, max_age, now);
    for name in &doomed {
        delete(&ctx, &s, name).await?;
        tracing::info!(schedule = %s.name_any(), pruned = name, "pruned by retention");
        let action = action_label(s.spec.action);
        ctx.metrics.pruned.with_label_values(&[action]).inc();
        publish(
            &ctx,
            &s,
            "Pruned",
            format!("{action} {name} deleted by retention"),
        )
        .await;
    }
    st.pruned += doomed.len() as u64;
    st.kept = u32::try_from(made.len() - doomed.len()).unwrap_or(u32::MAX);
    let next = cron.next_after(now);
    st.next_schedule_time = next.map(Time);
    let (reason, msg) = if s.spec.suspend {
        (
            schedule_reason::SUSPENDED,
            "suspended: nothing new is made".to_owned(),
        )
    } else {
        (
            schedule_reason::SCHEDULED,
            format!(
                "{:?} of VM {} on \"{}\" (UTC)",
                s.spec.action, s.spec.vm_name, s.spec.schedule
            ),
        )
    };
    ready(&mut st, true, reason, msg, generation);
    if s.status.as_ref() != Some(&st) {
        write(&ctx, &s, &st).await?;
    }
    let pause = next
        .map(|n| n.duration_since(now).unsigned_abs() + Duration::from_millis(200))
        .unwrap_or(MAX_PAUSE)
        .min(MAX_PAUSE);
    // Objects still in progress are pruned once they finish: look again soon while any is.
    let busy = made.iter().any(|m| !m.finished);
    Ok(Action::requeue(if busy {
        pause.min(Duration::from_secs(5))
    } else {
        pause
    }))
}

fn error_policy(s: Arc<VirtualMachineSchedule>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(schedule = %s.name_any(), error = %e, "schedule step failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Run until the process ends; every schedule is looked at again when this replica leads.
pub async fn run(ctx: Ctx) {
    let api = Api::<VirtualMachineSchedule>::all(ctx.client.clone());
    let leads = ctx.leadership.terms();
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(leads)
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|_| futures::future::ready(()))
        .await;
}
