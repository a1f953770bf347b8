//! The pool's next steps, decided from its desktops and claims (pure: no I/O, no clock).
//!
//! Claims are served oldest first: a claim keeps the desktop labelled with its name and uid;
//! a Dedicated user gets back the desktop they own; anyone else gets a spare (a started one
//! first). Spares are created up to `minSpare` plus the claims still waiting, never beyond
//! `size`, and not at all while a desktop of the pool is refused by quota (another would be
//! refused too). A Floating desktop released by its claim is halted, returned to its clean
//! snapshot by a restore, and becomes a spare again.

use std::collections::BTreeMap;
use std::time::Duration;

use ironvisor_crds::desktop::{Assignment, ClaimPhase, desktop_reason};
use jiff::Timestamp;

use super::view::{Claim, Clean, Desktop, PoolFacts, Reset};

/// One change to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create a new desktop from the template (started).
    Create,
    /// Label `vm` as bound to the claim (Dedicated: owned by its user as well).
    Bind {
        /// The desktop.
        vm: String,
        /// The claim's name.
        claim: String,
        /// The claim's uid.
        uid: String,
        /// The claim's user.
        user: String,
    },
    /// Remove the claim's label; Floating (`reset`): halt the desktop and mark it for reset.
    Unbind {
        /// The desktop.
        vm: String,
        /// Whether it returns to its clean snapshot before it serves again.
        reset: bool,
    },
    /// Set the desktop's runStrategy to Always.
    Start(String),
    /// Set the desktop's runStrategy to Halted.
    Stop(String),
    /// Take the desktop's clean snapshot.
    Snapshot(String),
    /// Create the restore that returns the desktop to its clean snapshot.
    Reset(String),
    /// The reset is done: delete the restore and clear the mark.
    FinishReset(String),
    /// The reset failed: delete the restore so that it is tried again.
    RetryReset(String),
    /// Delete a desktop no claim holds and no user owns.
    Delete(String),
}

/// What a claim's status should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimOutcome {
    /// The claim's name.
    pub name: String,
    /// Its phase.
    pub phase: ClaimPhase,
    /// Its desktop, when bound.
    pub vm: Option<String>,
    /// The Ready condition's reason.
    pub reason: &'static str,
    /// The Ready condition's message.
    pub message: String,
}

/// The pool's counts and Ready condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolOutcome {
    /// Desktops that exist.
    pub total: u32,
    /// Clean, unassigned desktops (ready or being prepared).
    pub spare: u32,
    /// Desktops bound to a claim.
    pub claimed: u32,
    /// Desktops whose guest runs.
    pub running: u32,
    /// Ready's reason.
    pub reason: &'static str,
    /// Ready's message.
    pub message: String,
}

/// Everything one pass decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes, in order.
    pub steps: Vec<Step>,
    /// Every live claim's status.
    pub claims: Vec<ClaimOutcome>,
    /// The pool's status.
    pub pool: PoolOutcome,
    /// Look again after this long at the latest (an idle deadline, or work in progress).
    pub requeue: Option<Duration>,
}

/// How soon a pool with work in progress is looked at again.
pub const BUSY: Duration = Duration::from_secs(5);

