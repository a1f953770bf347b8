//! Leader election through a coordination.k8s.io/v1 Lease in `ironvisor-system`.
//!
//! Owns who may write. The rules are client-go's: a candidate takes the Lease only when the
//! record it last saw has not changed for a whole lease duration *on its own clock* (so clock
//! skew between replicas does not matter), every write of the Lease is guarded by its
//! resourceVersion (two candidates can never both win), and a leader that has not renewed
//! within the renew deadline stops writing at once — before any standby may take over, as the
//! deadline is shorter than the lease duration.
//!
//! A record's renewTime is never trusted to say more than "it changed": a renewTime further
//! in the future than [`MAX_CLOCK_SKEW`] (a forged Lease, or a holder whose clock is far
//! off) does not count as a renewal at all, so whoever keeps rewriting such a record cannot
//! keep the replicas out; they take over one lease duration after they first saw it. Nor is
//! a record's leaseDurationSeconds honoured beyond this replica's own lease duration.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

mod problem;
pub use problem::{LeaderError, ProblemLog};

/// Timing of the election.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a record must stand still before a standby takes over.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops writing. Shorter than the duration.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// Takeover within lease duration + retry period ≈ 14 s after the leader dies; a 4 s gap
    /// between the old leader's last possible write and the new leader's first.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(12),
            renew_deadline: Duration::from_secs(8),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// How far ahead of this replica's wall clock a renewTime may be and still count as a
/// renewal (clock skew between hosts kept by NTP is well below a second).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// What a candidate does next, given the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create one naming us.
    Create,
    /// We hold it: write a fresh renewTime (guarded by resourceVersion).
    Renew,
    /// The holder let it expire (or released it): take it over (guarded by resourceVersion).
    TakeOver,
    /// Someone else holds it.
    Follow,
}

/// What a candidate remembers between steps: the last record it saw and when it last
/// changed in a way that counts as a renewal.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    record: Option<(Option<String>, Option<MicroTime>, Option<i32>)>,
    changed_at: Option<Instant>,
    /// The record's renewTime was too far in the future to count (logged once per record).
    pub untrusted: bool,
}

/// Whether `renew` lies more than [`MAX_CLOCK_SKEW`] after `wall`.
fn from_the_future(renew: Option<&MicroTime>, wall: jiff::Timestamp) -> bool {
    let skew = jiff::SignedDuration::try_from(MAX_CLOCK_SKEW).unwrap_or_default();
    renew.is_some_and(|r| r.0.duration_since(wall) > skew)
}

/// Decide the next step. `now` is the candidate's own monotonic clock, `wall` its wall
/// clock (used only to distrust a renewTime from the future).
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    observed: &mut Observed,
    (now, wall): (Instant, jiff::Timestamp),
    t: Timing,
) -> Step {
    let Some(spec) = lease else {
        *observed = Observed::default();
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let record = (
        holder.clone(),
        spec.renew_time.clone(),
        spec.lease_transitions,
    );
    if observed.record.as_ref() != Some(&record) {
        let untrusted = from_the_future(spec.renew_time.as_ref(), wall);
        // A future-dated record is not a renewal: the clock keeps running from when the
        // candidate first saw the holder (or from now, if it never saw a record).
        if !untrusted || observed.changed_at.is_none() {
            observed.changed_at = Some(now);
        }
        observed.untrusted = untrusted;
        observed.record = Some(record);
    }
    match holder.as_deref() {
        Some(h) if h == me => Step::Renew,
        None => Step::TakeOver,
        Some(_) => {
            // The record's own duration, but never longer than ours: a live leader renews every
            // retry period, far more often, so only a dead or forged holder is affected (a
            // record with a duration of a year must not lock the replicas out for a year).
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(t.lease_duration, Duration::from_secs)
                .min(t.lease_duration);
            let since = observed
                .changed_at
                .map_or(Duration::ZERO, |c| now.saturating_duration_since(c));
            if since > duration {
                Step::TakeOver
            } else {
                Step::Follow
            }
        }
    }
}

/// Whether this replica may write, checked before every write.
#[derive(Clone, Debug)]
pub struct Leadership {
    valid_until: Arc<Mutex<Option<Instant>>>,
    changes: watch::Receiver<bool>,
}

impl Leadership {
    /// A handle that never leads (tests, dry runs) with its sender.
    pub fn new() -> (Self, LeadershipSender) {
        let (tx, rx) = watch::channel(false);
        let valid_until = Arc::new(Mutex::new(None));
        (
            Self {
                valid_until: valid_until.clone(),
                changes: rx,
            },
            LeadershipSender { valid_until, tx },
        )
    }

    /// True while the last renewal is younger than the renew deadline.
    pub fn is_leader(&self) -> bool {
        let guard = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|until| Instant::now() < until)
    }

    /// One item each time this replica begins a term of leadership (a term under way when
    /// called is not signalled: the controller's first listing covers it). A controller's
    /// `reconcile_all_on` trigger, so every object is looked at again when a term begins.
    pub fn terms(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.clone(), |mut l| async move {
            if l.is_leader() {
                // This term's objects were looked at when it began (or by the first listing).
                l.lost().await;
            }
            l.acquired().await;
            Some(((), l))
        })
    }

    /// Wait until this replica leads.
    pub async fn acquired(&mut self) {
        let _ = self.changes.wait_for(|l| *l).await;
    }

    /// Wait until this replica stops leading (or the elector is gone).
    pub async fn lost(&mut self) {
        loop {
            if !self.is_leader() {
                return;
            }
            let deadline = {
                let g = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
                g.unwrap_or_else(Instant::now)
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                r = self.changes.changed() => if r.is_err() { return },
            }
        }
    }
}

