//! The [`Hypervisor`] on libvirt through the `virt` crate.
//!
//! Every libvirt call blocks, so each runs in `spawn_blocking` on a shared connection
//! (libvirt connections are thread-safe). A broken connection (libvirtd restarted) is closed
//! explicitly and reopened on the next call (or by [`Libvirt::ensure_connected`], which the
//! daemon calls every second), with exponential backoff between failed attempts; the event
//! callback is registered again, and subscribers of [`Hypervisor::reconnected`] are told so
//! they can resync at once.
//! Connections are never dropped while in the shared slot: `Connect`'s Drop panics when
//! closing fails, so [`close_quietly`] closes them and logs instead.
#![allow(unsafe_code)]

use super::caps::{HostCaps, parse_domain_caps};
use super::devices::parse_devices;
use super::events::{self, DomainEvent};
use super::{DomainStats, HostInfo, HvError, Hypervisor, Observed};
use crate::domain_xml::metadata::{DomainMetadata, NAMESPACE_URI};
use crate::lifecycle::{StopReason, VmState};
use async_trait::async_trait;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use virt::connect::Connect;
use virt::domain::{Domain, DomainShutoffReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys;

struct Live {
    conn: Connect,
    callback: Option<c_int>,
}

/// First and longest pause between failed connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Failed attempts since the connection was last good.
#[derive(Default)]
struct Retry {
    failures: u32,
    next_attempt: Option<Instant>,
}

struct Inner {
    uri: String,
    slot: Mutex<Option<Live>>,
    events: broadcast::Sender<DomainEvent>,
    reconnected: broadcast::Sender<()>,
    retry: Mutex<Retry>,
    connected: AtomicBool,
    /// A connection was open before (so the next open is a reconnect).
    was_open: AtomicBool,
    reconnects: AtomicU64,
}

fn backoff(failures: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1u32 << failures.min(6))
        .min(BACKOFF_MAX)
}

/// libvirt at one URI.
#[derive(Clone)]
pub struct Libvirt {
    inner: Arc<Inner>,
}

/// Close a connection without `Connect`'s panicking Drop.
pub(super) fn close_quietly(conn: Connect) {
    // SAFETY: `conn` owns one reference to a valid connection; we release exactly that
    // reference here and forget the wrapper so its Drop does not release it a second time.
    let rc = unsafe { sys::virConnectClose(conn.as_ptr()) };
    std::mem::forget(conn);
    if rc < 0 {
        tracing::warn!("closing a libvirt connection failed");
    }
}

fn is_connection_error(e: &VirtError) -> bool {
    matches!(
        e.code(),
        Enum::Known(
            ErrorNumber::NoConnect
                | ErrorNumber::Rpc
                | ErrorNumber::SystemError
                | ErrorNumber::AuthFailed
        )
    )
}

fn is_not_found(e: &VirtError) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::NoDomain))
}

pub(super) fn lv(op: &'static str, e: VirtError) -> HvError {
    HvError::Libvirt {
        op,
        connection: is_connection_error(&e),
        message: e.message().to_owned(),
    }
}

fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1000) % 1000, v % 1000)
}

impl Libvirt {
    /// A client for `uri`. The connection opens on first use.
    pub fn new(uri: &str) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (reconnected, _) = broadcast::channel(16);
        Self {
            inner: Arc::new(Inner {
                uri: uri.to_owned(),
                slot: Mutex::new(None),
                events,
                reconnected,
                retry: Mutex::default(),
                connected: AtomicBool::new(false),
                was_open: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    /// Check the connection and reopen it when it is gone (subject to the backoff).
    pub async fn ensure_connected(&self) -> bool {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.connection().is_ok())
            .await
            .unwrap_or(false)
    }

    /// Whether the last call found a working connection.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// How many times the connection was reopened after being lost.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Open the connection now (to fail fast at startup).
    pub async fn connect(&self) -> Result<(), HvError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.connection().map(|_| ())).await?
    }

    /// Close the connection (before exit).
    pub fn close(&self) {
        self.inner.drop_connection();
    }

