//! The host's real load for the Hypervisor status: CPU utilisation of each of the host's
//! domains over the interval between two samples of their counters, their memory, the
//! totals per host, and the kernel's pressure figures (PSI).
//!
//! [`host_load`] is pure (two samples in, the status figures out); reading the counters is
//! [`crate::hypervisor::libvirt::Libvirt::domain_usage`] and reading PSI [`pressure`].
//! Only domains this agent owns count: a libvirt shared by several agents (tests) reports
//! the others' too.

use std::collections::BTreeMap;
use std::time::Instant;

use ironvisor_crds::load::{HostLoad, MAX_LISTED_VMS, Pressure, VmLoad};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// One reading of the owned domains' counters.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was read (monotonic).
    pub at: Instant,
    /// Per domain name: the VM (namespace, name), CPU time in ns, memory in bytes.
    pub domains: BTreeMap<String, DomainSample>,
}

/// One domain's counters in a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSample {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// CPU time since the guest started, ns.
    pub cpu_time_ns: u64,
    /// Memory held, bytes.
    pub memory_bytes: u64,
}

/// What the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSize {
    /// CPU threads.
    pub cpus: u32,
    /// Memory, bytes.
    pub memory_bytes: u64,
}

fn percent(part: u64, whole: u64) -> u32 {
    if whole == 0 {
        return 0;
    }
    u32::try_from((u128::from(part) * 100 / u128::from(whole)).min(u128::from(u32::MAX)))
        .unwrap_or(u32::MAX)
}

