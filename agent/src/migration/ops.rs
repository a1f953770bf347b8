//! The libvirt calls of a live migration, blocking, each on a connection of its own (a
//! migrate call holds its connection for the whole copy; progress and abort must not wait
//! behind it). Call them from `spawn_blocking` or a dedicated thread.
//!
//! `virt` 0.5 has the migrate call and job statistics but no abort: [`abort_job`] wraps
//! `virDomainAbortJob` from the sys bindings.
#![allow(unsafe_code)]

use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

/// Why a migration call failed: libvirt's own message.
#[derive(Debug, thiserror::Error)]
#[error("libvirt {op}: {message}")]
pub struct OpError {
    /// The call.
    pub op: &'static str,
    /// libvirt's message.
    pub message: String,
}

fn err(op: &'static str) -> impl Fn(virt::error::Error) -> OpError {
    move |e| OpError {
        op,
        message: e.message().to_owned(),
    }
}

/// A connection closed on drop (virt's own Drop panics when close fails).
struct Conn(Option<Connect>);

impl Conn {
    fn open(uri: &str) -> Result<Self, OpError> {
        Connect::open(Some(uri))
            .map(|c| Conn(Some(c)))
            .map_err(err("connect"))
    }

    fn domain(&self, name: &str) -> Result<Domain, OpError> {
        let c = self.0.as_ref().expect("open until dropped");
        c.lookup_domain_by_name(name).map_err(err("lookup domain"))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            // SAFETY: `c` owns one reference to a valid connection; it is released exactly
            // once here and the wrapper forgotten so its (panicking) Drop does not run.
            let rc = unsafe { sys::virConnectClose(c.as_ptr()) };
            std::mem::forget(c);
            if rc < 0 {
                tracing::warn!("closing a libvirt connection failed");
            }
        }
    }
}

/// What to send where.
#[derive(Clone, Debug)]
pub struct Request {
    /// The source's libvirt URI (the agent's own).
    pub source_uri: String,
    /// The domain to move.
    pub domain: String,
    /// The target's libvirt URI, opened by the source's libvirtd (peer to peer).
    pub target_uri: String,
    /// The address the target's QEMU listens on for memory and disks.
    pub target_address: String,
    /// The definition the target runs (paths of the target's VM directory).
    pub dest_xml: String,
    /// Copy the disks that are not shared (the top layer: the target holds the images they
    /// are layered on).
    pub copy_disks: bool,
    /// Bandwidth cap, MiB/s.
    pub bandwidth_mib: Option<u64>,
}

/// The flags of [`migrate`]: live, peer to peer, persistent on the target, undefined on
/// the source once QEMU completed, and the disks' top layers copied when asked.
pub fn flags(copy_disks: bool) -> u32 {
    let mut f = sys::VIR_MIGRATE_LIVE
        | sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    if copy_disks {
        f |= sys::VIR_MIGRATE_NON_SHARED_INC;
    }
    f
}

/// The live definition to send: migratable (no runtime-only parts) with secrets.
pub fn migratable_xml(source_uri: &str, domain: &str) -> Result<String, OpError> {
    let conn = Conn::open(source_uri)?;
    conn.domain(domain)?
        .xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE | sys::VIR_DOMAIN_XML_SECURE)
        .map_err(err("dump XML"))
}

/// Run the migration to its end (blocks for the whole copy).
pub fn migrate(req: &Request) -> Result<(), OpError> {
    let conn = Conn::open(&req.source_uri)?;
    let dom = conn.domain(&req.domain)?;
    let uri = format!("tcp://{}", bracket(&req.target_address));
    let params = MigrateParameters {
        uri: Some(uri),
        listen_address: Some(req.target_address.clone()),
        dest_xml: Some(req.dest_xml.clone()),
        persist_xml: Some(req.dest_xml.clone()),
        bandwidth: req.bandwidth_mib,
        ..Default::default()
    };
    dom.migrate_to_uri3(Some(&req.target_uri), params, flags(req.copy_disks))
        .map_err(err("migrate"))
}

/// An IPv6 address in brackets, as a URI needs it.
fn bracket(addr: &str) -> String {
    if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]")
    } else {
        addr.to_owned()
    }
}

