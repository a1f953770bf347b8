//! The pure part of schedules: when the next object is due, what it is called, and which of
//! a schedule's objects its retention prunes. No I/O, no clock: `now` is an argument.

use croner::Cron;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use std::str::FromStr as _;

/// Why a schedule cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The cron expression cannot be read.
    #[error("schedule {0:?} is not a cron expression ({1}); e.g. \"0 2 * * *\" is 02:00 UTC daily")]
    Cron(String, String),
    /// The maximum age cannot be read.
    #[error("retention.maxAge {0:?} is not a number followed by m, h or d (e.g. 14d)")]
    MaxAge(String),
}

/// A parsed cron expression (UTC).
#[derive(Clone, Debug)]
pub struct Schedule(Cron);

impl Schedule {
    /// Parse a cron expression: five fields, or six with seconds first.
    pub fn parse(text: &str) -> Result<Self, PlanError> {
        Cron::from_str(text)
            .map(Schedule)
            .map_err(|e| PlanError::Cron(text.to_owned(), e.to_string()))
    }

    /// The first time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(TimeZone::UTC);
        self.0
            .find_next_occurrence(&z, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The latest time in `(since, now]`: what is due now (missed times are made up once).
    pub fn due(&self, since: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let z = now.to_zoned(TimeZone::UTC);
        let last = self.0.find_previous_occurrence(&z, true).ok()?.timestamp();
        (last > since).then_some(last)
    }
}

/// Parse a maximum age such as `90m`, `36h` or `14d`.
pub fn parse_max_age(text: &str) -> Result<SignedDuration, PlanError> {
    let bad = || PlanError::MaxAge(text.to_owned());
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(
        n.checked_mul(secs).ok_or_else(bad)?,
    ))
}

/// The name of the object a schedule makes for time `t`: `<schedule>-<yyyymmdd-hhmmss>`,
/// the schedule's name shortened so the whole stays a valid object name.
pub fn object_name(schedule: &str, t: Timestamp) -> String {
    let stamp = t.strftime("%Y%m%d-%H%M%S").to_string();
    let room = 253 - stamp.len() - 1;
    let mut base: String = schedule.chars().take(room).collect();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    format!("{base}-{stamp}")
}

/// One object a schedule made, as pruning sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created: Timestamp,
    /// Whether it has finished (succeeded or failed): only finished objects are pruned.
    pub finished: bool,
    /// Whether it succeeded: only those count toward `keepLast`.
    pub succeeded: bool,
}

