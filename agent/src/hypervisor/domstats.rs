//! The CPU time and memory of every running domain in one call
//! (`virConnectGetAllDomainStats`), which the `virt` crate 0.5 returns only as raw records:
//! a small safe function over the C API that copies out the two figures the host's load
//! needs and frees the records.
#![allow(unsafe_code)]

use std::ffi::CStr;

use virt::connect::Connect;
use virt::error::Error as VirtError;
use virt::sys;

use super::HvError;
use super::libvirt::{Libvirt, lv};

/// One running domain's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainUsage {
    /// Domain name.
    pub name: String,
    /// CPU time used since the guest started, nanoseconds (`cpu.time`).
    pub cpu_time_ns: Option<u64>,
    /// Memory the guest holds, bytes: QEMU's resident set (`balloon.rss`), else the
    /// balloon's current size (`balloon.current`).
    pub memory_bytes: Option<u64>,
}

/// Read an unsigned typed parameter by name from a record's list.
fn ullong(params: &[sys::virTypedParameter], name: &str) -> Option<u64> {
    params.iter().find_map(|p| {
        // SAFETY: libvirt NUL-terminates `field` within its 80 bytes.
        let field = unsafe { CStr::from_ptr(p.field.as_ptr()) };
        if field.to_bytes() != name.as_bytes() {
            return None;
        }
        match p.type_ as u32 {
            // SAFETY: the type tag says which member of the union is set.
            sys::VIR_TYPED_PARAM_ULLONG => Some(unsafe { p.value.ul }),
            sys::VIR_TYPED_PARAM_LLONG => u64::try_from(unsafe { p.value.l }).ok(),
            _ => None,
        }
    })
}

/// CPU time and memory of every active domain on the connection.
pub fn all_usage(conn: &Connect) -> Result<Vec<DomainUsage>, VirtError> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    let stats = sys::VIR_DOMAIN_STATS_CPU_TOTAL | sys::VIR_DOMAIN_STATS_BALLOON;
    // SAFETY: `conn` is a live connection; libvirt allocates the NULL-terminated record
    // array into `records`, which is freed below with the matching list free.
    let n = unsafe {
        sys::virConnectGetAllDomainStats(
            conn.as_ptr(),
            stats,
            &mut records,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
        )
    };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: libvirt returned `n` valid record pointers; each record's `params` holds
        // `nparams` parameters and `dom` a live domain, all until the list is freed.
        let (name, params) = unsafe {
            let rec = &**records.add(i);
            let name = CStr::from_ptr(sys::virDomainGetName(rec.dom))
                .to_string_lossy()
                .into_owned();
            let params = if rec.params.is_null() || rec.nparams <= 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(rec.params, rec.nparams as usize)
            };
            (name, params)
        };
        let memory_kib =
            ullong(params, "balloon.rss").or_else(|| ullong(params, "balloon.current"));
        out.push(DomainUsage {
            name,
            cpu_time_ns: ullong(params, "cpu.time"),
            memory_bytes: memory_kib.map(|k| k.saturating_mul(1024)),
        });
    }
    // SAFETY: `records` came from virConnectGetAllDomainStats (or is NULL when n == 0, which
    // the free accepts); nothing read from it is used after this point.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(out)
}

impl Libvirt {
    /// [`all_usage`] on the blocking pool.
    pub async fn domain_usage(&self) -> Result<Vec<DomainUsage>, HvError> {
        self.call("all_domain_stats", |c| {
            all_usage(c).map_err(|e| lv("all_domain_stats", e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test driver keeps no counters (its records are empty): this checks the call,
    /// the names and the freeing; real figures are checked against QEMU in
    /// `tests/tests/rebalance.rs`.
    #[tokio::test]
    async fn the_test_driver_lists_its_one_running_domain() {
        let lv = Libvirt::new("test:///default");
        let usage = lv.domain_usage().await.expect("all domain stats");
        let names: Vec<&str> = usage.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["test"]);
    }
}
