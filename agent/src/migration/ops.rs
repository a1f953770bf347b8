//! The libvirt calls of a live migration, blocking, each on a connection of its own (a
//! migrate call holds its connection for the whole copy; progress and abort must not wait
//! behind it). Call them from `spawn_blocking` or a dedicated thread.
//!
//! `virt` 0.5 has the migrate call and job statistics but no abort, no post-copy switch and
//! no downtime setting: [`abort_job`], [`start_post_copy`] and [`set_max_downtime`] wrap
//! `virDomainAbortJob`, `virDomainMigrateStartPostCopy` and `virDomainMigrateSetMaxDowntime`
//! from the sys bindings.
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

pub(super) fn err(op: &'static str) -> impl Fn(virt::error::Error) -> OpError {
    move |e| OpError {
        op,
        message: e.message().to_owned(),
    }
}

/// A connection closed on drop (virt's own Drop panics when close fails).
pub(super) struct Conn(Option<Connect>);

impl Conn {
    pub(super) fn open(uri: &str) -> Result<Self, OpError> {
        Connect::open(Some(uri))
            .map(|c| Conn(Some(c)))
            .map_err(err("connect"))
    }

    pub(super) fn domain(&self, name: &str) -> Result<Domain, OpError> {
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
    /// What the policy enables for the job.
    pub features: Features,
    /// Leave the guest paused on the target (a restart elsewhere: it boots afresh there).
    pub paused: bool,
}

/// QEMU features a policy enables for a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Throttle the guest's vCPUs when it dirties memory faster than it is sent.
    pub auto_converge: bool,
    /// Allow a later switch to post-copy ([`start_post_copy`]).
    pub post_copy: bool,
    /// XBZRLE compression of pages sent again.
    pub compression: bool,
}

/// The flags of [`migrate`]: live, peer to peer, persistent on the target, undefined on
/// the source once QEMU completed, the disks' top layers copied when asked, and what the
/// policy enables.
pub fn flags(copy_disks: bool, features: Features) -> u32 {
    let mut f = sys::VIR_MIGRATE_LIVE
        | sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    if copy_disks {
        f |= sys::VIR_MIGRATE_NON_SHARED_INC;
    }
    if features.auto_converge {
        f |= sys::VIR_MIGRATE_AUTO_CONVERGE;
    }
    if features.post_copy {
        f |= sys::VIR_MIGRATE_POSTCOPY;
    }
    if features.compression {
        f |= sys::VIR_MIGRATE_COMPRESSED;
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
        compression: req.features.compression.then(|| "xbzrle".to_owned()),
        ..Default::default()
    };
    let mut f = flags(req.copy_disks, req.features);
    if req.paused {
        f |= sys::VIR_MIGRATE_PAUSED;
    }
    dom.migrate_to_uri3(Some(&req.target_uri), params, f)
        .map_err(err("migrate"))
}

/// How [`migrate_falling_back`] went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed as asked.
    Completed,
    /// The policy allowed post-copy but a QEMU refused it before anything was sent (it may
    /// not use userfaultfd: `vm.unprivileged_userfaultfd=0` and no CAP_SYS_PTRACE); the job
    /// was started again without it and completed. QEMU's message.
    CompletedWithoutPostCopy(String),
}

/// Whether QEMU refused post-copy itself at the start of the job (setting the
/// `postcopy-ram` capability), so the same job without post-copy may go ahead.
pub fn post_copy_unsupported(e: &OpError) -> bool {
    e.message.contains("Postcopy is not supported")
}

