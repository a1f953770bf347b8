//! The console signer's series. Labels from fixed sets only: what was issued, why a request
//! was refused.

use super::sign::SignError;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// The `kind` values of `ironvisor_console_certificates_issued_total`.
pub const ISSUED: [&str; 3] = ["ca", "console", "host"];
/// The `reason` values of `ironvisor_console_requests_refused_total`.
pub const REFUSALS: [&str; 6] = [
    "malformed",
    "extensions",
    "subject",
    "common_name",
    "foreign_name",
    "no_names",
];

/// The signer's series.
#[derive(Clone)]
pub struct SignerMetrics {
    /// Certificates issued, by kind.
    pub issued: IntCounterVec,
    /// Host requests refused, by reason.
    pub refused: IntCounterVec,
    /// Passes that failed (API errors, an unusable CA).
    pub errors: IntCounter,
}

impl SignerMetrics {
    /// Create and register the series.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let issued = IntCounterVec::new(
            Opts::new(
                "ironvisor_console_certificates_issued_total",
                "Console certificates the operator issued (ca, console server, host)",
            ),
            &["kind"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "ironvisor_console_requests_refused_total",
                "Host certificate requests the console signer refused, by reason",
            ),
            &["reason"],
        )?;
        let errors = IntCounter::new(
            "ironvisor_console_signer_errors_total",
            "Console signer passes that failed and were retried",
        )?;
        registry.register(Box::new(issued.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        for k in ISSUED {
            let _ = issued.with_label_values(&[k]);
        }
        for r in REFUSALS {
            let _ = refused.with_label_values(&[r]);
        }
        Ok(Self {
            issued,
            refused,
            errors,
        })
    }

    /// Count a refusal.
    pub fn refused(&self, e: &SignError) {
        let reason = match e {
            SignError::Malformed => "malformed",
            SignError::Extensions => "extensions",
            SignError::Subject => "subject",
            SignError::CommonName { .. } => "common_name",
            SignError::ForeignName(_) => "foreign_name",
            SignError::NoNames => "no_names",
            // Not a refusal of the request: the pass reports these.
            SignError::Ca | SignError::Sign => return,
        };
        self.refused.with_label_values(&[reason]).inc();
    }
}
