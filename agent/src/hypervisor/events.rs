//! libvirt domain lifecycle events through the raw C API (the `virt` crate has no safe
//! wrapper for domain events).
//!
//! libvirt's default event loop is process-global: it is registered once, before the first
//! connection opens, and run on its own OS thread forever. Each connection registers one
//! lifecycle callback whose opaque pointer owns a channel sender; libvirt frees it through
//! the free callback when the registration goes away.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;
use tokio::sync::broadcast;
use virt::sys;

/// A lifecycle event of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEvent {
    /// Domain name.
    pub name: String,
    /// libvirt's event (`VIR_DOMAIN_EVENT_*`: defined, started, stopped, ...).
    pub event: i32,
    /// libvirt's detail for that event.
    pub detail: i32,
}

static EVENT_LOOP: OnceLock<Result<(), String>> = OnceLock::new();

/// Register libvirt's default event loop implementation and run it on a dedicated thread.
/// Idempotent; must run before the first `Connect::open` for events (and keepalives) to work.
pub(crate) fn ensure_event_loop() -> Result<(), String> {
    EVENT_LOOP
        .get_or_init(|| {
            // libvirt prints every error to stderr by default; ours are returned and logged.
            virt::error::clear_error_callback();
            virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| {
                    loop {
                        if let Err(e) = virt::event::event_run_default_impl() {
                            tracing::warn!(error = %e, "libvirt event loop iteration failed");
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
}

type Sender = broadcast::Sender<DomainEvent>;

unsafe extern "C" fn lifecycle_cb(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: `opaque` is the `Box<Sender>` leaked in `register`; libvirt keeps it alive until
    // it calls `free_cb`, which happens only after the last callback returned.
    let tx = unsafe { &*(opaque as *const Sender) };
    // SAFETY: `dom` is valid for the duration of the callback; virDomainGetName returns a
    // pointer into the domain object (not to be freed), or NULL.
    let name_ptr = unsafe { sys::virDomainGetName(dom) };
    if !name_ptr.is_null() {
        // SAFETY: non-null, NUL-terminated string owned by `dom`, copied before returning.
        let name = unsafe { CStr::from_ptr(name_ptr) }
            .to_string_lossy()
            .into_owned();
        // No receiver is fine: the periodic resync still converges.
        let _ = tx.send(DomainEvent {
            name,
            event,
            detail,
        });
    }
    0
}

unsafe extern "C" fn free_cb(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Box::into_raw` in `register` and libvirt calls this once.
    drop(unsafe { Box::from_raw(opaque as *mut Sender) });
}

/// Register a lifecycle callback on `conn` that forwards events into `tx`. Returns the
/// callback id.
pub(crate) fn register(conn: &virt::connect::Connect, tx: Sender) -> Result<c_int, String> {
    let opaque = Box::into_raw(Box::new(tx)) as *mut c_void;
    // The generic callback type erases the lifecycle callback's signature, as libvirt's
    // VIR_DOMAIN_EVENT_CALLBACK macro does in C.
    // SAFETY: libvirt calls the callback with the lifecycle signature for
    // VIR_DOMAIN_EVENT_ID_LIFECYCLE, so transmuting between the two function pointer types
    // (same ABI, more arguments) is what the C API prescribes.
    let cb: sys::virConnectDomainEventGenericCallback = unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                c_int,
                c_int,
                *mut c_void,
            ) -> c_int,
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(lifecycle_cb)
    }
    .into();
    // SAFETY: `conn` is an open connection for the duration of the call; a NULL domain means
    // every domain; `opaque` is owned by libvirt from here on and freed through `free_cb`.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            cb,
            opaque,
            Some(free_cb),
        )
    };
    if id < 0 {
        // SAFETY: registration failed, so libvirt did not take ownership of `opaque`.
        drop(unsafe { Box::from_raw(opaque as *mut Sender) });
        return Err(virt::error::Error::last_error().to_string());
    }
    Ok(id)
}

/// Remove a callback registered with [`register`]; errors are logged (the connection may
/// already be gone, which removes it anyway).
pub(crate) fn deregister(conn: &virt::connect::Connect, id: c_int) {
    // SAFETY: `conn` is a live connection object; an unknown id only makes libvirt fail.
    let rc = unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
    if rc < 0 {
        tracing::debug!("deregistering the libvirt event callback failed");
    }
}
