//! libvirt's disk-snapshot, block-job and guest-freeze calls, which the `virt` crate 0.5
//! does not wrap: small safe functions over the C API (`virt::sys`).
//!
//! Each function takes a [`Domain`] the caller looked up and blocks; [`Libvirt`] runs them on
//! its blocking pool. Nothing here decides anything: what to snapshot or merge is
//! [`crate::snapshot`]'s business.
#![allow(unsafe_code)]

use super::HvError;
use super::libvirt::Libvirt;
use std::ffi::{CString, c_uint};
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

/// A block job running on a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockJob {
    /// libvirt's job type (`VIR_DOMAIN_BLOCK_JOB_TYPE_*`).
    pub kind: i32,
    /// Bytes done.
    pub cur: u64,
    /// Bytes to do (`cur == end` and `end > 0`: ready to pivot, or finished).
    pub end: u64,
}

impl BlockJob {
    /// An active commit: it mirrors writes until it is pivoted or aborted.
    pub fn is_active_commit(&self) -> bool {
        self.kind == sys::VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT as i32
    }

    /// All data is copied (an active commit is then ready to pivot).
    pub fn is_ready(&self) -> bool {
        self.end > 0 && self.cur == self.end
    }
}

fn cstr(s: &str) -> Result<CString, VirtError> {
    Ok(CString::new(s)?)
}

fn opt_cstr(s: Option<&str>) -> Result<Option<CString>, VirtError> {
    s.map(cstr).transpose()
}

