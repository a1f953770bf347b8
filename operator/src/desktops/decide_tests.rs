//! The pool's decisions, one situation each.

use std::time::Duration;

use ironvisor_crds::console::ConsoleStatus;
use ironvisor_crds::desktop::{Assignment, ClaimPhase, desktop_reason};
use ironvisor_crds::vm::Phase;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::decide::{Step, decide, idle_since};
use super::view::{Claim, Clean, Desktop, PoolFacts, Reset};

fn pool(assignment: Assignment, size: u32, min_spare: u32) -> PoolFacts {
    PoolFacts {
        assignment,
        size,
        min_spare,
        max_per_user: 1,
        idle_timeout: None,
        invalid: None,
    }
}

fn at(s: &str) -> Timestamp {
    format!("2026-11-30T{s}Z").parse().unwrap()
}

/// A placed, running desktop; Floating-ready (its clean snapshot taken).
fn spare(name: &str) -> Desktop {
    Desktop {
        name: name.into(),
        claim: None,
        owner: None,
        dirty: false,
        halted: false,
        phase: Some(Phase::Running),
        placed: true,
        refused: None,
        bound_at: None,
        started_at: Some(at("09:00:00")),
        console: None,
        clean: Clean::Ready,
        reset: Reset::None,
        deleting: false,
    }
}

fn bound(name: &str, claim: &Claim) -> Desktop {
    Desktop {
        claim: Some((claim.name.clone(), claim.uid.clone())),
        bound_at: Some(at("10:00:00")),
        ..spare(name)
    }
}

fn claim(name: &str, user: &str, created: &str) -> Claim {
    Claim {
        name: name.into(),
        uid: format!("uid-{name}"),
        user: user.into(),
        created: at(created),
        phase: ClaimPhase::Pending,
        vm_name: None,
    }
}

fn binds(steps: &[Step]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Bind { vm, claim, .. } => Some((claim.clone(), vm.clone())),
            _ => None,
        })
        .collect()
}

fn creates(steps: &[Step]) -> usize {
    steps.iter().filter(|s| **s == Step::Create).count()
}

#[test]
fn an_empty_pool_creates_its_spares() {
    let plan = decide(&pool(Assignment::Dedicated, 3, 1), &[], &[], at("10:00:00"));
    assert_eq!(creates(&plan.steps), 1);
    assert_eq!(plan.pool.reason, desktop_reason::PROVISIONING);
}

#[test]
fn two_users_get_distinct_desktops_and_the_spares_are_replenished() {
    let claims = [
        claim("a", "alice", "10:00:00"),
        claim("b", "bob", "10:00:01"),
    ];
    let plan = decide(
        &pool(Assignment::Dedicated, 3, 1),
        &[spare("d1"), spare("d2")],
        &claims,
        at("10:00:02"),
    );
    assert_eq!(
        binds(&plan.steps),
        [("a".into(), "d1".into()), ("b".into(), "d2".into())]
    );
    assert_eq!(creates(&plan.steps), 1, "one spare again: {:?}", plan.steps);
    assert!(plan.claims.iter().all(|c| c.phase == ClaimPhase::Bound));
}

#[test]
fn a_started_spare_is_given_before_a_stopped_one() {
    let stopped = Desktop {
        halted: true,
        phase: Some(Phase::Stopped),
        ..spare("a-stopped")
    };
    let plan = decide(
        &pool(Assignment::Dedicated, 3, 0),
        &[stopped, spare("z-running")],
        &[claim("c", "alice", "10:00:00")],
        at("10:00:01"),
    );
    assert_eq!(binds(&plan.steps), [("c".into(), "z-running".into())]);
}

#[test]
fn a_stopped_spare_given_to_a_claim_is_started() {
    let stopped = Desktop {
        halted: true,
        phase: Some(Phase::Stopped),
        ..spare("d1")
    };
    let plan = decide(
        &pool(Assignment::Dedicated, 1, 0),
        &[stopped],
        &[claim("c", "alice", "10:00:00")],
        at("10:00:01"),
    );
    assert!(
        plan.steps.contains(&Step::Start("d1".into())),
        "{:?}",
        plan.steps
    );
}

#[test]
fn a_dedicated_user_gets_their_own_desktop_back() {
    let mine = Desktop {
        owner: Some("alice".into()),
        halted: true,
        ..spare("d-alice")
    };
    let plan = decide(
        &pool(Assignment::Dedicated, 3, 0),
        &[spare("d-free"), mine],
        &[claim("again", "alice", "11:00:00")],
        at("11:00:01"),
    );
    assert_eq!(binds(&plan.steps), [("again".into(), "d-alice".into())]);
    assert!(plan.steps.contains(&Step::Start("d-alice".into())));
}

