//! Aggregating a guest's samples into compact buckets. Pure: samples and times in, closed
//! buckets out.
//!
//! Between two samples of a running guest, its CPU time grew by some nanoseconds over some
//! wall time: that interval's use in millicores (1000 = one vCPU busy). Intervals are added
//! to the bucket their start falls in (width [`Settings::bucket_seconds`], aligned to the
//! epoch so every agent cuts at the same instants); a bucket closes at the first sample past
//! its end, or when the guest is no longer seen running. The open bucket lives in memory
//! only: an agent restart loses at most one bucket of one VM, which right-sizing tolerates
//! (it asks for most of a window, not all of it).

use std::collections::{BTreeMap, BTreeSet};

use ironvisor_crds::usage::mib_ceil;
use ironvisor_crds::utilization::{MAX_BUCKETS, UtilizationBucket, VmUtilization};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::hypervisor::DomainStats;

/// How samples are aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Bucket width, seconds.
    pub bucket_seconds: i64,
    /// Most buckets kept in a VM's status.
    pub keep: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bucket_seconds: 3600,
            keep: 168,
        }
    }
}

/// One sample of a running guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
    /// CPU time, nanoseconds.
    pub cpu_ns: u64,
}

/// The bucket being filled.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Open {
    start: i64,
    measured_ms: i64,
    cpu_ns: u128,
    cpu_max: i64,
    vcpus: i64,
    guest_used_mib: Option<i64>,
    rss_mib: i64,
    disk_mib: i64,
}

impl Open {
    fn close(&self) -> Option<UtilizationBucket> {
        let seconds = self.measured_ms / 1000;
        if seconds == 0 {
            return None;
        }
        let avg = self.cpu_ns * 1000 / (self.measured_ms.max(1) as u128 * 1_000_000);
        Some(UtilizationBucket {
            start: Time(Timestamp::from_second(self.start).ok()?),
            seconds,
            vcpus: self.vcpus,
            cpu_avg_millicores: i64::try_from(avg).unwrap_or(i64::MAX),
            cpu_max_millicores: self.cpu_max,
            guest_memory_used_mib: self.guest_used_mib,
            host_memory_rss_mib: self.rss_mib,
            disk_allocated_mib: self.disk_mib,
        })
    }
}

/// One guest's state between samples.
#[derive(Clone, Debug, Default)]
struct Guest {
    last: Option<Sample>,
    open: Option<Open>,
}

/// Every guest's state, by a key the caller chooses (the VM's uid).
#[derive(Debug, Default)]
pub struct Windows {
    settings: Settings,
    guests: BTreeMap<String, Guest>,
}

impl Windows {
    /// Empty, aggregating by `settings`.
    pub fn new(settings: Settings) -> Self {
        Windows {
            settings,
            guests: BTreeMap::new(),
        }
    }

    fn width(&self) -> i64 {
        self.settings.bucket_seconds.max(1)
    }

    /// Take a sample of guest `key`; the bucket it closed, if any.
    pub fn observe(&mut self, key: &str, at_ms: i64, s: &DomainStats) -> Option<UtilizationBucket> {
        let width = self.width();
        let g = self.guests.entry(key.to_owned()).or_default();
        let now = Sample {
            at_ms,
            cpu_ns: s.cpu_time_ns,
        };
        let prev = g.last.replace(now);
        let Some(prev) = prev.filter(|p| p.at_ms < at_ms && p.cpu_ns <= s.cpu_time_ns) else {
            // First sight, a clock step back or a restarted guest: a new baseline.
            return None;
        };
        let start = prev.at_ms.div_euclid(1000).div_euclid(width) * width;
        let mut closed = None;
        if g.open.as_ref().is_some_and(|o| o.start != start) {
            closed = g.open.take().and_then(|o| o.close());
        }
        let wall_ms = at_ms - prev.at_ms;
        let cpu = u128::from(s.cpu_time_ns - prev.cpu_ns);
        let millicores =
            i64::try_from(cpu * 1000 / (wall_ms as u128 * 1_000_000)).unwrap_or(i64::MAX);
        let o = g.open.get_or_insert(Open {
            start,
            measured_ms: 0,
            cpu_ns: 0,
            cpu_max: 0,
            vcpus: 0,
            guest_used_mib: None,
            rss_mib: 0,
            disk_mib: 0,
        });
        o.measured_ms += wall_ms;
        o.cpu_ns += cpu;
        o.cpu_max = o.cpu_max.max(millicores);
        o.vcpus = i64::from(s.vcpus);
        let used = s.guest_used_bytes.map(|b| mib_ceil(i128::from(b)));
        o.guest_used_mib = o.guest_used_mib.max(used);
        o.rss_mib = o.rss_mib.max(mib_ceil(i128::from(s.rss_bytes)));
        o.disk_mib = mib_ceil(i128::from(s.disk_allocated_bytes));
        // A sample past the open bucket's end closes it at once (the next interval starts
        // in a later bucket anyway).
        if closed.is_none() && at_ms.div_euclid(1000) >= o.start + width {
            closed = g.open.take().and_then(|o| o.close());
        }
        closed
    }

