//! What the source does with a copy that does not converge: the policy the operator wrote
//! into the migration's `status.policy` decides. Auto-converge is QEMU's own (a flag at the
//! start: it throttles the guest's vCPUs); past half the completion timeout, with one full
//! pass over memory done, a policy that allows post-copy switches to it; at the timeout the
//! job is aborted and the VM runs on here. Never left running for ever — except once in
//! post-copy, which cannot be aborted (the guest already runs on the target). Pure.

use std::time::Duration;

use ironvisor_crds::migration::VirtualMachineMigration;
use ironvisor_crds::migration_policy::{AppliedPolicy, DEFAULT_COMPLETION_TIMEOUT_PER_GIB};

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let QEMU go on.
    Continue,
    /// Switch to post-copy (`virDomainMigrateStartPostCopy`).
    StartPostCopy,
    /// Abort the job (`virDomainAbortJob`): the guest stays here.
    Abort,
}

/// The job as last seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Since the migrate call.
    pub elapsed: Duration,
    /// QEMU's pass over memory (2 and more: the first full copy is done).
    pub iteration: u64,
    /// The switch to post-copy was made.
    pub post_copy: bool,
}

/// The policy a migration runs by: the operator's `status.policy`, or (a migration admitted
/// by an operator before policies) its own spec's bandwidth and timeout.
pub fn policy_of(m: &VirtualMachineMigration) -> AppliedPolicy {
    if let Some(p) = m.status.as_ref().and_then(|s| s.policy.clone()) {
        return p;
    }
    AppliedPolicy {
        bandwidth_mib_per_second: m.spec.bandwidth_mib_per_second,
        completion_timeout_seconds: m
            .spec
            .completion_timeout_seconds
            .unwrap_or(DEFAULT_COMPLETION_TIMEOUT_PER_GIB),
        ..AppliedPolicy::default()
    }
}

/// The next action for a job that still runs.
pub fn decide(policy: &AppliedPolicy, seen: Seen) -> Verdict {
    if seen.post_copy {
        return Verdict::Continue;
    }
    let timeout = Duration::from_secs(policy.completion_timeout_seconds);
    if seen.elapsed >= timeout {
        return Verdict::Abort;
    }
    if policy.post_copy && seen.elapsed >= timeout / 2 && seen.iteration >= 2 {
        return Verdict::StartPostCopy;
    }
    Verdict::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(timeout: u64, post_copy: bool) -> AppliedPolicy {
        AppliedPolicy {
            completion_timeout_seconds: timeout,
            post_copy,
            ..AppliedPolicy::default()
        }
    }

    fn at(secs: u64, iteration: u64) -> Seen {
        Seen {
            elapsed: Duration::from_secs(secs),
            iteration,
            post_copy: false,
        }
    }

    #[test]
    fn without_post_copy_a_copy_runs_until_the_timeout_then_is_aborted() {
        let p = policy(20, false);
        assert_eq!(decide(&p, at(0, 0)), Verdict::Continue);
        assert_eq!(decide(&p, at(15, 9)), Verdict::Continue);
        assert_eq!(decide(&p, at(20, 9)), Verdict::Abort);
    }

    #[test]
    fn with_post_copy_it_switches_at_half_the_timeout_after_one_full_pass() {
        let p = policy(20, true);
        assert_eq!(decide(&p, at(9, 5)), Verdict::Continue);
        // Still in the first pass: post-copy would fetch nearly everything on demand.
        assert_eq!(decide(&p, at(10, 1)), Verdict::Continue);
        assert_eq!(decide(&p, at(10, 2)), Verdict::StartPostCopy);
        // The first pass never ended: abort at the timeout all the same.
        assert_eq!(decide(&p, at(20, 1)), Verdict::Abort);
    }

    #[test]
    fn once_in_post_copy_nothing_aborts_it() {
        let p = policy(20, true);
        let s = Seen {
            post_copy: true,
            ..at(500, 9)
        };
        assert_eq!(decide(&p, s), Verdict::Continue);
    }

    #[test]
    fn a_migration_with_no_applied_policy_runs_by_its_own_spec() {
        let mut m = VirtualMachineMigration::new(
            "m",
            serde_json::from_value(serde_json::json!({"vmName": "v", "bandwidthMibPerSecond": 3}))
                .unwrap(),
        );
        let p = policy_of(&m);
        assert_eq!(p.bandwidth_mib_per_second, Some(3));
        assert_eq!(p.completion_timeout_seconds, 150);
        assert!(!p.post_copy);
        m.status = Some(Default::default());
        m.status.as_mut().unwrap().policy = Some(policy(7, true));
        assert_eq!(policy_of(&m), policy(7, true));
    }
}
