//! VDI desktop pools: `DesktopPool` (a template, a size, pre-started spares, how desktops
//! are assigned and when idle ones are powered off) and `DesktopClaim` (one user's request
//! for a desktop of a pool).
//!
//! A pool's desktops are ordinary VirtualMachines the operator creates from the template:
//! they count in the tenant's quota and go through the same admission. The claim's user is
//! checked by admission against the identity that creates it (policy
//! `ironvisor-desktop-claims`); the operator writes both statuses and a per-claim Role that
//! lets the user reach the consoles of their own desktop only.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::vm::VirtualMachineSpec;

/// Label on a desktop VM: the pool it belongs to (its ownerReference holds the pool's uid).
pub const POOL_LABEL: &str = "ironvisor.io/desktop-pool";
/// Label on a desktop VM: the claim it is bound to, while it is bound.
pub const CLAIM_LABEL: &str = "ironvisor.io/desktop-claim";
/// Annotation on a bound desktop VM: the uid of its claim (a later claim of the same name is
/// another claim).
pub const CLAIM_UID_ANNOTATION: &str = "ironvisor.io/desktop-claim-uid";
/// Annotation on a desktop VM of a Dedicated pool: the user it belongs to.
pub const OWNER_ANNOTATION: &str = "ironvisor.io/desktop-user";
/// Annotation on a bound desktop VM: when it was bound (RFC 3339); idle time counts from it
/// at the earliest.
pub const BOUND_AT_ANNOTATION: &str = "ironvisor.io/desktop-bound-at";
/// Annotation on a desktop VM of a Floating pool that was used and waits for its reset.
pub const DIRTY_ANNOTATION: &str = "ironvisor.io/desktop-needs-reset";
/// Label on the Role and RoleBinding that let a claim's user reach its desktop's consoles.
pub const ACCESS_LABEL: &str = "ironvisor.io/desktop-claim-uid";

/// A pool of desktops built from one template.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "DesktopPool",
    doc = "A pool of virtual desktops built from one VM template: up to size desktops, minSpare of them pre-started, assigned to users' DesktopClaims as Dedicated (a user keeps their desktop) or Floating (reset to the template on release).",
    plural = "desktoppools",
    singular = "desktoppool",
    shortname = "dpool",
    category = "ironvisor",
    category = "all",
    namespaced,
    status = "DesktopPoolStatus",
    printcolumn = r#"{"name":"Assignment","type":"string","jsonPath":".spec.assignment"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size","description":"Most desktops the pool may have"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.total","description":"Desktops that exist"}"#,
    printcolumn = r#"{"name":"Spare","type":"integer","jsonPath":".status.spare","description":"Clean desktops no claim holds"}"#,
    printcolumn = r#"{"name":"Claimed","type":"integer","jsonPath":".status.claimed","description":"Desktops bound to a claim"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.running"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","description":"Ready, or why the pool cannot serve claims (QuotaExceeded, PoolFull, ...)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.minSpare) || self.minSpare <= self.size", "message": "minSpare must be at most size", "fieldPath": ".minSpare"}
]))]
pub struct DesktopPoolSpec {
    /// The desktops' VM: labels, annotations and spec of every desktop (its runStrategy is
    /// the pool's to set). A Floating pool's template needs at least one disk: a reset
    /// returns the disks to the snapshot taken when the desktop first ran.
    pub template: DesktopTemplate,
    /// Most desktops the pool may have (claimed, spare and being reset).
    #[schemars(range(min = 1, max = 1000))]
    pub size: u32,
    /// Desktops kept started and unclaimed, so a claim is served without a boot.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub min_spare: u32,
    /// Dedicated (a user's next claim gets the same desktop back, with its disks as they
    /// left them) or Floating (a released desktop is reset to the template and serves anyone).
    #[serde(default)]
    pub assignment: Assignment,
    /// Power a claimed desktop off after it has had no console connection for this long
    /// (e.g. `30m`, `1h30m`, `45s`); the claim is then Released (reason IdleTimeout).
    /// Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}(h|m|s))+$"))]
    pub idle_timeout: Option<String>,
    /// Most Pending or Bound claims one user may hold in this pool.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_per_user: u32,
}

fn one() -> u32 {
    1
}

/// The VM a pool's desktops are made of.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesktopTemplate {
    /// Labels and annotations every desktop VM carries (besides the pool's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The desktops' VM spec.
    pub spec: VirtualMachineSpec,
}

/// Labels and annotations of a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How a pool's desktops are assigned to users.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Assignment {
    /// A desktop, once given to a user, stays theirs: their next claim gets it back.
    #[default]
    Dedicated,
    /// A desktop is returned on release, reset to the template, and serves anyone next.
    Floating,
}

/// Observed state of a pool, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesktopPoolStatus {
    /// Desktops that exist.
    #[serde(default)]
    pub total: u32,
    /// Clean desktops no claim holds and no user owns (ready or being prepared).
    #[serde(default)]
    pub spare: u32,
    /// Desktops bound to a claim.
    #[serde(default)]
    pub claimed: u32,
    /// Desktops whose guest runs.
    #[serde(default)]
    pub running: u32,
    /// Ready: True when every claim is bound and the spares are there; False with reason
    /// QuotaExceeded (the admission message of a desktop VM), PoolFull, Provisioning,
    /// ResetFailed or InvalidTemplate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Reasons of a pool's and a claim's Ready condition.