/// When a bound, running desktop became idle: the latest of its binding, its guest's start
/// and its last console disconnection; `None` while a console is connected.
pub fn idle_since(d: &Desktop) -> Option<Timestamp> {
    let console = d.console.clone().unwrap_or_default();
    if console.active_connections > 0 {
        return None;
    }
    [
        d.bound_at,
        d.started_at,
        console.last_disconnected_time.map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// Bound desktops and what their claims need: (claim name → desktop name).
fn bindings(
    desktops: &[Desktop],
    claims: &[Claim],
    plan: &mut Plan,
    reset: bool,
) -> BTreeMap<String, String> {
    let mut bound = BTreeMap::new();
    for d in desktops {
        let Some((name, uid)) = &d.claim else {
            continue;
        };
        let live = claims
            .iter()
            .any(|c| &c.name == name && &c.uid == uid && !c.phase.is_terminal());
        if live && !d.deleting {
            bound.insert(name.clone(), d.name.clone());
        } else if !d.deleting {
            plan.steps.push(Step::Unbind {
                vm: d.name.clone(),
                reset,
            });
        }
    }
    bound
}

/// Decide the pool's next steps at `now`.
pub fn decide(pool: &PoolFacts, desktops: &[Desktop], claims: &[Claim], now: Timestamp) -> Plan {
    let floating = pool.assignment == Assignment::Floating;
    let mut plan = Plan::default();
    let bound = bindings(desktops, claims, &mut plan, floating);
    let by_name: BTreeMap<&str, &Desktop> = desktops.iter().map(|d| (d.name.as_str(), d)).collect();
    let quota = desktops.iter().find_map(|d| d.refused.clone());
    resets(desktops, floating, &mut plan);

    let mut free: Vec<&Desktop> = desktops
        .iter()
        .filter(|d| d.unassigned() && d.usable(pool.assignment))
        .collect();
    // Started spares first, then by name: a claim is served without a boot when it can be.
    free.sort_by_key(|d| (!d.running(), d.halted, d.name.clone()));
    let mut taken: Vec<String> = Vec::new();
    let mut per_user: BTreeMap<String, u32> = BTreeMap::new();
    let mut waiting = 0u32;
    let mut ordered: Vec<&Claim> = claims.iter().collect();
    ordered.sort_by_key(|c| (c.created, c.name.clone()));
    for c in ordered {
        let served = serve(
            pool,
            c,
            &bound,
            &by_name,
            &mut free,
            &mut taken,
            &mut per_user,
            now,
            &mut plan,
        );
        if let Some(o) = served {
            waiting += u32::from(o.phase == ClaimPhase::Pending);
            plan.claims.push(o);
        }
    }
    grow(
        pool,
        desktops,
        &free,
        waiting,
        quota.as_deref(),
        &taken,
        &mut plan,
    );
    plan
}

/// Floating desktops waiting for their reset.
fn resets(desktops: &[Desktop], floating: bool, plan: &mut Plan) {
    for d in desktops
        .iter()
        .filter(|d| d.dirty && d.claim.is_none() && !d.deleting)
    {
        if !floating || d.clean != Clean::Ready {
            // Nothing to return to: a new desktop is made instead.
            plan.steps.push(Step::Delete(d.name.clone()));
            continue;
        }
        match &d.reset {
            Reset::None if !d.halted => plan.steps.push(Step::Stop(d.name.clone())),
            Reset::None => plan.steps.push(Step::Reset(d.name.clone())),
            Reset::InProgress => {}
            Reset::Succeeded => plan.steps.push(Step::FinishReset(d.name.clone())),
            Reset::Failed(_) => plan.steps.push(Step::RetryReset(d.name.clone())),
        }
        plan.requeue = Some(BUSY);
    }
}

fn outcome(
    c: &Claim,
    phase: ClaimPhase,
    vm: Option<String>,
    reason: &'static str,
    message: String,
) -> ClaimOutcome {
    ClaimOutcome {
        name: c.name.clone(),
        phase,
        vm,
        reason,
        message,
    }
}

/// One claim: keep, bind, or leave it waiting.
#[allow(clippy::too_many_arguments)]
fn serve(
    pool: &PoolFacts,
    c: &Claim,
    bound: &BTreeMap<String, String>,
    by_name: &BTreeMap<&str, &Desktop>,
    free: &mut Vec<&Desktop>,
    taken: &mut Vec<String>,
    per_user: &mut BTreeMap<String, u32>,
    now: Timestamp,
    plan: &mut Plan,
) -> Option<ClaimOutcome> {
    if c.phase.is_terminal() {
        // Released and Failed are final: the status already says why.
        return None;
    }
    if let Some(vm) = bound.get(&c.name) {
        *per_user.entry(c.user.clone()).or_default() += 1;
        let d = by_name[vm.as_str()];
        return Some(keep_bound(pool, c, d, now, plan));
    }
    if c.phase == ClaimPhase::Bound {
        let vm = c.vm_name.clone().unwrap_or_default();
        return Some(outcome(
            c,
            ClaimPhase::Released,
            c.vm_name.clone(),
            desktop_reason::DESKTOP_DELETED,
            format!("desktop {vm} was deleted or taken back; claim again for a desktop"),
        ));
    }
    let held = per_user.entry(c.user.clone()).or_default();
    if *held >= pool.max_per_user {
        return Some(outcome(
            c,
            ClaimPhase::Failed,
            None,
            desktop_reason::PER_USER_LIMIT,
            format!(
                "user {} already holds {} claim(s) in this pool, the most maxPerUser allows; \
                 release one and claim again",
                c.user, pool.max_per_user
            ),
        ));
    }
    *held += 1;
    let owned = by_name
        .values()
        .find(|d| {
            d.owner.as_deref() == Some(c.user.as_str())
                && d.claim.is_none()
                && !d.deleting
                && !taken.contains(&d.name)
        })
        .copied();
    let pick = match owned {
        Some(d) if pool.assignment == Assignment::Dedicated => Some(d),
        _ => (!free.is_empty()).then(|| free.remove(0)),
    };
    let Some(d) = pick else {
        return Some(outcome(
            c,
            ClaimPhase::Pending,
            None,
            desktop_reason::WAITING,
            "waiting for a desktop".into(),
        ));
    };
    taken.push(d.name.clone());
    plan.steps.push(Step::Bind {
        vm: d.name.clone(),
        claim: c.name.clone(),
        uid: c.uid.clone(),
        user: c.user.clone(),
    });
    if d.halted {
        plan.steps.push(Step::Start(d.name.clone()));
    }
    Some(bound_outcome(c, d))
}

/// A bound claim: its desktop runs until it has been idle for the pool's timeout.
fn keep_bound(
    pool: &PoolFacts,
    c: &Claim,
    d: &Desktop,
    now: Timestamp,
    plan: &mut Plan,
) -> ClaimOutcome {
    if let (Some(timeout), Some(since), true) =
        (pool.idle_timeout, idle_since(d), d.running() && !d.halted)
    {
        let idle = now.duration_since(since).unsigned_abs();
        if idle >= timeout {
            plan.steps.push(Step::Stop(d.name.clone()));
            return outcome(
                c,
                ClaimPhase::Released,
                Some(d.name.clone()),
                desktop_reason::IDLE_TIMEOUT,
                format!(
                    "desktop {} had no console connection for {}s (idleTimeout) and was powered \
                     off; claim again to get a desktop",
                    d.name,
                    idle.as_secs()
                ),
            );
        }
        let left = timeout - idle;
        plan.requeue = Some(plan.requeue.map_or(left, |r| r.min(left)));
    }
    if d.halted {
        plan.steps.push(Step::Start(d.name.clone()));
    }
    bound_outcome(c, d)
}

fn bound_outcome(c: &Claim, d: &Desktop) -> ClaimOutcome {
    outcome(
        c,
        ClaimPhase::Bound,
        Some(d.name.clone()),
        desktop_reason::BOUND,
        format!("bound to desktop {}", d.name),
    )
}

/// Spares: create, prepare, start, stop or delete desktops; the pool's counts and Ready.
fn grow(
    pool: &PoolFacts,
    desktops: &[Desktop],
    free: &[&Desktop],
    waiting: u32,
    quota: Option<&str>,
    taken: &[String],
    plan: &mut Plan,
) {
    let live: Vec<&Desktop> = desktops.iter().filter(|d| !d.deleting).collect();
    let total = live.len() as u32;
    let preparing: Vec<&Desktop> = live
        .iter()
        .filter(|d| {
            d.unassigned() && !d.dirty && !d.usable(pool.assignment) && !taken.contains(&d.name)
        })
        .copied()
        .collect();
    let spares = free.len() as u32 + preparing.len() as u32;
    let resetting = live.iter().filter(|d| d.dirty && d.claim.is_none()).count() as u32;
    let want = pool.min_spare + waiting;
    let room = pool.size.saturating_sub(total);
    let mut create = want.saturating_sub(spares + resetting).min(room);
    if quota.is_some() || pool.invalid.is_some() {
        create = 0;
    }
    plan.steps.extend((0..create).map(|_| Step::Create));
    prepare(pool, &preparing, plan);
    run_spares(pool, free, plan);
    // A pool made smaller: delete spares beyond its size, stopped ones first.
    let excess = total.saturating_sub(pool.size) as usize;
    let mut extra: Vec<&&Desktop> = free.iter().collect();
    extra.sort_by_key(|d| (d.running(), std::cmp::Reverse(d.name.clone())));
    plan.steps.extend(
        extra
            .into_iter()
            .take(excess)
            .map(|d| Step::Delete(d.name.clone())),
    );

    let claimed = plan
        .claims
        .iter()
        .filter(|c| c.phase == ClaimPhase::Bound)
        .count() as u32;
    let (reason, message) = if let Some(why) = &pool.invalid {
        (desktop_reason::INVALID_TEMPLATE, why.clone())
    } else if let Some(q) = quota {
        (
            desktop_reason::QUOTA_EXCEEDED,
            format!("the pool cannot grow: a desktop VM is not admitted: {q}"),
        )
    } else if let Some(msg) = live.iter().find_map(|d| match &d.reset {
        Reset::Failed(m) => Some(format!("the reset of desktop {} failed: {m}", d.name)),
        _ => None,
    }) {
        (desktop_reason::RESET_FAILED, msg)
    } else if waiting > 0 && room == 0 && create == 0 && resetting == 0 && preparing.is_empty() {
        (
            desktop_reason::POOL_FULL,
            format!(
                "all {} desktops are in use; {waiting} claim(s) wait for one to be released",
                pool.size
            ),
        )
    } else if waiting > 0 || create > 0 || !preparing.is_empty() || resetting > 0 {
        (
            desktop_reason::PROVISIONING,
            format!(
                "{} desktop(s) being prepared, {waiting} claim(s) waiting",
                create as usize + preparing.len() + resetting as usize
            ),
        )
    } else {
        (
            desktop_reason::READY,
            format!("{claimed} desktop(s) claimed, {spares} spare"),
        )
    };
    if reason != desktop_reason::READY {
        plan.requeue = Some(plan.requeue.map_or(BUSY, |r| r.min(BUSY)));
    }
    for c in plan
        .claims
        .iter_mut()
        .filter(|c| c.phase == ClaimPhase::Pending)
    {
        if matches!(
            reason,
            desktop_reason::QUOTA_EXCEEDED
                | desktop_reason::POOL_FULL
                | desktop_reason::INVALID_TEMPLATE
        ) {
            c.reason = reason;
            c.message = message.clone();
        }
    }
    plan.pool = PoolOutcome {
        total,
        spare: spares,
        claimed,
        running: live.iter().filter(|d| d.running()).count() as u32,
        reason,
        message,
    };
}

/// New desktops run (their disks come to exist) and, in a Floating pool, get their clean
/// snapshot once their guest runs.
fn prepare(pool: &PoolFacts, preparing: &[&Desktop], plan: &mut Plan) {
    for d in preparing {
        if d.halted {
            plan.steps.push(Step::Start(d.name.clone()));
        }
        if pool.assignment == Assignment::Floating && d.clean == Clean::Missing && d.running() {
            plan.steps.push(Step::Snapshot(d.name.clone()));
        }
    }
}

/// Keep `minSpare` of the free desktops started and the others stopped.
fn run_spares(pool: &PoolFacts, free: &[&Desktop], plan: &mut Plan) {
    for (i, d) in free.iter().enumerate() {
        let keep = (i as u32) < pool.min_spare;
        if keep && d.halted {
            plan.steps.push(Step::Start(d.name.clone()));
        } else if !keep && !d.halted {
            plan.steps.push(Step::Stop(d.name.clone()));
        }
    }
}
