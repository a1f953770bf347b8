//! Latency summaries: percentiles by the nearest-rank method and rates. Pure.

use serde::Serialize;
use std::time::Duration;

/// p50, p95, p99 and max of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples: the smallest sample with at
/// least p % of the samples at or below it. `None` when there are no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Summarise samples (any order). `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    Some(Summary {
        count: sorted.len(),
        p50_ms: ms(percentile(&sorted, 50.0)?),
        p95_ms: ms(percentile(&sorted, 95.0)?),
        p99_ms: ms(percentile(&sorted, 99.0)?),
        max_ms: ms(*sorted.last()?),
    })
}

/// Events per second over `elapsed`; `None` for an empty interval.
pub fn rate(events: u64, elapsed: Duration) -> Option<f64> {
    let s = elapsed.as_secs_f64();
    (s > 0.0).then(|| events as f64 / s)
}

/// `ours / raw`, `None` when the baseline is zero.
pub fn ratio(ours: f64, raw: f64) -> Option<f64> {
    (raw > 0.0).then(|| ours / raw)
}

/// The median of `values` (the mean of the two middle ones for an even count); `None` when
/// empty. NaN sorts last.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = ms_list(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 95.0), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&s, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&s, 0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn a_single_sample_is_every_percentile() {
        let s = ms_list(&[7]);
        for p in [0.0, 50.0, 99.0, 100.0] {
            assert_eq!(percentile(&s, p), Some(Duration::from_millis(7)));
        }
    }

    #[test]
    fn no_samples_give_no_summary() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn a_summary_sorts_its_samples_first() {
        let s = summarize(&ms_list(&[30, 10, 20, 40])).expect("summary");
        assert_eq!(s.count, 4);
        assert_eq!(s.p50_ms, 20.0);
        assert_eq!(s.p95_ms, 40.0);
        assert_eq!(s.max_ms, 40.0);
    }

    #[test]
    fn rates_and_ratios_refuse_a_zero_denominator() {
        assert_eq!(rate(10, Duration::from_secs(2)), Some(5.0));
        assert_eq!(rate(10, Duration::ZERO), None);
        assert_eq!(ratio(3.0, 1.5), Some(2.0));
        assert_eq!(ratio(3.0, 0.0), None);
    }
}