pub mod desktop_reason {
    /// Pool: every claim is bound and the spares are there. Claim: bound.
    pub const READY: &str = "Ready";
    /// Claim: bound to a desktop.
    pub const BOUND: &str = "Bound";
    /// Desktops are being created, started, snapshotted or reset.
    pub const PROVISIONING: &str = "Provisioning";
    /// A desktop VM is not admitted: the tenant's quota has no room (message: the VM's).
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// The pool has `size` desktops and none is free.
    pub const POOL_FULL: &str = "PoolFull";
    /// A Floating desktop's reset failed (message: the restore's).
    pub const RESET_FAILED: &str = "ResetFailed";
    /// The template cannot make desktops of this pool's kind.
    pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
    /// Claim: waiting for a desktop.
    pub const WAITING: &str = "WaitingForDesktop";
    /// Claim: the user already holds `maxPerUser` claims in the pool.
    pub const PER_USER_LIMIT: &str = "PerUserLimit";
    /// Claim: its desktop was powered off after `idleTimeout` without a console connection.
    pub const IDLE_TIMEOUT: &str = "IdleTimeout";
    /// Claim: its desktop was deleted.
    pub const DESKTOP_DELETED: &str = "DesktopDeleted";
    /// Claim: its pool does not exist (Pending until a pool of that name is created), or was
    /// deleted while the claim was Bound (Released).
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
}

/// A user's request for a desktop of a pool.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "DesktopClaim",
    doc = "One user's request for a desktop of a DesktopPool in the same namespace. spec.user must be the requester's own user name (admission checks it); deleting the claim releases the desktop.",
    plural = "desktopclaims",
    singular = "desktopclaim",
    shortname = "dclaim",
    category = "ironvisor",
    category = "all",
    namespaced,
    status = "DesktopClaimStatus",
    printcolumn = r#"{"name":"Pool","type":"string","jsonPath":".spec.poolName"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"VM","type":"string","jsonPath":".status.vmName","description":"The desktop's VirtualMachine"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".spec.user",
    selectable = ".spec.poolName"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "a claim is immutable; release it and claim again"}
]))]
pub struct DesktopClaimSpec {
    /// The pool, in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub pool_name: String,
    /// The user the desktop is for: admission refuses any name but the requester's own
    /// (`ivctl desktop get` fills it in from a SelfSubjectReview).
    #[schemars(length(min = 1, max = 1024))]
    pub user: String,
}

/// Phase of a claim.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClaimPhase {
    /// Waiting for a desktop.
    #[default]
    Pending,
    /// Bound to a desktop (status.vmName); the user may reach its consoles.
    Bound,
    /// The desktop was taken back (idle timeout, or deleted); claim again for one.
    Released,
    /// The claim cannot be served (the per-user limit); delete it.
    Failed,
}

impl ClaimPhase {
    /// Whether the claim will never be bound (again).
    pub fn is_terminal(self) -> bool {
        matches!(self, ClaimPhase::Released | ClaimPhase::Failed)
    }
}

/// Observed state of a claim, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesktopClaimStatus {
    /// Where the claim stands.
    #[serde(default)]
    pub phase: ClaimPhase,
    /// The user the claim was admitted for (a copy of spec.user, admission-checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The desktop's VirtualMachine, once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    /// When it was bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_time: Option<Time>,
    /// Ready (reason Bound, WaitingForDesktop, QuotaExceeded, PoolFull, PoolNotFound,
    /// PerUserLimit, IdleTimeout, DesktopDeleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Why an `idleTimeout` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("idleTimeout {0:?} is not a duration such as 30m, 1h30m or 45s")]
pub struct BadDuration(pub String);

/// Parse a duration of hours, minutes and seconds: `1h30m`, `45s`.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    let bad = || BadDuration(text.to_owned());
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

impl DesktopPoolSpec {
    /// The idle timeout, when set and readable.
    pub fn idle_timeout(&self) -> Result<Option<Duration>, BadDuration> {
        self.idle_timeout.as_deref().map(parse_duration).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_hours_minutes_and_seconds() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m5s"), Ok(Duration::from_secs(125)));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in ["", "5", "m", "1d", "1.5h", "-3s", "1h 30m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_minimal_pool_is_dedicated_with_one_desktop_per_user() {
        let s: DesktopPoolSpec = serde_json::from_value(serde_json::json!({
            "size": 3, "template": {"spec": {"memory": {"size": "128Mi"}}}
        }))
        .unwrap();
        assert_eq!(s.assignment, Assignment::Dedicated);
        assert_eq!((s.min_spare, s.max_per_user), (0, 1));
        assert_eq!(s.idle_timeout(), Ok(None));
    }

    #[test]
    fn only_released_and_failed_claims_are_terminal() {
        use ClaimPhase::*;
        for (p, t) in [
            (Pending, false),
            (Bound, false),
            (Released, true),
            (Failed, true),
        ] {
            assert_eq!(p.is_terminal(), t, "{p:?}");
        }
    }
}