/// Statistics of a job: the running one, or (`completed`) the last one that finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Whether a job runs (for the running one) or any was recorded (for the completed).
    pub active: bool,
    /// Memory to copy, bytes.
    pub mem_total: u64,
    /// Memory left, bytes.
    pub mem_remaining: u64,
    /// Rate, bytes/s.
    pub mem_bps: u64,
    /// Pass over memory.
    pub iteration: u64,
    /// Pages dirtied per second.
    pub dirty_rate: u64,
    /// Disk bytes to copy.
    pub disk_total: u64,
    /// Disk bytes left.
    pub disk_remaining: u64,
    /// Guest paused at the switch-over, ms.
    pub downtime_ms: Option<u64>,
    /// Time the job took so far, ms.
    pub elapsed_ms: Option<u64>,
}

/// `virDomainGetJobStats` of `domain` on `uri`.
pub fn job_stats(uri: &str, domain: &str, completed: bool) -> Result<JobStats, OpError> {
    let conn = Conn::open(uri)?;
    let dom = conn.domain(domain)?;
    let flags = if completed {
        sys::VIR_DOMAIN_JOB_STATS_COMPLETED
    } else {
        0
    };
    let s = dom.job_stats(flags).map_err(err("job stats"))?;
    Ok(JobStats {
        active: s.r#type != sys::VIR_DOMAIN_JOB_NONE as i32,
        mem_total: s.mem_total.unwrap_or(0),
        mem_remaining: s.mem_remaining.unwrap_or(0),
        mem_bps: s.mem_bps.unwrap_or(0),
        iteration: s.mem_iteration.unwrap_or(0),
        dirty_rate: s.mem_dirty_rate.unwrap_or(0),
        disk_total: s.disk_total.unwrap_or(0),
        disk_remaining: s.disk_remaining.unwrap_or(0),
        downtime_ms: s.downtime,
        elapsed_ms: s.time_elapsed,
    })
}

/// Abort the job running on `domain` (`virDomainAbortJob`); the migrate call then returns
/// an error and the guest keeps running here.
pub fn abort_job(uri: &str, domain: &str) -> Result<(), OpError> {
    let conn = Conn::open(uri)?;
    let dom = conn.domain(domain)?;
    // SAFETY: `dom` holds a valid virDomainPtr for the duration of the call (it is dropped,
    // and the pointer freed, only after it returns); virDomainAbortJob does not keep it.
    let rc = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
    if rc < 0 {
        return Err(OpError {
            op: "abort job",
            message: virt::error::Error::last_error().message().to_owned(),
        });
    }
    Ok(())
}

/// Whether `domain` exists on `uri` and runs.
pub fn is_running(uri: &str, domain: &str) -> Result<bool, OpError> {
    let conn = Conn::open(uri)?;
    match conn.domain(domain) {
        Ok(d) => d.is_active().map_err(err("domain state")),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_copy_the_top_layer_of_disks_only_when_asked() {
        let f = flags(false);
        assert_ne!(f & sys::VIR_MIGRATE_LIVE, 0);
        assert_ne!(f & sys::VIR_MIGRATE_PEER2PEER, 0);
        assert_ne!(f & sys::VIR_MIGRATE_UNDEFINE_SOURCE, 0);
        assert_eq!(f & sys::VIR_MIGRATE_NON_SHARED_INC, 0);
        assert_ne!(flags(true) & sys::VIR_MIGRATE_NON_SHARED_INC, 0);
        assert_eq!(flags(true) & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
    }

    #[test]
    fn ipv6_addresses_are_bracketed_in_uris() {
        assert_eq!(bracket("fd00::2"), "[fd00::2]");
        assert_eq!(bracket("198.18.0.2"), "198.18.0.2");
    }

    #[test]
    fn a_missing_domain_is_an_error_with_libvirts_message() {
        let e = job_stats("test:///default", "no-such-domain", false).unwrap_err();
        assert_eq!(e.op, "lookup domain");
        assert!(e.message.contains("no-such-domain"), "{e}");
        assert!(!is_running("test:///default", "no-such-domain").unwrap());
    }
}