/// The elector's side of [`Leadership`].
#[derive(Debug)]
pub struct LeadershipSender {
    valid_until: Arc<Mutex<Option<Instant>>>,
    tx: watch::Sender<bool>,
}

impl LeadershipSender {
    /// Record a successful acquire or renew made at `at`.
    pub fn renewed(&self, at: Instant, t: Timing) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(at + t.renew_deadline);
        self.tx.send_replace(true);
    }

    /// Stop leading now.
    pub fn lose(&self) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.tx.send_replace(false);
    }
}

fn lease_spec(me: &str, previous: Option<&LeaseSpec>, t: Timing, take_over: bool) -> LeaseSpec {
    let now = MicroTime(jiff::Timestamp::now());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: i32::try_from(t.lease_duration.as_secs()).ok(),
        acquire_time: if take_over || previous.is_none() {
            Some(now.clone())
        } else {
            previous.and_then(|p| p.acquire_time.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if take_over {
            transitions + 1
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// One round: read the Lease, act, report whether we lead.
async fn round(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    observed: &mut Observed,
    t: Timing,
) -> Result<bool, LeaderError> {
    let namespace = api.namespace().unwrap_or_default();
    let err = |verb| move |e| LeaderError::from_api(verb, namespace, name, e);
    let current = api.get_opt(name).await.map_err(err("get"))?;
    let was_untrusted = observed.untrusted;
    let step = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        me,
        observed,
        (Instant::now(), jiff::Timestamp::now()),
        t,
    );
    if observed.untrusted && !was_untrusted {
        tracing::warn!(%name, holder = ?current.as_ref().and_then(|l| l.spec.as_ref()?.holder_identity.clone()),
            max_skew = ?MAX_CLOCK_SKEW,
            "the leader Lease's renewTime is in the future: not counted as a renewal");
    }
    match (step, current) {
        (Step::Follow, _) => Ok(false),
        (Step::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(lease_spec(me, None, t, false)),
            };
            api.create(&PostParams::default(), &lease)
                .await
                .map_err(err("create"))?;
            Ok(true)
        }
        (step, Some(mut lease)) => {
            // replace() sends metadata.resourceVersion: a concurrent writer makes it fail 409.
            lease.spec = Some(lease_spec(
                me,
                lease.spec.as_ref(),
                t,
                step == Step::TakeOver,
            ));
            api.replace(name, &PostParams::default(), &lease)
                .await
                .map_err(err("update"))?;
            Ok(true)
        }
        (_, None) => Ok(false),
    }
}

/// Run the election forever, publishing leadership through `sender` and whether it can
/// proceed through `health` (the problem in words, `None` when it works).
pub async fn run(
    api: Api<Lease>,
    name: String,
    me: String,
    t: Timing,
    sender: LeadershipSender,
    health: watch::Sender<Option<String>>,
) {
    let mut observed = Observed::default();
    let mut leading = false;
    let mut last_ok = Instant::now();
    let mut problems = ProblemLog::default();
    loop {
        let started = Instant::now();
        let result = round(&api, &name, &me, &mut observed, t).await;
        match &result {
            Ok(_) => {
                if problems.ok() {
                    health.send_replace(None);
                }
            }
            Err(e) => {
                if let Some(text) = problems.failed(e) {
                    health.send_replace(Some(text));
                }
            }
        }
        match result {
            Ok(true) => {
                if !leading {
                    tracing::info!(%name, %me, "became leader");
                }
                leading = true;
                last_ok = started;
                sender.renewed(started, t);
            }
            Ok(false) => {
                if leading {
                    tracing::warn!(%name, "lease taken by another replica; stopping");
                    sender.lose();
                }
                leading = false;
            }
            Err(_) => {
                // Leadership runs out by itself at the renew deadline (is_leader checks it).
                if leading && last_ok.elapsed() >= t.renew_deadline {
                    sender.lose();
                    leading = false;
                }
            }
        }
        tokio::time::sleep(t.retry_period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renew_s: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(12),
            renew_time: Some(MicroTime(jiff::Timestamp::from_second(renew_s).unwrap())),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }
    }

    /// The candidate's clocks `secs` after `t0`, when its wall clock read second 100.
    fn at(t0: Instant, secs: u64) -> (Instant, jiff::Timestamp) {
        let wall = jiff::Timestamp::from_second(100 + secs as i64).unwrap();
        (t0 + Duration::from_secs(secs), wall)
    }

    #[test]
    fn no_lease_means_create_one() {
        let mut o = Observed::default();
        assert_eq!(
            decide(None, "a", &mut o, at(Instant::now(), 0), Timing::default()),
            Step::Create
        );
    }

    #[test]
    fn the_holder_renews() {
        let mut o = Observed::default();
        assert_eq!(
            decide(
                Some(&spec("a", 1)),
                "a",
                &mut o,
                at(Instant::now(), 0),
                Timing::default()
            ),
            Step::Renew
        );
    }

    #[test]
    fn a_standby_follows_a_lease_that_keeps_moving() {
        let t = Timing::default();
        let mut o = Observed::default();
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(
                decide(Some(&spec("a", i as i64)), "b", &mut o, at(t0, 2 * i), t),
                Step::Follow
            );
        }
    }

    #[test]
    fn a_standby_takes_over_only_after_the_record_stood_still_a_whole_duration_on_its_clock() {
        let t = Timing::default();
        let mut o = Observed::default();
        let t0 = Instant::now();
        // The record's renewTime is far in the past (skewed clock): irrelevant, only change counts.
        let s = spec("a", 0);
        assert_eq!(decide(Some(&s), "b", &mut o, at(t0, 0), t), Step::Follow);
        assert_eq!(decide(Some(&s), "b", &mut o, at(t0, 12), t), Step::Follow);
        assert_eq!(decide(Some(&s), "b", &mut o, at(t0, 13), t), Step::TakeOver);
    }

    #[test]
    fn a_record_renewed_into_the_future_is_taken_over_after_a_duration_however_often_it_changes() {
        let t = Timing::default();
        let mut o = Observed::default();
        let t0 = Instant::now();
        // An intruder rewrites the record every second, an hour ahead of the wall clock.
        for i in 0..=12 {
            let forged = spec("intruder", 100 + 3600 + i);
            assert_eq!(
                decide(Some(&forged), "b", &mut o, at(t0, i as u64), t),
                Step::Follow
            );
            assert!(o.untrusted);
        }
        let forged = spec("intruder", 100 + 3600 + 13);
        assert_eq!(
            decide(Some(&forged), "b", &mut o, at(t0, 13), t),
            Step::TakeOver
        );
    }

    #[test]
    fn a_record_claiming_a_year_long_lease_is_honoured_for_our_own_duration_only() {
        let t = Timing::default();
        let mut o = Observed::default();
        let t0 = Instant::now();
        let mut s = spec("dead", 100);
        s.lease_duration_seconds = Some(365 * 24 * 3600);
        assert_eq!(decide(Some(&s), "b", &mut o, at(t0, 0), t), Step::Follow);
        assert_eq!(decide(Some(&s), "b", &mut o, at(t0, 13), t), Step::TakeOver);
    }

    #[test]
    fn a_renew_time_within_the_skew_allowance_still_counts_as_a_renewal() {
        let t = Timing::default();
        let mut o = Observed::default();
        let t0 = Instant::now();
        // The leader's clock runs 4 s ahead of ours: it renews every 2 s and keeps the Lease.
        for i in 0..30 {
            let renewed = spec("a", 100 + 4 + 2 * i);
            assert_eq!(
                decide(Some(&renewed), "b", &mut o, at(t0, 2 * i as u64), t),
                Step::Follow
            );
            assert!(!o.untrusted);
        }
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut o = Observed::default();
        let mut s = spec("a", 1);
        s.holder_identity = None;
        assert_eq!(
            decide(
                Some(&s),
                "b",
                &mut o,
                at(Instant::now(), 0),
                Timing::default()
            ),
            Step::TakeOver
        );
    }

    #[test]
    fn the_renew_deadline_is_shorter_than_the_duration_so_leaders_never_overlap() {
        let t = Timing::default();
        assert!(t.renew_deadline + t.retry_period <= t.lease_duration);
        assert!(t.lease_duration + t.retry_period <= Duration::from_secs(15));
    }

    #[tokio::test]
    async fn leadership_ends_by_itself_at_the_renew_deadline() {
        let (mut l, tx) = Leadership::new();
        assert!(!l.is_leader());
        let t = Timing {
            renew_deadline: Duration::from_millis(50),
            ..Timing::default()
        };
        tx.renewed(Instant::now(), t);
        assert!(l.is_leader());
        tokio::time::timeout(Duration::from_secs(2), l.lost())
            .await
            .expect("lost in time");
        assert!(!l.is_leader());
    }

    #[tokio::test]
    async fn losing_the_lease_is_seen_at_once() {
        let (mut l, tx) = Leadership::new();
        tx.renewed(Instant::now(), Timing::default());
        l.acquired().await;
        tx.lose();
        tokio::time::timeout(Duration::from_millis(200), l.lost())
            .await
            .expect("immediate");
    }
}
