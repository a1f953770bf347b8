//! Usage accounting: what each tenant's VMs held, second by second, per UTC day and month.
//!
//! This module owns the arithmetic and nothing else: no API calls, no clock of its own (the
//! [`Clock`] is injected). The facts are the agents' run records (`status.runLog`): from each
//! record's time on, the VM runs or is halted with an admitted size on a host. A running VM
//! counts VM-, vCPU- and memory-seconds; a halted one counts the same as a reservation, shown
//! apart; storage counts while the VM exists, running or not, by the one storage rule
//! (`ironvisor_crds::vm::accounted_bytes`, which the admitted size already follows).
//! The controller in `controllers::usage` reads VMs and checkpoints the ledgers.

pub mod accrue;
pub mod calendar;
pub mod ledger;
pub mod metrics;
pub mod pricing;
pub mod rightsizing;

#[cfg(test)]
mod rightsizing_tests;
#[cfg(test)]
mod tests;

use jiff::Timestamp;

pub use calendar::Month;

/// Where the accounting gets "now" from: the system clock in production, a hand-set one in
/// tests (accelerated time).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that says what it was last set to.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    /// A clock standing at `t`.
    pub fn new(t: Timestamp) -> Self {
        Self(std::sync::Mutex::new(t))
    }

    /// Move the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A report name that cannot be formed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tenant name {0:?} is too long to name its usage reports (at most 245 characters)")]
pub struct NameTooLong(pub String);

/// The name of a tenant's report for a month: `<tenant>.<YYYY-MM>`.
pub fn report_name(tenant: &str, month: Month) -> Result<String, NameTooLong> {
    if tenant.len() > 245 {
        return Err(NameTooLong(tenant.to_owned()));
    }
    Ok(format!("{tenant}.{}", month.label()))
}