/// [`migrate`]; when the policy allows post-copy and QEMU refuses it before the copy starts,
/// once more without it (`dropped` is set first, so the job's steering stops asking for the
/// switch), rather than failing a migration that pre-copy alone may complete.
pub fn migrate_falling_back(
    req: &Request,
    dropped: &std::sync::atomic::AtomicBool,
) -> Result<Outcome, OpError> {
    match migrate(req) {
        Ok(()) => Ok(Outcome::Completed),
        Err(e) if req.features.post_copy && post_copy_unsupported(&e) => {
            dropped.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut again = req.clone();
            again.features.post_copy = false;
            migrate(&again).map(|()| Outcome::CompletedWithoutPostCopy(e.message))
        }
        Err(e) => Err(e),
    }
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

/// Typed parameters libvirt allocated, freed on drop.
struct Params {
    ptr: sys::virTypedParameterPtr,
    n: std::os::raw::c_int,
}

impl Params {
    /// The unsigned 64-bit parameter `name`, when present.
    fn ull(&self, name: &std::ffi::CStr) -> Option<u64> {
        if self.ptr.is_null() {
            return None;
        }
        let mut v: std::os::raw::c_ulonglong = 0;
        // SAFETY: `ptr`/`n` are the array libvirt returned (valid until drop); `name` is a
        // NUL-terminated string; `v` is a valid out pointer.
        let rc = unsafe { sys::virTypedParamsGetULLong(self.ptr, self.n, name.as_ptr(), &mut v) };
        (rc == 1).then_some(v)
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: the array and count libvirt returned, freed exactly once.
            unsafe { sys::virTypedParamsFree(self.ptr, self.n) };
        }
    }
}