    /// Forget the guests not in `running` (stopped, deleted, moved away), closing their
    /// open buckets: (key, bucket) for each that had measurements.
    pub fn forget_others(
        &mut self,
        running: &BTreeSet<String>,
    ) -> Vec<(String, UtilizationBucket)> {
        let gone: Vec<String> = self
            .guests
            .keys()
            .filter(|k| !running.contains(*k))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|k| {
                let g = self.guests.remove(&k)?;
                Some((k, g.open?.close()?))
            })
            .collect()
    }
}

/// `prev` (a VM's current `status.utilization`) with `bucket` added: in start order, one
/// bucket per start (a retried write changes nothing), at most `settings.keep` of the
/// newest. Buckets of another width are dropped (the agent's setting changed).
pub fn append(
    prev: Option<&VmUtilization>,
    bucket: UtilizationBucket,
    settings: &Settings,
) -> VmUtilization {
    let width = settings.bucket_seconds;
    let mut buckets: Vec<UtilizationBucket> = prev
        .filter(|p| p.bucket_seconds == width)
        .map(|p| p.buckets.clone())
        .unwrap_or_default();
    match buckets.binary_search_by_key(&bucket.start.0, |b| b.start.0) {
        Ok(i) => buckets[i] = bucket,
        Err(i) => buckets.insert(i, bucket),
    }
    let keep = settings.keep.clamp(1, MAX_BUCKETS);
    let excess = buckets.len().saturating_sub(keep);
    buckets.drain(..excess);
    VmUtilization {
        bucket_seconds: width,
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn stats(cpu_s: f64, guest_used: Option<u64>) -> DomainStats {
        DomainStats {
            cpu_time_ns: (cpu_s * 1e9) as u64,
            vcpus: 2,
            rss_bytes: GIB,
            guest_used_bytes: guest_used,
            disk_allocated_bytes: 3 * GIB,
            ..Default::default()
        }
    }

    fn hour_settings() -> Settings {
        Settings {
            bucket_seconds: 3600,
            keep: 3,
        }
    }

    #[test]
    fn a_bucket_holds_average_and_peak_cpu_and_closes_past_its_end() {
        let mut w = Windows::new(hour_settings());
        assert_eq!(w.observe("a", 0, &stats(0.0, None)), None, "a baseline");
        // 60 s at half a vCPU, then 60 s at 1.5 vCPUs.
        assert_eq!(w.observe("a", 60_000, &stats(30.0, None)), None);
        assert_eq!(w.observe("a", 120_000, &stats(120.0, Some(GIB / 2))), None);
        let b = w
            .observe("a", 3_600_000, &stats(120.0, None))
            .expect("closed at the hour");
        assert_eq!(b.start.0.as_second(), 0);
        assert_eq!(b.seconds, 3600);
        assert_eq!(b.cpu_avg_millicores, 33, "120 s of CPU over 3600 s");
        assert_eq!(b.cpu_max_millicores, 1500);
        assert_eq!(b.guest_memory_used_mib, Some(512));
        assert_eq!(
            (b.host_memory_rss_mib, b.disk_allocated_mib, b.vcpus),
            (1024, 3072, 2)
        );
    }

    #[test]
    fn a_restarted_guest_starts_a_new_baseline_instead_of_negative_use() {
        let mut w = Windows::new(hour_settings());
        w.observe("a", 0, &stats(100.0, None));
        assert_eq!(w.observe("a", 60_000, &stats(1.0, None)), None);
        w.observe("a", 120_000, &stats(31.0, None));
        let b = w.forget_others(&BTreeSet::new());
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].1.seconds, b[0].1.cpu_max_millicores), (60, 500));
    }

    #[test]
    fn a_stopped_guest_closes_its_partial_bucket_and_one_never_measured_closes_none() {
        let mut w = Windows::new(hour_settings());
        w.observe("a", 0, &stats(0.0, None));
        w.observe("a", 10_000, &stats(1.0, None));
        w.observe("b", 0, &stats(0.0, None));
        let running: BTreeSet<String> = ["c".to_string()].into();
        let closed = w.forget_others(&running);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].0.as_str(), closed[0].1.seconds), ("a", 10));
        assert!(w.forget_others(&running).is_empty(), "forgotten");
    }

    #[test]
    fn appending_is_ordered_idempotent_and_bounded() {
        let s = hour_settings();
        let b = |h: i64| UtilizationBucket {
            start: Time(Timestamp::from_second(h * 3600).unwrap()),
            seconds: 3600,
            vcpus: 1,
            cpu_avg_millicores: h,
            cpu_max_millicores: h,
            guest_memory_used_mib: None,
            host_memory_rss_mib: 0,
            disk_allocated_mib: 0,
        };
        let mut u = append(None, b(2), &s);
        u = append(Some(&u), b(1), &s);
        u = append(Some(&u), b(2), &s);
        assert_eq!(u.buckets.len(), 2, "the same start is one bucket");
        for h in 3..10 {
            u = append(Some(&u), b(h), &s);
        }
        let starts: Vec<i64> = u.buckets.iter().map(|x| x.cpu_avg_millicores).collect();
        assert_eq!(starts, vec![7, 8, 9]);
        let other = Settings {
            bucket_seconds: 60,
            keep: 3,
        };
        assert_eq!(append(Some(&u), b(10), &other).buckets.len(), 1);
    }
}