/// The names to delete: succeeded objects beyond the newest `keep_last`, failed objects
/// older than the newest succeeded one, and any finished object older than `max_age`.
/// Objects still in progress are kept and, like failed ones, do not count toward
/// `keep_last`: failures never push out a good snapshot or backup, and the newest failure
/// stays to be looked at until a later one succeeds.
pub fn prune(
    made: &[Made],
    keep_last: Option<u32>,
    max_age: Option<SignedDuration>,
    now: Timestamp,
) -> Vec<String> {
    let mut done: Vec<&Made> = made.iter().filter(|m| m.finished).collect();
    done.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
    let mut good = 0usize;
    let mut out = Vec::new();
    for m in done {
        let too_old = max_age.is_some_and(|a| now.duration_since(m.created) > a);
        let superseded = if m.succeeded {
            good += 1;
            keep_last.is_some_and(|k| good > k as usize)
        } else {
            good > 0
        };
        if too_old || superseded {
            out.push(m.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_daily_schedule_is_due_once_after_its_time_and_then_tomorrow() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let created = ts("2026-11-30T01:00:00Z");
        assert_eq!(s.due(created, ts("2026-11-30T01:59:59Z")), None);
        let due = s.due(created, ts("2026-11-30T02:00:30Z")).unwrap();
        assert_eq!(due, ts("2026-11-30T02:00:00Z"));
        // Made: not due again until tomorrow.
        assert_eq!(s.due(due, ts("2026-11-30T23:00:00Z")), None);
        assert_eq!(s.next_after(due), Some(ts("2026-12-01T02:00:00Z")));
    }

    #[test]
    fn missed_times_are_made_up_once_with_the_latest() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let due = s.due(ts("2026-11-30T00:00:00Z"), ts("2026-11-30T01:05:00Z"));
        assert_eq!(due, Some(ts("2026-11-30T01:00:00Z")));
    }

    #[test]
    fn six_fields_take_seconds_first() {
        let s = Schedule::parse("*/20 * * * * *").unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-30T00:00:05Z")),
            Some(ts("2026-11-30T00:00:20Z"))
        );
    }

    #[test]
    fn nonsense_is_refused_with_an_example() {
        for bad in ["every day", "61 * * * *", "* * *"] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.to_string().contains("0 2 * * *"), "{e}");
        }
    }

    #[test]
    fn max_ages_read_minutes_hours_and_days() {
        assert_eq!(parse_max_age("90m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(
            parse_max_age("36h").unwrap(),
            SignedDuration::from_hours(36)
        );
        assert_eq!(
            parse_max_age("14d").unwrap(),
            SignedDuration::from_hours(14 * 24)
        );
        for bad in ["", "d", "0d", "-1d", "1w", "1.5h", "99999999999999999d"] {
            assert!(parse_max_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names_carry_the_time_and_stay_valid() {
        let t = ts("2026-11-30T02:00:00Z");
        assert_eq!(object_name("nightly", t), "nightly-20261130-020000");
        let long = format!("{}-x", "a".repeat(250));
        let n = object_name(&long, t);
        assert_eq!(n.len(), 253);
        assert!(n.ends_with("a-20261130-020000"), "{n}");
    }

    fn made(name: &str, at: &str, finished: bool) -> Made {
        Made {
            name: name.into(),
            created: ts(at),
            finished,
            succeeded: finished,
        }
    }

    fn failed(name: &str, at: &str) -> Made {
        Made {
            succeeded: false,
            ..made(name, at, true)
        }
    }

    #[test]
    fn failures_never_count_toward_keep_last_and_go_once_a_later_one_succeeds() {
        let all = [
            made("a", "2026-11-30T00:00:00Z", true),
            made("b", "2026-11-30T01:00:00Z", true),
            failed("c", "2026-11-30T02:00:00Z"),
            failed("d", "2026-11-30T03:00:00Z"),
        ];
        let now = ts("2026-11-30T03:00:01Z");
        // Two failures after two good ones: both good ones stay, the failures too (nothing
        // newer succeeded: the newest failure is what to look at).
        assert!(prune(&all, Some(2), None, now).is_empty());
        let mut more = all.to_vec();
        more.push(made("e", "2026-11-30T04:00:00Z", true));
        let mut doomed = prune(&more, Some(2), None, now);
        doomed.sort();
        assert_eq!(doomed, ["a", "c", "d"]);
    }

    #[test]
    fn keep_last_prunes_the_oldest_finished_ones_only() {
        let all = [
            made("a", "2026-11-30T00:00:00Z", true),
            made("b", "2026-11-30T01:00:00Z", true),
            made("c", "2026-11-30T02:00:00Z", true),
            made("d", "2026-11-30T03:00:00Z", false),
        ];
        let now = ts("2026-11-30T03:00:01Z");
        assert_eq!(prune(&all, Some(2), None, now), ["a"]);
        assert_eq!(prune(&all, Some(1), None, now), ["b", "a"]);
        assert!(prune(&all, Some(5), None, now).is_empty());
    }

    #[test]
    fn max_age_prunes_what_is_older_and_both_rules_combine() {
        let all = [
            made("old", "2026-11-20T00:00:00Z", true),
            made("new", "2026-11-30T00:00:00Z", true),
            made("busy-old", "2026-11-01T00:00:00Z", false),
        ];
        let now = ts("2026-11-30T12:00:00Z");
        let week = Some(SignedDuration::from_hours(7 * 24));
        assert_eq!(prune(&all, None, week, now), ["old"]);
        assert_eq!(prune(&all, Some(1), week, now), ["old"]);
        assert!(prune(&all, None, Some(SignedDuration::from_hours(24 * 30)), now).is_empty());
    }
}