#[test]
fn another_users_dedicated_desktop_is_never_given_away() {
    let bobs = Desktop {
        owner: Some("bob".into()),
        ..spare("d-bob")
    };
    let plan = decide(
        &pool(Assignment::Dedicated, 1, 0),
        &[bobs],
        &[claim("c", "alice", "10:00:00")],
        at("10:00:01"),
    );
    assert!(binds(&plan.steps).is_empty());
    assert_eq!(plan.claims[0].phase, ClaimPhase::Pending);
    assert_eq!(plan.claims[0].reason, desktop_reason::POOL_FULL);
    assert_eq!(plan.pool.reason, desktop_reason::POOL_FULL);
}

#[test]
fn a_claim_beyond_the_per_user_limit_fails() {
    let first = claim("first", "alice", "10:00:00");
    let plan = decide(
        &pool(Assignment::Dedicated, 3, 0),
        &[bound("d1", &first), spare("d2")],
        &[first.clone(), claim("second", "alice", "10:05:00")],
        at("10:06:00"),
    );
    let second = plan.claims.iter().find(|c| c.name == "second").unwrap();
    assert_eq!(second.phase, ClaimPhase::Failed);
    assert_eq!(second.reason, desktop_reason::PER_USER_LIMIT);
    assert!(binds(&plan.steps).is_empty());
}

#[test]
fn a_waiting_claim_makes_a_desktop_but_never_beyond_size() {
    let a = claim("a", "alice", "10:00:00");
    let plan = decide(
        &pool(Assignment::Dedicated, 2, 0),
        &[bound("d1", &a)],
        &[
            a.clone(),
            claim("b", "bob", "10:00:01"),
            claim("c", "carol", "10:00:02"),
        ],
        at("10:00:03"),
    );
    assert_eq!(creates(&plan.steps), 1, "{:?}", plan.steps);
}

#[test]
fn a_desktop_refused_by_quota_stops_growth_and_the_pool_says_why() {
    let refused = Desktop {
        placed: false,
        phase: Some(Phase::Pending),
        refused: Some("exceeded quota: q, requested: virtualMachines=1".into()),
        ..spare("d2")
    };
    let plan = decide(
        &pool(Assignment::Dedicated, 5, 2),
        &[spare("d1"), refused],
        &[
            claim("a", "alice", "10:00:00"),
            claim("b", "bob", "10:00:01"),
        ],
        at("10:00:02"),
    );
    assert_eq!(creates(&plan.steps), 0);
    assert_eq!(plan.pool.reason, desktop_reason::QUOTA_EXCEEDED);
    assert!(
        plan.pool.message.contains("exceeded quota: q"),
        "{}",
        plan.pool.message
    );
    let waiting = plan.claims.iter().find(|c| c.name == "b").unwrap();
    assert_eq!(waiting.reason, desktop_reason::QUOTA_EXCEEDED);
}

#[test]
fn a_released_floating_desktop_is_halted_marked_and_then_reset() {
    let gone = claim("gone", "alice", "10:00:00");
    let plan = decide(
        &pool(Assignment::Floating, 1, 1),
        &[bound("d1", &gone)],
        &[],
        at("10:10:00"),
    );
    assert!(plan.steps.contains(&Step::Unbind {
        vm: "d1".into(),
        reset: true
    }));
    let marked = Desktop {
        dirty: true,
        halted: true,
        ..spare("d1")
    };
    let plan = decide(
        &pool(Assignment::Floating, 1, 1),
        std::slice::from_ref(&marked),
        &[],
        at("10:10:05"),
    );
    assert_eq!(plan.steps, [Step::Reset("d1".into())]);
    assert_eq!(
        creates(&plan.steps),
        0,
        "the reset desktop will be the spare"
    );
    let done = Desktop {
        reset: Reset::Succeeded,
        ..marked
    };
    let plan = decide(
        &pool(Assignment::Floating, 1, 1),
        &[done],
        &[],
        at("10:10:30"),
    );
    assert_eq!(plan.steps, [Step::FinishReset("d1".into())]);
}

#[test]
fn a_dirty_floating_desktop_is_never_given_out() {
    let dirty = Desktop {
        dirty: true,
        halted: true,
        reset: Reset::InProgress,
        ..spare("d1")
    };
    let plan = decide(
        &pool(Assignment::Floating, 1, 0),
        &[dirty],
        &[claim("c", "bob", "10:00:00")],
        at("10:00:01"),
    );
    assert!(binds(&plan.steps).is_empty());
    assert_eq!(plan.pool.reason, desktop_reason::PROVISIONING);
}

