//! Verdicts: one [`Check`] per qualification item and the [`Report`] that says whether the
//! host qualifies. Field names are stable: tools read the JSON.

use serde::Serialize;

use super::args::Profile;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine for the profile.
    Pass,
    /// Works, with a limitation the profile accepts.
    Warn,
    /// The host does not qualify for the profile.
    Fail,
}

impl Status {
    /// The word the table prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }

    /// `Fail` in production, `Warn` in development: what production needs and development
    /// accepts with a warning.
    pub fn required_in_production(profile: Profile) -> Self {
        match profile {
            Profile::Production => Self::Fail,
            Profile::Development => Self::Warn,
        }
    }
}

/// Timings of the steps a check measured, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// `virsh define` (domain test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub define: Option<u64>,
    /// `virsh start` (domain test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// `virsh destroy` (domain test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroy: Option<u64>,
    /// First capability probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_probe: Option<u64>,
    /// Second capability probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_probe: Option<u64>,
}

/// One qualification item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable identifier (`kvm-device`, `domain-test`, ...).
    pub id: &'static str,
    /// Pass, warn or fail.
    pub status: Status,
    /// What was found, briefly.
    pub finding: String,
    /// What to do about it; `None` when the check passed.
    pub remedy: Option<String>,
    /// Measured timings, for the checks that time something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings_ms: Option<Timings>,
}

impl Check {
    /// A passed check.
    pub fn pass(id: &'static str, finding: impl Into<String>) -> Self {
        Self {
            id,
            status: Status::Pass,
            finding: finding.into(),
            remedy: None,
            timings_ms: None,
        }
    }

    /// A warning or failure with its remedy.
    pub fn problem(
        id: &'static str,
        status: Status,
        finding: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        let remedy = (status != Status::Pass).then(|| remedy.into());
        Self {
            id,
            status,
            finding: finding.into(),
            remedy,
            timings_ms: None,
        }
    }

    /// The same check with timings attached.
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings_ms = Some(timings);
        self
    }
}

/// The whole qualification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The profile asked for.
    pub profile: Profile,
    /// No check failed.
    pub qualifies: bool,
    /// The libvirt URI checked.
    pub libvirt_uri: String,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The report over `checks`; the host qualifies when none failed.
    pub fn new(profile: Profile, libvirt_uri: &str, checks: Vec<Check>) -> Self {
        let qualifies = checks.iter().all(|c| c.status != Status::Fail);
        Self {
            profile,
            qualifies,
            libvirt_uri: libvirt_uri.to_owned(),
            checks,
        }
    }

    /// How many checks came out `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// Milliseconds, rounded down, for timings and findings.
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
