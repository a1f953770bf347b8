//! Resident memory of a process: `VmRSS` and `VmHWM` (peak) from `/proc/PID/status`.
//! The parsing is pure; [`read`] does the I/O through procfs.

use serde::Serialize;

/// Resident set size now and at its peak, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rss {
    /// `VmRSS`.
    pub rss_bytes: u64,
    /// `VmHWM`, the high-water mark.
    pub peak_bytes: u64,
}

impl Rss {
    /// RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_bytes as f64 / (1024.0 * 1024.0)
    }
    /// Peak RSS in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak_bytes as f64 / (1024.0 * 1024.0)
    }
}

/// A field of `/proc/PID/status` in kB (`VmRSS:    1234 kB`), as bytes.
fn field_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        (it.next()? == "kB").then_some(n * 1024)
    })
}

/// RSS and peak from the text of `/proc/PID/status`.
pub fn parse_status(status: &str) -> Option<Rss> {
    Some(Rss {
        rss_bytes: field_kib(status, "VmRSS")?,
        peak_bytes: field_kib(status, "VmHWM")?,
    })
}

/// RSS of a live process; `None` when it is gone or not readable.
pub fn read(pid: u32) -> Option<Rss> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let st = p.status().ok()?;
    Some(Rss {
        rss_bytes: st.vmrss? * 1024,
        peak_bytes: st.vmhwm? * 1024,
    })
}

/// RSS of this process.
pub fn own() -> Option<Rss> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tironvisor-agent\nVmPeak:\t  300000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t4\n";

    #[test]
    fn rss_and_peak_are_read_in_bytes_from_proc_status() {
        let r = parse_status(STATUS).expect("parsed");
        assert_eq!(r.rss_bytes, 10 * 1024 * 1024);
        assert_eq!(r.peak_bytes, 20 * 1024 * 1024);
        assert_eq!(r.rss_mib(), 10.0);
        assert_eq!(r.peak_mib(), 20.0);
    }

    #[test]
    fn a_status_without_rss_gives_nothing() {
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), None);
        assert_eq!(parse_status("VmRSS:\tlots kB\nVmHWM:\t1 kB\n"), None);
    }

    #[test]
    fn a_key_that_is_only_a_prefix_does_not_match() {
        assert_eq!(field_kib("VmRSSX:\t5 kB\n", "VmRSS"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let me = own().expect("own status");
        assert!(me.rss_bytes > 0 && me.peak_bytes >= me.rss_bytes);
        let by_pid = read(std::process::id()).expect("own status through procfs");
        assert!(by_pid.rss_bytes > 0);
    }
}