#[test]
fn a_new_floating_desktop_gets_its_clean_snapshot_once_it_runs() {
    let new = Desktop {
        clean: Clean::Missing,
        ..spare("d1")
    };
    let booting = Desktop {
        phase: Some(Phase::Starting),
        clean: Clean::Missing,
        ..spare("d2")
    };
    let plan = decide(
        &pool(Assignment::Floating, 2, 2),
        &[new, booting],
        &[],
        at("10:00:00"),
    );
    assert_eq!(plan.steps, [Step::Snapshot("d1".into())]);
    assert_eq!(plan.pool.spare, 2);
}

#[test]
fn an_idle_bound_desktop_is_powered_off_and_its_claim_released() {
    let c = Claim {
        phase: ClaimPhase::Bound,
        vm_name: Some("d1".into()),
        ..claim("c", "alice", "09:59:00")
    };
    let mut p = pool(Assignment::Dedicated, 1, 0);
    p.idle_timeout = Some(Duration::from_secs(600));
    let d = bound("d1", &c);
    let early = decide(
        &p,
        std::slice::from_ref(&d),
        std::slice::from_ref(&c),
        at("10:05:00"),
    );
    assert!(!early.steps.contains(&Step::Stop("d1".into())));
    assert_eq!(early.requeue, Some(Duration::from_secs(300)));
    let late = decide(
        &p,
        std::slice::from_ref(&d),
        std::slice::from_ref(&c),
        at("10:10:00"),
    );
    assert!(late.steps.contains(&Step::Stop("d1".into())));
    assert_eq!(late.claims[0].phase, ClaimPhase::Released);
    assert_eq!(late.claims[0].reason, desktop_reason::IDLE_TIMEOUT);
    // A console connected keeps it on, however long.
    let connected = Desktop {
        console: Some(ConsoleStatus {
            active_connections: 1,
            ..ConsoleStatus::default()
        }),
        ..d
    };
    let plan = decide(&p, &[connected], &[c], at("12:00:00"));
    assert!(!plan.steps.contains(&Step::Stop("d1".into())));
}

#[test]
fn idle_time_counts_from_the_latest_binding_start_or_disconnection() {
    let d = Desktop {
        bound_at: Some(at("10:00:00")),
        started_at: Some(at("09:00:00")),
        console: Some(ConsoleStatus {
            active_connections: 0,
            last_connected_time: Some(Time(at("10:01:00"))),
            last_disconnected_time: Some(Time(at("10:30:00"))),
        }),
        ..spare("d")
    };
    assert_eq!(idle_since(&d), Some(at("10:30:00")));
}

#[test]
fn a_claim_whose_desktop_was_deleted_is_released() {
    let c = Claim {
        phase: ClaimPhase::Bound,
        vm_name: Some("d-gone".into()),
        ..claim("c", "alice", "10:00:00")
    };
    let plan = decide(
        &pool(Assignment::Dedicated, 2, 0),
        &[],
        &[c],
        at("10:01:00"),
    );
    assert_eq!(plan.claims[0].phase, ClaimPhase::Released);
    assert_eq!(plan.claims[0].reason, desktop_reason::DESKTOP_DELETED);
}

#[test]
fn a_released_claim_never_binds_again() {
    let c = Claim {
        phase: ClaimPhase::Released,
        ..claim("c", "alice", "10:00:00")
    };
    let plan = decide(
        &pool(Assignment::Dedicated, 2, 0),
        &[spare("d1")],
        &[c],
        at("10:01:00"),
    );
    assert!(binds(&plan.steps).is_empty());
    assert!(plan.claims.is_empty(), "its status stays as written");
}

#[test]
fn spares_beyond_min_spare_are_stopped_and_beyond_size_deleted() {
    let plan = decide(
        &pool(Assignment::Dedicated, 2, 1),
        &[spare("d1"), spare("d2"), spare("d3")],
        &[],
        at("10:00:00"),
    );
    assert!(
        plan.steps.contains(&Step::Delete("d3".into())),
        "{:?}",
        plan.steps
    );
    assert!(
        plan.steps.contains(&Step::Stop("d2".into())),
        "{:?}",
        plan.steps
    );
    assert!(!plan.steps.contains(&Step::Stop("d1".into())));
}

#[test]
fn a_floating_pool_without_disks_is_invalid_and_makes_nothing() {
    let mut p = pool(Assignment::Floating, 2, 1);
    p.invalid = Some("needs a disk".into());
    let plan = decide(&p, &[], &[], at("10:00:00"));
    assert_eq!(creates(&plan.steps), 0);
    assert_eq!(plan.pool.reason, desktop_reason::INVALID_TEMPLATE);
}
