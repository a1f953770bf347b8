//! The console port's metrics. Labels come from fixed sets only: the console kind and the
//! connection's outcome (never a VM name or an error text).

use super::request::Kind;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

/// How a connection ended (or was refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Bridged until one side closed.
    Bridged,
    /// The port has no certificate yet.
    NoCertificate,
    /// The TLS handshake failed (no client certificate, or one the CA did not sign).
    TlsRefused,
    /// The handshake and request head took too long.
    Timeout,
    /// A CA-signed certificate that is not the console server's.
    Forbidden,
    /// A malformed request or not a WebSocket upgrade.
    BadRequest,
    /// No such console, or the VM does not run here with that uid.
    NotFound,
    /// No display, or the serial console is busy.
    Conflict,
    /// libvirt could not open the console.
    Unavailable,
    /// Too many connections open.
    OverLimit,
}

impl Outcome {
    /// Every outcome but `Bridged` (the refusals).
    pub const REFUSALS: [Outcome; 9] = [
        Outcome::NoCertificate,
        Outcome::TlsRefused,
        Outcome::Timeout,
        Outcome::Forbidden,
        Outcome::BadRequest,
        Outcome::NotFound,
        Outcome::Conflict,
        Outcome::Unavailable,
        Outcome::OverLimit,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Bridged => "bridged",
            Outcome::NoCertificate => "no_certificate",
            Outcome::TlsRefused => "tls_refused",
            Outcome::Timeout => "timeout",
            Outcome::Forbidden => "forbidden",
            Outcome::BadRequest => "bad_request",
            Outcome::NotFound => "not_found",
            Outcome::Conflict => "conflict",
            Outcome::Unavailable => "unavailable",
            Outcome::OverLimit => "over_limit",
        }
    }
}

/// Counters of the console port.
pub struct ConsoleMetrics {
    /// `ironvisor_agent_console_bridged_total{kind}`.
    pub bridged: IntCounterVec,
    /// `ironvisor_agent_console_refused_total{outcome}`.
    pub refused: IntCounterVec,
    /// `ironvisor_agent_console_active_connections{kind}`.
    pub active: IntGaugeVec,
}

impl Default for ConsoleMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleMetrics {
    /// Fresh metrics with every label value present from the start.
    pub fn new() -> Self {
        let m = Self {
            bridged: IntCounterVec::new(
                Opts::new(
                    "ironvisor_agent_console_bridged_total",
                    "Console connections bridged to a VM, by kind.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            refused: IntCounterVec::new(
                Opts::new(
                    "ironvisor_agent_console_refused_total",
                    "Console connections refused, by reason.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            active: IntGaugeVec::new(
                Opts::new(
                    "ironvisor_agent_console_active_connections",
                    "Console connections bridged now, by kind.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        };
        for k in Kind::ALL {
            let _ = m.bridged.with_label_values(&[k.as_str()]);
            let _ = m.active.with_label_values(&[k.as_str()]);
        }
        for o in Outcome::REFUSALS {
            let _ = m.refused.with_label_values(&[o.label()]);
        }
        m
    }

    /// Register every metric in `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.bridged.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.active.clone()))
    }

    pub(super) fn refused(&self, o: Outcome) {
        self.refused.with_label_values(&[o.label()]).inc();
    }

    pub(super) fn opened(&self, k: Kind) {
        self.bridged.with_label_values(&[k.as_str()]).inc();
        self.active.with_label_values(&[k.as_str()]).inc();
    }

    pub(super) fn closed(&self, k: Kind) {
        self.active.with_label_values(&[k.as_str()]).dec();
    }
}
