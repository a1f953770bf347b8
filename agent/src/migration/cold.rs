//! A restart elsewhere (`mode: Restart`, a drain of a VM with `drainStrategy: Restart`), the
//! libvirt half: the source shuts the guest down (ACPI, destroyed once the grace period is
//! over) and starts it again *paused*, so its CPUs never run and its memory holds nothing but
//! firmware; the ordinary migration then copies it with its disks (never recreated empty) and
//! leaves it paused on the target, where it is stopped so the VM controller boots it afresh.
//! No data channel of its own: the disks travel in QEMU's migration stream as they do live.
//!
//! Blocking calls, each on a connection of its own: call them from `spawn_blocking`.

use super::ops::{Conn, OpError, err};
use std::time::{Duration, Instant};
use virt::sys;

/// How the guest went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOff {
    /// It was not running.
    AlreadyOff,
    /// It powered off after the ACPI request.
    Graceful,
    /// It was destroyed when the grace period was over.
    Forced,
}

/// How often the domain's state is read while the guest shuts down.
const POLL: Duration = Duration::from_millis(200);

/// Shut the guest of `domain` down: an ACPI power-off, then destroy after `grace`.
pub fn power_off(uri: &str, domain: &str, grace: Duration) -> Result<PowerOff, OpError> {
    let conn = Conn::open(uri)?;
    let dom = conn.domain(domain)?;
    if !dom.is_active().map_err(err("domain state"))? {
        return Ok(PowerOff::AlreadyOff);
    }
    // A guest that ignores ACPI (or has no ACPI) is destroyed at the end of the grace.
    let asked = dom.shutdown().is_ok();
    let since = Instant::now();
    while asked && since.elapsed() < grace {
        if !dom.is_active().map_err(err("domain state"))? {
            return Ok(PowerOff::Graceful);
        }
        std::thread::sleep(POLL);
    }
    match dom.destroy() {
        Ok(()) => Ok(PowerOff::Forced),
        // It went down between the last look and the destroy.
        Err(_) if !dom.is_active().map_err(err("domain state"))? => Ok(PowerOff::Graceful),
        Err(e) => Err(err("destroy")(e)),
    }
}

/// Start the (defined, shut off) `domain` paused: QEMU runs, the guest's CPUs do not.
pub fn start_paused(uri: &str, domain: &str) -> Result<(), OpError> {
    let conn = Conn::open(uri)?;
    conn.domain(domain)?
        .create_with_flags(sys::VIR_DOMAIN_START_PAUSED)
        .map_err(err("start paused"))
}

/// Stop `domain` if it runs (its definition stays): the paused copy on the target before
/// its fresh boot, or the paused guest on the source after a failed copy (the VM controller
/// then boots it there again).
pub fn stop(uri: &str, domain: &str) -> Result<bool, OpError> {
    let conn = Conn::open(uri)?;
    let dom = conn.domain(domain)?;
    if !dom.is_active().map_err(err("domain state"))? {
        return Ok(false);
    }
    dom.destroy().map_err(err("destroy"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    // libvirt's test driver keeps its state per connection, so each call opens its own and
    // sees a fresh, running `test` domain.
    #[test]
    fn power_off_shuts_a_running_guest_down() {
        // The test driver's guest powers off on the ACPI request at once: graceful.
        let r = power_off("test:///default", "test", Duration::from_secs(2)).unwrap();
        assert_eq!(r, PowerOff::Graceful);
    }

    #[test]
    fn a_running_domain_cannot_be_started_paused_and_a_stop_stops_it() {
        let e = start_paused("test:///default", "test").unwrap_err();
        assert_eq!(e.op, "start paused");
        assert!(stop("test:///default", "test").unwrap(), "it ran");
    }

    #[test]
    fn a_missing_domain_is_an_error_naming_the_lookup() {
        for e in [
            power_off("test:///default", "nope", Duration::ZERO).unwrap_err(),
            start_paused("test:///default", "nope").unwrap_err(),
            stop("test:///default", "nope").unwrap_err(),
        ] {
            assert_eq!(e.op, "lookup domain");
        }
    }
}