    pub(super) async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, HvError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.connection()?;
            let result = f(&conn);
            if let Err(HvError::Libvirt {
                connection: true, ..
            }) = &result
            {
                tracing::warn!(op, "libvirt connection lost; reconnecting on next call");
                inner.drop_connection();
            }
            drop(conn);
            result
        })
        .await?
    }

    pub(super) async fn with_domain<T, F>(
        &self,
        op: &'static str,
        name: &str,
        f: F,
    ) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&Domain) -> Result<T, VirtError> + Send + 'static,
    {
        let name = name.to_owned();
        self.call(op, move |c| {
            let dom = c.lookup_domain_by_name(&name).map_err(|e| {
                if is_not_found(&e) {
                    HvError::NotFound(name.clone())
                } else {
                    lv(op, e)
                }
            })?;
            f(&dom).map_err(|e| {
                if is_not_found(&e) {
                    HvError::NotFound(name.clone())
                } else {
                    lv(op, e)
                }
            })
        })
        .await
    }
}

impl Inner {
    fn connection(&self) -> Result<Connect, HvError> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = slot.as_ref() {
            if live.conn.is_alive().unwrap_or(false) {
                return Ok(live.conn.clone());
            }
            tracing::warn!(uri = self.uri, "libvirt connection lost; reconnecting");
            if let Some(old) = slot.take() {
                Self::release(old);
            }
            self.connected.store(false, Ordering::Relaxed);
        }
        let connect_err = |message: String| HvError::Connect {
            uri: self.uri.clone(),
            message,
        };
        {
            let retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = retry.next_attempt
                && let Some(left) = at.checked_duration_since(Instant::now())
            {
                return Err(connect_err(format!(
                    "not connected; next attempt in {} ms",
                    left.as_millis()
                )));
            }
        }
        events::ensure_event_loop().map_err(connect_err)?;
        let conn = match Connect::open(Some(self.uri.as_str())) {
            Ok(c) => c,
            Err(e) => {
                let mut retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
                retry.failures += 1;
                let pause = backoff(retry.failures);
                retry.next_attempt = Some(Instant::now() + pause);
                self.connected.store(false, Ordering::Relaxed);
                tracing::warn!(
                    uri = self.uri,
                    attempt = retry.failures,
                    retry_in_ms = pause.as_millis() as u64,
                    error = e.message(),
                    "cannot connect to libvirt"
                );
                return Err(connect_err(e.message().to_owned()));
            }
        };
        // Keepalives detect a dead libvirtd; the in-process test driver has none.
        if !self.uri.starts_with("test:") {
            let _ = conn.set_keep_alive(5, 3);
        }
        let callback = match events::register(&conn, self.events.clone()) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "no libvirt lifecycle events; relying on resync");
                None
            }
        };
        let out = conn.clone();
        *slot = Some(Live { conn, callback });
        drop(slot);
        let failures =
            std::mem::take(&mut *self.retry.lock().unwrap_or_else(|e| e.into_inner())).failures;
        self.connected.store(true, Ordering::Relaxed);
        if self.was_open.swap(true, Ordering::Relaxed) {
            let n = self.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info!(
                uri = self.uri,
                failed_attempts = failures,
                reconnects = n,
                "libvirt connection restored"
            );
            let _ = self.reconnected.send(());
        }
        Ok(out)
    }

    fn release(live: Live) {
        if let Some(id) = live.callback {
            events::deregister(&live.conn, id);
        }
        close_quietly(live.conn);
    }

    fn drop_connection(&self) {
        self.connected.store(false, Ordering::Relaxed);
        let old = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(live) = old {
            Self::release(live);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Never let `Connect`'s panicking Drop run on the shared connection.
        self.drop_connection();
    }
}

fn state_of(dom: &Domain) -> Result<VmState, VirtError> {
    let (state, reason) = dom.state()?;
    Ok(match state {
        Enum::Known(DomainState::Running | DomainState::Blocked) => VmState::Running,
        Enum::Known(DomainState::Paused | DomainState::PMSuspended) => VmState::Paused,
        Enum::Known(DomainState::Shutdown) => VmState::Stopping,
        Enum::Known(DomainState::Crashed) => VmState::Stopped(StopReason::Crashed),
        Enum::Known(DomainState::NoState) => VmState::Starting,
        Enum::Known(DomainState::Shutoff) => VmState::Stopped(match reason {
            Enum::Known(DomainStateReason::Shutoff(Enum::Known(r))) => match r {
                DomainShutoffReason::Shutdown => StopReason::Shutdown,
                DomainShutoffReason::Destroyed => StopReason::Destroyed,
                DomainShutoffReason::Crashed => StopReason::Crashed,
                DomainShutoffReason::Failed => StopReason::Failed,
                _ => StopReason::NeverStarted,
            },
            _ => StopReason::NeverStarted,
        }),
        Enum::Unknown(_) => VmState::Starting,
    })
}