/// `virDomainGetJobStats` of `domain` on `uri`: the running job, or (`completed`) the last
/// one that finished. (`virt`'s own wrapper crashes on the empty answer of a domain with no
/// job, so this one goes through the sys bindings.)
pub fn job_stats(uri: &str, domain: &str, completed: bool) -> Result<JobStats, OpError> {
    let conn = Conn::open(uri)?;
    let dom = conn.domain(domain)?;
    let flags = if completed {
        sys::VIR_DOMAIN_JOB_STATS_COMPLETED
    } else {
        0
    };
    let mut job_type: std::os::raw::c_int = 0;
    let mut p = Params {
        ptr: std::ptr::null_mut(),
        n: 0,
    };
    // SAFETY: `dom` is valid for the call; the out pointers are valid; libvirt allocates
    // the array (or leaves it null), which `Params` frees.
    let rc = unsafe {
        sys::virDomainGetJobStats(dom.as_ptr(), &mut job_type, &mut p.ptr, &mut p.n, flags)
    };
    if rc < 0 {
        return Err(OpError {
            op: "job stats",
            message: virt::error::Error::last_error().message().to_owned(),
        });
    }
    let u = |name| p.ull(name).unwrap_or(0);
    Ok(JobStats {
        active: job_type != sys::VIR_DOMAIN_JOB_NONE as std::os::raw::c_int,
        mem_total: u(sys::VIR_DOMAIN_JOB_MEMORY_TOTAL),
        mem_remaining: u(sys::VIR_DOMAIN_JOB_MEMORY_REMAINING),
        mem_bps: u(sys::VIR_DOMAIN_JOB_MEMORY_BPS),
        iteration: u(sys::VIR_DOMAIN_JOB_MEMORY_ITERATION),
        dirty_rate: u(sys::VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE),
        disk_total: u(sys::VIR_DOMAIN_JOB_DISK_TOTAL),
        disk_remaining: u(sys::VIR_DOMAIN_JOB_DISK_REMAINING),
        downtime_ms: p.ull(sys::VIR_DOMAIN_JOB_DOWNTIME),
        elapsed_ms: p.ull(sys::VIR_DOMAIN_JOB_TIME_ELAPSED),
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

/// The last libvirt error as an [`OpError`] of `op`.
fn last_error(op: &'static str) -> OpError {
    OpError {
        op,
        message: virt::error::Error::last_error().message().to_owned(),
    }
}

/// Switch the running migration of `domain` to post-copy
/// (`virDomainMigrateStartPostCopy`): the guest resumes on the target, which fetches the
/// pages still here on demand. Only for a job started with [`Features::post_copy`].
pub fn start_post_copy(uri: &str, domain: &str) -> Result<(), OpError> {
    let conn = Conn::open(uri)?;
    let dom = conn.domain(domain)?;
    // SAFETY: `dom` holds a valid virDomainPtr for the duration of the call (dropped, and
    // freed, only after it returns); the call keeps no reference to it; flags must be 0.
    let rc = unsafe { sys::virDomainMigrateStartPostCopy(dom.as_ptr(), 0) };
    if rc < 0 {
        return Err(last_error("start post-copy"));
    }
    Ok(())
}

/// The longest pause at the switch-over QEMU may plan for, milliseconds
/// (`virDomainMigrateSetMaxDowntime`), for the running migration of `domain`.
pub fn set_max_downtime(uri: &str, domain: &str, ms: u64) -> Result<(), OpError> {
    let conn = Conn::open(uri)?;
    let dom = conn.domain(domain)?;
    // SAFETY: as in `start_post_copy`: a valid domain pointer for the call, flags 0.
    let rc = unsafe { sys::virDomainMigrateSetMaxDowntime(dom.as_ptr(), ms, 0) };
    if rc < 0 {
        return Err(last_error("set max downtime"));
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
        let f = flags(false, Features::default());
        assert_ne!(f & sys::VIR_MIGRATE_LIVE, 0);
        assert_ne!(f & sys::VIR_MIGRATE_PEER2PEER, 0);
        assert_ne!(f & sys::VIR_MIGRATE_UNDEFINE_SOURCE, 0);
        assert_eq!(f & sys::VIR_MIGRATE_NON_SHARED_INC, 0);
        let d = flags(true, Features::default());
        assert_ne!(d & sys::VIR_MIGRATE_NON_SHARED_INC, 0);
        assert_eq!(d & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        for x in [
            sys::VIR_MIGRATE_AUTO_CONVERGE,
            sys::VIR_MIGRATE_POSTCOPY,
            sys::VIR_MIGRATE_COMPRESSED,
        ] {
            assert_eq!(f & x, 0, "off unless the policy enables it");
        }
    }

    #[test]
    fn the_policys_features_become_flags() {
        let all = Features {
            auto_converge: true,
            post_copy: true,
            compression: true,
        };
        let f = flags(false, all);
        assert_ne!(f & sys::VIR_MIGRATE_AUTO_CONVERGE, 0);
        assert_ne!(f & sys::VIR_MIGRATE_POSTCOPY, 0);
        assert_ne!(f & sys::VIR_MIGRATE_COMPRESSED, 0);
        let only = Features {
            post_copy: true,
            ..Features::default()
        };
        assert_eq!(flags(false, only) & sys::VIR_MIGRATE_AUTO_CONVERGE, 0);
    }

    #[test]
    fn post_copy_and_downtime_report_libvirts_refusal() {
        // The test driver runs no migrations: libvirt's own error, no crash.
        let e = start_post_copy("test:///default", "test").unwrap_err();
        assert_eq!(e.op, "start post-copy");
        assert!(!e.message.is_empty());
        let e = set_max_downtime("test:///default", "test", 300).unwrap_err();
        assert_eq!(e.op, "set max downtime");
        let e = start_post_copy("test:///default", "no-such-domain").unwrap_err();
        assert_eq!(e.op, "lookup domain");
    }

    #[test]
    fn ipv6_addresses_are_bracketed_in_uris() {
        assert_eq!(bracket("fd00::2"), "[fd00::2]");
        assert_eq!(bracket("198.18.0.2"), "198.18.0.2");
    }

    #[test]
    fn job_stats_report_libvirts_refusal_instead_of_crashing() {
        // The test driver has no job statistics: an error with libvirt's message, where
        // virt's own wrapper would crash on the empty answer.
        let e = job_stats("test:///default", "test", false).unwrap_err();
        assert_eq!(e.op, "job stats");
        assert!(e.message.contains("virDomainGetJobStats"), "{e}");
    }

    #[test]
    fn a_missing_domain_is_an_error_with_libvirts_message() {
        let e = job_stats("test:///default", "no-such-domain", false).unwrap_err();
        assert_eq!(e.op, "lookup domain");
        assert!(e.message.contains("not found"), "{e}");
        assert!(!is_running("test:///default", "no-such-domain").unwrap());
    }

    #[test]
    fn only_qemus_own_post_copy_refusal_lets_the_job_go_again_without_it() {
        let refusal = OpError {
            op: "migrate",
            message: "internal error: unable to execute QEMU command 'migrate-set-capabilities': \
                      Postcopy is not supported"
                .into(),
        };
        assert!(post_copy_unsupported(&refusal));
        let other = OpError {
            op: "migrate",
            message: "operation failed: migration out job: unexpectedly failed".into(),
        };
        assert!(!post_copy_unsupported(&other));
    }
}
