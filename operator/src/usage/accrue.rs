//! One VM's accrual: from the marker up to which it is accounted and the agent's run log, the
//! usage of every second since, per UTC day and host, and the new marker. Pure.
//!
//! The marker is the last run record applied and the instant accounted through. A record is
//! applied once: records after the marker's one in the log are new; a record the agent wrote
//! with a time already accounted (it saw the change late) takes effect from the marker on, so
//! no second is counted twice.

use std::collections::BTreeMap;

use ironvisor_crds::usage::{RunRecord, UsageTotals};
use jiff::Timestamp;
use jiff::civil::Date;

use super::calendar::seconds_by_day;

/// Where a VM's accounting stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Accounted up to here.
    pub accounted_through: Timestamp,
    /// The last record applied: what the VM holds from `accounted_through` on (None: nothing
    /// seen yet).
    pub holding: Option<RunRecord>,
}

/// Usage keyed by UTC day, host, and the price epoch it fell in (the latest of the cuts
/// given to [`advance`] at or before it; None before all).
pub type ByDayAndHost = BTreeMap<(Date, String, Option<Timestamp>), UsageTotals>;

/// The result of advancing a marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advance {
    /// Usage accrued, by day and host.
    pub usage: ByDayAndHost,
    /// The new marker.
    pub marker: Marker,
}

impl Advance {
    /// The accrued usage summed over days and hosts.
    pub fn total(&self) -> UsageTotals {
        let mut t = UsageTotals::default();
        for u in self.usage.values() {
            t.add(u);
        }
        t
    }
}

/// What holding `h` for `secs` seconds amounts to.
pub fn held_for(h: &RunRecord, secs: i64) -> UsageTotals {
    let mul = |a: i64| a.saturating_mul(secs);
    let mut t = UsageTotals {
        storage_mib_seconds: mul(h.storage_mib),
        ..UsageTotals::default()
    };
    if h.running {
        t.running_seconds = secs;
        t.vcpu_seconds = mul(h.vcpus);
        t.memory_mib_seconds = mul(h.memory_mib);
    } else {
        t.reserved_seconds = secs;
        t.reserved_vcpu_seconds = mul(h.vcpus);
        t.reserved_memory_mib_seconds = mul(h.memory_mib);
    }
    t
}

fn accrue(
    out: &mut ByDayAndHost,
    h: Option<&RunRecord>,
    (from, to): (Timestamp, Timestamp),
    cuts: &[Timestamp],
) {
    let Some(h) = h else { return };
    let mut start = from;
    while start < to {
        let epoch = cuts.iter().rev().find(|c| **c <= start).copied();
        let end = cuts
            .iter()
            .find(|c| **c > start)
            .map_or(to, |c| (*c).min(to));
        for (day, secs) in seconds_by_day(start, end) {
            out.entry((day, h.node.clone(), epoch))
                .or_default()
                .add(&held_for(h, secs));
        }
        start = end;
    }
}

/// The record in force at the marker and the records not yet applied.
fn pending<'a>(marker: &Marker, log: &'a [RunRecord]) -> (Option<RunRecord>, Vec<&'a RunRecord>) {
    if let Some(h) = &marker.holding
        && let Some(i) = log.iter().rposition(|r| r == h)
    {
        return (Some(h.clone()), log[i + 1..].iter().collect());
    }
    let cursor = marker.accounted_through;
    let mut holding = marker.holding.clone();
    if holding.is_none() {
        // First sight: the last record at or before the marker is what the VM held then.
        holding = log.iter().rev().find(|r| r.at.0 <= cursor).cloned();
    }
    // The marker's record has left the log (more changes than it keeps while the operator
    // was away): the ones still there after the marker are all that is known.
    (holding, log.iter().filter(|r| r.at.0 > cursor).collect())
}

/// Advance `marker` to `to` through the agent's `log`, cutting usage at `cuts` (sorted: the
/// times prices change). Records timed after `to` wait for a later advance; `to` at or
/// before the marker changes nothing.
pub fn advance(marker: &Marker, log: &[RunRecord], to: Timestamp, cuts: &[Timestamp]) -> Advance {
    let mut usage = ByDayAndHost::new();
    if to <= marker.accounted_through {
        return Advance {
            usage,
            marker: marker.clone(),
        };
    }
    let (mut holding, new) = pending(marker, log);
    let mut cursor = marker.accounted_through;
    for rec in new {
        let at = rec.at.0.max(cursor);
        if at > to {
            break;
        }
        accrue(&mut usage, holding.as_ref(), (cursor, at), cuts);
        holding = Some(rec.clone());
        cursor = at;
    }
    accrue(&mut usage, holding.as_ref(), (cursor, to), cuts);
    Advance {
        usage,
        marker: Marker {
            accounted_through: to,
            holding,
        },
    }
}
