//! UTC days and months: where usage intervals are cut so each second lands in the day and
//! month it happened in. Pure; no clock.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// A UTC calendar month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// The year.
    pub year: i16,
    /// The month, 1..=12.
    pub month: i8,
}

/// A period label that is not `YYYY-MM`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("period {0:?} is not a month of the form YYYY-MM (e.g. 2026-11)")]
pub struct BadPeriod(pub String);

impl Month {
    /// The month `ts` falls in (UTC).
    pub fn of(ts: Timestamp) -> Month {
        let d = utc_date(ts);
        Month {
            year: d.year(),
            month: d.month(),
        }
    }

    /// Parse `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Month, BadPeriod> {
        let bad = || BadPeriod(s.to_owned());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i16 = y.parse().map_err(|_| bad())?;
        let month: i8 = m.parse().map_err(|_| bad())?;
        Date::new(year, month, 1).map_err(|_| bad())?;
        Ok(Month { year, month })
    }

    /// `YYYY-MM`.
    pub fn label(self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// The first instant of the month.
    pub fn start(self) -> Timestamp {
        midnight(self.first_day())
    }

    /// The first instant after the month.
    pub fn end(self) -> Timestamp {
        self.next().start()
    }

    /// The following month.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before.
    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    fn first_day(self) -> Date {
        // Valid by construction: 1 ≤ month ≤ 12 and the year is a jiff year.
        Date::new(self.year, self.month, 1).unwrap_or(Date::MAX)
    }
}

/// The UTC day `ts` falls in.
pub fn utc_date(ts: Timestamp) -> Date {
    ts.to_zoned(TimeZone::UTC).date()
}

/// The first instant of UTC day `d`.
pub fn midnight(d: Date) -> Timestamp {
    DateTime::from(d)
        .to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// The first instant of the UTC day after the one `ts` falls in.
pub fn next_midnight(ts: Timestamp) -> Timestamp {
    utc_date(ts)
        .tomorrow()
        .map(midnight)
        .unwrap_or(Timestamp::MAX)
}

/// `[from, to)` cut at UTC midnights: (day, seconds in it), in order. Sub-second parts are
/// dropped from each end (usage is counted in whole seconds of the wall clock).
pub fn seconds_by_day(from: Timestamp, to: Timestamp) -> Vec<(Date, i64)> {
    let mut out = Vec::new();
    let mut cursor = from;
    while cursor < to {
        let cut = next_midnight(cursor).min(to);
        let secs = cut.as_second() - cursor.as_second();
        if secs > 0 {
            out.push((utc_date(cursor), secs));
        }
        cursor = cut;
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
    fn months_parse_label_and_bound_exactly() {
        let m = Month::parse("2026-11").unwrap();
        assert_eq!(m.label(), "2026-11");
        assert_eq!(m.start(), ts("2026-11-01T00:00:00Z"));
        assert_eq!(m.end(), ts("2026-12-01T00:00:00Z"));
        assert_eq!(
            Month::parse("2026-12").unwrap().end(),
            ts("2027-01-01T00:00:00Z")
        );
        assert_eq!(Month::of(ts("2026-11-30T23:59:59Z")), m);
        assert_eq!(Month::parse("2027-01").unwrap().prev().label(), "2026-12");
        assert_eq!(m.prev().next(), m);
    }

    #[test]
    fn hostile_periods_are_refused_with_the_form_named() {
        for bad in [
            "",
            "2026",
            "2026-13",
            "2026-00",
            "26-11",
            "2026-1",
            "2026-11-01",
            "x-y",
        ] {
            let err = Month::parse(bad).unwrap_err();
            assert!(err.to_string().contains("YYYY-MM"), "{bad}");
        }
    }

    #[test]
    fn an_interval_across_midnight_is_cut_at_midnight() {
        let days = seconds_by_day(ts("2026-11-30T23:00:00Z"), ts("2026-12-01T01:30:00Z"));
        assert_eq!(
            days,
            vec![
                (Date::constant(2026, 11, 30), 3600),
                (Date::constant(2026, 12, 1), 5400)
            ]
        );
    }

    #[test]
    fn an_empty_or_reversed_interval_has_no_seconds() {
        let t = ts("2026-11-05T10:00:00Z");
        assert!(seconds_by_day(t, t).is_empty());
        assert!(seconds_by_day(t, ts("2026-11-05T09:00:00Z")).is_empty());
    }

    #[test]
    fn a_leap_day_is_its_own_day() {
        let days = seconds_by_day(ts("2028-02-28T12:00:00Z"), ts("2028-03-01T12:00:00Z"));
        let secs: Vec<i64> = days.iter().map(|d| d.1).collect();
        assert_eq!(secs, vec![43200, 86400, 43200]);
        assert_eq!(days[1].0, Date::constant(2028, 2, 29));
    }
}