fn ptr_of(s: &Option<CString>) -> *const std::ffi::c_char {
    s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Take an external, disk-only snapshot of every disk the XML names, all at one instant
/// (ATOMIC), into overlay files that already exist (REUSE_EXT), keeping no libvirt snapshot
/// metadata (NO_METADATA: the agent owns the layer tree). `quiesce` asks libvirt to freeze
/// the guest's filesystems through the guest agent around it.
pub fn create_disk_snapshot(dom: &Domain, xml: &str, quiesce: bool) -> Result<(), VirtError> {
    let xml = cstr(xml)?;
    let mut flags = sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        | sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        | sys::VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
        | sys::VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT;
    if quiesce {
        flags |= sys::VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
    }
    // SAFETY: `dom` is a live domain reference for the duration of the call and `xml` a
    // NUL-terminated string that outlives it.
    let snap = unsafe { sys::virDomainSnapshotCreateXML(dom.as_ptr(), xml.as_ptr(), flags) };
    if snap.is_null() {
        return Err(VirtError::last_error());
    }
    // SAFETY: `snap` is the one reference libvirt just returned to us; freeing it releases
    // only that handle (with NO_METADATA nothing else refers to it).
    unsafe { sys::virDomainSnapshotFree(snap) };
    Ok(())
}

/// Start committing `top` (a layer path, or `None` for the active layer) down into `base`
/// on disk `disk` (target name, e.g. vda). Committing the active layer is an active commit:
/// it must be pivoted with [`abort_block_job`] once [`BlockJob::is_ready`].
pub fn start_block_commit(
    dom: &Domain,
    disk: &str,
    base: &str,
    top: Option<&str>,
) -> Result<(), VirtError> {
    let disk = cstr(disk)?;
    let base = Some(cstr(base)?);
    let top = opt_cstr(top)?;
    let mut flags: c_uint = 0;
    if top.is_none() {
        flags |= sys::VIR_DOMAIN_BLOCK_COMMIT_ACTIVE;
    }
    // SAFETY: every pointer is a NUL-terminated string (or NULL for `top`, which libvirt
    // reads as the active layer) alive for the call; `dom` is a live reference.
    let rc = unsafe {
        sys::virDomainBlockCommit(
            dom.as_ptr(),
            disk.as_ptr(),
            ptr_of(&base),
            ptr_of(&top),
            0,
            flags,
        )
    };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok(())
}

/// The block job on `disk`, if one runs.
pub fn block_job(dom: &Domain, disk: &str) -> Result<Option<BlockJob>, VirtError> {
    let disk = cstr(disk)?;
    let mut info = sys::virDomainBlockJobInfo {
        type_: 0,
        bandwidth: 0,
        cur: 0,
        end: 0,
    };
    // SAFETY: `info` is a properly laid out struct libvirt fills in; `disk` outlives the call.
    let rc = unsafe { sys::virDomainGetBlockJobInfo(dom.as_ptr(), disk.as_ptr(), &mut info, 0) };
    match rc {
        0 => Ok(None),
        r if r > 0 => Ok(Some(BlockJob {
            kind: info.type_,
            cur: info.cur,
            end: info.end,
        })),
        _ => Err(VirtError::last_error()),
    }
}

/// Host bytes allocated to `disk` (QEMU's block allocation: the highest offset written in a
/// qcow2 file, the allocated extent of a raw one). The `virt` crate's `block_info` reads its
/// result even when the call fails, so this checks the return code itself.
pub fn block_allocation(dom: &Domain, disk: &str) -> Result<u64, VirtError> {
    let disk = cstr(disk)?;
    let mut info = sys::virDomainBlockInfo {
        capacity: 0,
        allocation: 0,
        physical: 0,
    };
    // SAFETY: `info` is a properly laid out struct libvirt fills in; `disk` outlives the call.
    let rc = unsafe { sys::virDomainGetBlockInfo(dom.as_ptr(), disk.as_ptr(), &mut info, 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok(info.allocation)
}

/// End the block job on `disk`: with `pivot`, switch the disk to the job's target (an active
/// commit's base) first; without, cancel it. Waits for libvirt to finish the switch.
pub fn abort_block_job(dom: &Domain, disk: &str, pivot: bool) -> Result<(), VirtError> {
    let disk = cstr(disk)?;
    let flags = if pivot {
        sys::VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT
    } else {
        0
    };
    // SAFETY: `disk` outlives the call; `dom` is a live reference.
    let rc = unsafe { sys::virDomainBlockJobAbort(dom.as_ptr(), disk.as_ptr(), flags) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok(())
}

/// Freeze every filesystem of the guest through the QEMU guest agent; returns how many.
pub fn fs_freeze(dom: &Domain) -> Result<u32, VirtError> {
    // SAFETY: NULL mount points with a count of 0 mean "all"; `dom` is a live reference.
    let rc = unsafe { sys::virDomainFSFreeze(dom.as_ptr(), std::ptr::null_mut(), 0, 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok(rc as u32)
}

/// Thaw the guest's filesystems (harmless when none is frozen); returns how many.
pub fn fs_thaw(dom: &Domain) -> Result<u32, VirtError> {
    // SAFETY: as for `fs_freeze`.
    let rc = unsafe { sys::virDomainFSThaw(dom.as_ptr(), std::ptr::null_mut(), 0, 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok(rc as u32)
}

/// The domain's live XML (with each disk's backing chain).
pub fn live_xml(dom: &Domain) -> Result<String, VirtError> {
    dom.xml_desc(0)
}

impl Libvirt {
    /// [`create_disk_snapshot`] on the named domain.
    pub async fn disk_snapshot(
        &self,
        name: &str,
        xml: String,
        quiesce: bool,
    ) -> Result<(), HvError> {
        self.with_domain("snapshot", name, move |d| {
            create_disk_snapshot(d, &xml, quiesce)
        })
        .await
    }

    /// [`start_block_commit`] on the named domain.
    pub async fn block_commit(
        &self,
        name: &str,
        disk: String,
        base: String,
        top: Option<String>,
    ) -> Result<(), HvError> {
        self.with_domain("block commit", name, move |d| {
            start_block_commit(d, &disk, &base, top.as_deref())
        })
        .await
    }

    /// [`block_job`] on the named domain.
    pub async fn block_job(&self, name: &str, disk: String) -> Result<Option<BlockJob>, HvError> {
        self.with_domain("block job info", name, move |d| block_job(d, &disk))
            .await
    }

    /// [`abort_block_job`] on the named domain.
    pub async fn end_block_job(
        &self,
        name: &str,
        disk: String,
        pivot: bool,
    ) -> Result<(), HvError> {
        self.with_domain("block job abort", name, move |d| {
            abort_block_job(d, &disk, pivot)
        })
        .await
    }

    /// [`fs_freeze`] on the named domain.
    pub async fn freeze(&self, name: &str) -> Result<u32, HvError> {
        self.with_domain("fsfreeze", name, fs_freeze).await
    }

    /// [`fs_thaw`] on the named domain.
    pub async fn thaw(&self, name: &str) -> Result<u32, HvError> {
        self.with_domain("fsthaw", name, fs_thaw).await
    }

    /// [`live_xml`] of the named domain.
    pub async fn live_xml(&self, name: &str) -> Result<String, HvError> {
        self.with_domain("xml", name, live_xml).await
    }
}