/// The load between `prev` and `now`. A domain new since `prev`, or restarted (its CPU
/// time went back), counts no CPU this interval. `None` when no time passed.
pub fn host_load(
    prev: &Sample,
    now: &Sample,
    size: HostSize,
    sampled_at: Time,
    pressure: Option<Pressure>,
) -> Option<HostLoad> {
    let elapsed = now.at.checked_duration_since(prev.at)?;
    let elapsed_ns = u64::try_from(elapsed.as_nanos()).ok()?;
    if elapsed_ns == 0 {
        return None;
    }
    let mut vms: Vec<VmLoad> = now
        .domains
        .iter()
        .map(|(dom, d)| {
            let used = prev
                .domains
                .get(dom)
                .filter(|p| p.namespace == d.namespace && p.name == d.name)
                .and_then(|p| d.cpu_time_ns.checked_sub(p.cpu_time_ns))
                .unwrap_or(0);
            let millicores = u128::from(used) * 1000 / u128::from(elapsed_ns);
            VmLoad {
                namespace: d.namespace.clone(),
                name: d.name.clone(),
                cpu_millicores: u64::try_from(millicores).unwrap_or(u64::MAX),
                memory_bytes: d.memory_bytes,
            }
        })
        .collect();
    let cpu_millicores = vms
        .iter()
        .fold(0u64, |a, v| a.saturating_add(v.cpu_millicores));
    let memory_bytes = vms
        .iter()
        .fold(0u64, |a, v| a.saturating_add(v.memory_bytes));
    vms.sort_by(|a, b| {
        b.cpu_millicores
            .cmp(&a.cpu_millicores)
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    vms.truncate(MAX_LISTED_VMS);
    Some(HostLoad {
        sampled_at: Some(sampled_at),
        interval_milliseconds: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        cpus: size.cpus,
        cpu_millicores,
        cpu_percent: percent(cpu_millicores, u64::from(size.cpus) * 1000),
        memory_bytes,
        memory_percent: percent(memory_bytes, size.memory_bytes),
        pressure,
        vms,
    })
}

/// The kernel's PSI `some avg10` figures, when /proc/pressure exists (Linux 4.20+ with
/// PSI enabled).
pub fn pressure() -> Option<Pressure> {
    use procfs::Current;
    let centi = |avg10: f32| (avg10.clamp(0.0, 100.0) * 100.0).round() as u32;
    Some(Pressure {
        cpu_some_centi_percent: centi(procfs::CpuPressure::current().ok()?.some.avg10),
        memory_some_centi_percent: centi(procfs::MemoryPressure::current().ok()?.some.avg10),
        io_some_centi_percent: centi(procfs::IoPressure::current().ok()?.some.avg10),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dom(name: &str, cpu: u64, mem: u64) -> DomainSample {
        DomainSample {
            namespace: "ns".into(),
            name: name.into(),
            cpu_time_ns: cpu,
            memory_bytes: mem,
        }
    }

    fn sample(at: Instant, doms: &[(&str, DomainSample)]) -> Sample {
        Sample {
            at,
            domains: doms
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    const SIZE: HostSize = HostSize {
        cpus: 2,
        memory_bytes: 1 << 30,
    };

    fn at() -> Time {
        Time(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn cpu_is_the_time_used_over_the_interval_per_vm_and_in_total_busiest_first() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let prev = sample(
            t0,
            &[
                ("d-burn", dom("burn", 5_000_000_000, 0)),
                ("d-idle", dom("idle", 1_000, 0)),
            ],
        );
        let now = sample(
            t1,
            &[
                ("d-burn", dom("burn", 14_000_000_000, 256 << 20)),
                ("d-idle", dom("idle", 200_001_000, 256 << 20)),
            ],
        );
        let l = host_load(&prev, &now, SIZE, at(), None).unwrap();
        assert_eq!(l.interval_milliseconds, 10_000);
        assert_eq!(
            l.vms
                .iter()
                .map(|v| (v.name.as_str(), v.cpu_millicores))
                .collect::<Vec<_>>(),
            vec![("burn", 900), ("idle", 20)]
        );
        assert_eq!(l.cpu_millicores, 920);
        assert_eq!(l.cpu_percent, 46);
        assert_eq!(l.memory_bytes, 512 << 20);
        assert_eq!(l.memory_percent, 50);
        assert_eq!(l.cpus, 2);
    }

    #[test]
    fn a_new_or_restarted_or_renamed_domain_counts_no_cpu_this_interval() {
        let t0 = Instant::now();
        let prev = sample(
            t0,
            &[("d-a", dom("a", 9_000_000_000, 0)), ("d-b", dom("b", 0, 0))],
        );
        let now = sample(
            t0 + Duration::from_secs(1),
            &[
                ("d-a", dom("a", 10, 0)),
                ("d-b", dom("other", 5_000_000_000, 0)),
                ("d-c", dom("c", 5_000_000_000, 0)),
            ],
        );
        let l = host_load(&prev, &now, SIZE, at(), None).unwrap();
        assert_eq!(l.cpu_millicores, 0, "{l:?}");
        assert_eq!(l.vms.len(), 3);
    }

    #[test]
    fn no_elapsed_time_gives_nothing_and_hostile_counters_saturate() {
        let t0 = Instant::now();
        let s = sample(t0, &[("d", dom("x", 0, u64::MAX))]);
        assert_eq!(host_load(&s, &s, SIZE, at(), None), None);
        let later = sample(
            t0 + Duration::from_nanos(1),
            &[
                ("d", dom("x", u64::MAX, u64::MAX)),
                ("e", dom("y", 0, u64::MAX)),
            ],
        );
        let l = host_load(
            &s,
            &later,
            HostSize {
                cpus: 0,
                memory_bytes: 0,
            },
            at(),
            None,
        )
        .unwrap();
        assert_eq!(l.cpu_millicores, u64::MAX);
        assert_eq!(l.memory_bytes, u64::MAX);
        assert_eq!((l.cpu_percent, l.memory_percent), (0, 0));
    }

    #[test]
    fn at_most_the_busiest_vms_are_listed_but_all_are_counted() {
        let t0 = Instant::now();
        let n = MAX_LISTED_VMS + 10;
        let names: Vec<String> = (0..n).map(|i| format!("d{i:04}")).collect();
        let prev = sample(
            t0,
            &names
                .iter()
                .map(|k| (k.as_str(), dom(k, 0, 0)))
                .collect::<Vec<_>>(),
        );
        let now = sample(
            t0 + Duration::from_secs(1),
            &names
                .iter()
                .enumerate()
                .map(|(i, k)| (k.as_str(), dom(k, i as u64 * 1_000_000, 1)))
                .collect::<Vec<_>>(),
        );
        let l = host_load(&prev, &now, SIZE, at(), None).unwrap();
        assert_eq!(l.vms.len(), MAX_LISTED_VMS);
        assert_eq!(l.vms[0].name, format!("d{:04}", n - 1));
        assert_eq!(l.memory_bytes, n as u64);
        assert_eq!(l.cpu_millicores, (0..n as u64).sum::<u64>());
    }

    #[test]
    fn pressure_is_read_where_the_kernel_has_psi() {
        let here = std::path::Path::new("/proc/pressure/cpu").exists();
        assert_eq!(pressure().is_some(), here);
    }
}