fn metadata_of(dom: &Domain, flags: u32) -> Result<Option<DomainMetadata>, VirtError> {
    match dom.metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(NAMESPACE_URI),
        flags,
    ) {
        Ok(xml) => Ok(DomainMetadata::parse(&xml).ok()),
        Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomainMetadata)) => Ok(None),
        // The guest stopped between the state check and this call: no live definition.
        Err(e)
            if flags == sys::VIR_DOMAIN_AFFECT_LIVE
                && matches!(e.code(), Enum::Known(ErrorNumber::OperationInvalid)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn observe_domain(dom: &Domain) -> Result<Observed, VirtError> {
    let state = state_of(dom)?;
    let active = dom.is_active()?;
    let config = if dom.is_persistent()? {
        metadata_of(dom, sys::VIR_DOMAIN_AFFECT_CONFIG)?
    } else {
        None
    };
    let live = if active {
        metadata_of(dom, sys::VIR_DOMAIN_AFFECT_LIVE)?
    } else {
        None
    };
    let interfaces = if active {
        parse_devices(&dom.xml_desc(0)?)
            .map(|d| d.interfaces)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(Observed {
        name: dom.name()?,
        uuid: dom.uuid_string()?,
        state,
        config,
        live,
        interfaces,
    })
}

/// Seconds between the guest balloon driver's memory reports, asked of running guests that
/// do not report yet.
const BALLOON_PERIOD_SECONDS: i32 = 10;

/// The balloon's figures into `s`: the host-side resident size always, the guest's own use
/// when its balloon driver reports (asking it to report every few seconds otherwise; a
/// guest without the driver never will, and that is fine).
fn balloon(d: &Domain, s: &mut DomainStats) {
    let Ok(stats) = d.memory_stats(0) else {
        return;
    };
    let get = |tag: u32| stats.iter().find(|m| m.tag == tag).map(|m| m.val);
    s.rss_bytes = get(sys::VIR_DOMAIN_MEMORY_STAT_RSS).unwrap_or(0) * 1024;
    let available = get(sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE);
    let unused = get(sys::VIR_DOMAIN_MEMORY_STAT_UNUSED);
    match available.zip(unused) {
        Some((a, u)) => s.guest_used_bytes = Some(a.saturating_sub(u) * 1024),
        None => {
            let _ = d.set_memory_stats_period(BALLOON_PERIOD_SECONDS, sys::VIR_DOMAIN_MEM_LIVE);
        }
    }
}

#[async_trait]
impl Hypervisor for Libvirt {
    async fn list_owned(&self) -> Result<Vec<Observed>, HvError> {
        self.call("list", |c| {
            let doms = c.list_all_domains(0).map_err(|e| lv("list", e))?;
            let mut out = Vec::new();
            for dom in doms {
                match observe_domain(&dom) {
                    Ok(o) if o.owner().is_some() => out.push(o),
                    Ok(_) => {}
                    // Undefined between the listing and the lookup.
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(lv("list", e)),
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn observe(&self, name: &str) -> Result<Option<Observed>, HvError> {
        match self.with_domain("observe", name, observe_domain).await {
            Ok(o) => Ok(Some(o)),
            Err(HvError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn define(&self, xml: &str) -> Result<(), HvError> {
        let xml = xml.to_owned();
        self.call("define", move |c| {
            c.define_domain_xml(&xml)
                .map(|_| ())
                .map_err(|e| lv("define", e))
        })
        .await
    }

    async fn start(&self, name: &str) -> Result<(), HvError> {
        self.with_domain("start", name, |d| d.create()).await
    }

    async fn shutdown(&self, name: &str) -> Result<(), HvError> {
        self.with_domain("shutdown", name, |d| match d.shutdown() {
            Ok(()) => Ok(()),
            Err(_) if !d.is_active()? => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }

    async fn destroy(&self, name: &str) -> Result<(), HvError> {
        self.with_domain("destroy", name, |d| match d.destroy() {
            Ok(()) => Ok(()),
            Err(_) if !d.is_active()? => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }

    async fn undefine(&self, name: &str) -> Result<(), HvError> {
        let r = self
            .with_domain("undefine", name, |d| {
                // The TPM state goes too, explicitly: every caller undefines a VM confirmed
                // deleted (its finalizer, a leftover the API no longer has, a namesake of
                // another uid), and sealed keys must not outlive their VM on the host.
                let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM
                    | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | sys::VIR_DOMAIN_UNDEFINE_TPM;
                match d.undefine_flags(flags) {
                    Ok(()) => Ok(()),
                    // Drivers without NVRAM or TPM support refuse the flags.
                    Err(e)
                        if matches!(
                            e.code(),
                            Enum::Known(ErrorNumber::InvalidArg | ErrorNumber::NoSupport)
                        ) =>
                    {
                        d.undefine()
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        match r {
            Err(HvError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn stats(&self, name: &str) -> Result<DomainStats, HvError> {
        self.with_domain("stats", name, |d| {
            let info = d.info()?;
            let mut s = DomainStats {
                cpu_time_ns: info.cpu_time,
                memory_bytes: info.memory * 1024,
                vcpus: info.nr_virt_cpu,
                ..Default::default()
            };
            if !d.is_active()? {
                return Ok(s);
            }
            balloon(d, &mut s);
            let devices = parse_devices(&d.xml_desc(0)?).unwrap_or_default();
            for disk in &devices.disks {
                if let Ok(b) = d.block_stats(disk) {
                    s.disk_read_bytes += b.rd_bytes.max(0) as u64;
                    s.disk_write_bytes += b.wr_bytes.max(0) as u64;
                }
                if let Ok(a) = super::blockjob::block_allocation(d, disk) {
                    s.disk_allocated_bytes += a;
                }
            }
            for (_, dev) in &devices.interfaces {
                if let Some(dev) = dev
                    && let Ok(i) = d.interface_stats(dev)
                {
                    s.net_rx_bytes += i.rx_bytes.max(0) as u64;
                    s.net_tx_bytes += i.tx_bytes.max(0) as u64;
                }
            }
            Ok(s)
        })
        .await
    }

    async fn host_info(&self) -> Result<HostInfo, HvError> {
        self.call("host_info", |c| {
            let node = c.node_info().map_err(|e| lv("host_info", e))?;
            Ok(HostInfo {
                cpus: node.cpus,
                memory_kib: node.memory,
                cpu_model: node.model,
                libvirt_version: c.lib_version().map(version_string).unwrap_or_default(),
                hypervisor_version: c.hyp_version().map(version_string).unwrap_or_default(),
                qemu_label: c
                    .capabilities()
                    .ok()
                    .and_then(|caps| crate::health::parse_dac_label(&caps)),
            })
        })
        .await
    }

    async fn probe_capabilities(&self) -> Result<HostCaps, HvError> {
        self.call("probe_capabilities", |c| {
            // test:///default has no domain capabilities; its host capabilities stand in.
            if c.driver_type()
                .is_ok_and(|t| t.eq_ignore_ascii_case("test"))
            {
                c.capabilities().map_err(|e| lv("capabilities", e))?;
                Ok(HostCaps::default())
            } else {
                let xml = c
                    .domain_capabilities(None, None, None, None, 0)
                    .map_err(|e| lv("domain_capabilities", e))?;
                parse_domain_caps(&xml).map_err(|e| HvError::Libvirt {
                    op: "domain_capabilities",
                    message: format!("the answer is not readable XML: {e}"),
                    connection: false,
                })
            }
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.inner.events.subscribe()
    }

    fn reconnected(&self) -> broadcast::Receiver<()> {
        self.inner.reconnected.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::version_string;

    #[test]
    fn failed_connection_attempts_back_off_exponentially_up_to_a_limit() {
        use super::{BACKOFF_MAX, BACKOFF_MIN, backoff};
        assert_eq!(backoff(0), BACKOFF_MIN);
        assert_eq!(backoff(1), BACKOFF_MIN * 2);
        assert_eq!(backoff(3), BACKOFF_MIN * 8);
        assert_eq!(backoff(50), BACKOFF_MAX);
    }

    #[test]
    fn libvirt_versions_are_spelled_as_dotted_triples() {
        assert_eq!(version_string(9_000_000), "9.0.0");
        assert_eq!(version_string(7_002_022), "7.2.22");
    }
}
