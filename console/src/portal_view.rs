//! What the desktop portal shows of claims and pools (pure: no I/O). The page renders
//! every string as text; nothing here is HTML.

use ironvisor_crds::desktop::{ClaimPhase, DesktopClaim, DesktopPool};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde_json::{Value, json};

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// Whether a claim holds or waits for a desktop (not Released, Failed or being deleted).
pub fn is_live(c: &DesktopClaim) -> bool {
    let phase = c.status.as_ref().map(|s| s.phase).unwrap_or_default();
    c.metadata.deletion_timestamp.is_none() && !phase.is_terminal()
}

/// A claim as the portal lists it: its desktop, phase, and since when it is in it (bound
/// time, else the Ready condition's last transition, else its creation).
pub fn claim_view(c: &DesktopClaim) -> Value {
    let status = c.status.clone().unwrap_or_default();
    let cond = ready(&status.conditions);
    let since = match status.phase {
        ClaimPhase::Bound => status.bound_time.clone(),
        _ => None,
    }
    .or_else(|| cond.map(|c| c.last_transition_time.clone()))
    .or_else(|| c.metadata.creation_timestamp.clone());
    let phase = if c.status.is_some() {
        format!("{:?}", status.phase)
    } else {
        // The operator has not looked at it yet.
        "Pending".to_owned()
    };
    json!({
        "namespace": c.namespace(),
        "name": c.name_any(),
        "pool": c.spec.pool_name,
        "phase": phase,
        "vm": status.vm_name.filter(|_| status.phase == ClaimPhase::Bound),
        "since": since.map(|t| t.0.to_string()),
        "reason": cond.map(|c| c.reason.clone()),
        "message": cond.map(|c| c.message.clone()),
        "releasing": c.metadata.deletion_timestamp.is_some(),
    })
}

/// A pool as the portal lists it.
pub fn pool_view(p: &DesktopPool) -> Value {
    let status = p.status.clone().unwrap_or_default();
    let cond = ready(&status.conditions);
    json!({
        "namespace": p.namespace(),
        "name": p.name_any(),
        "assignment": format!("{:?}", p.spec.assignment),
        "size": p.spec.size,
        "spare": status.spare,
        "reason": cond.map(|c| c.reason.clone()),
        "message": cond.map(|c| c.message.clone()),
    })
}

/// Whether `s` can be an object name (a DNS subdomain of at most `max` characters): what
/// the portal puts into an API path.
pub fn valid_name(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The start of a claim's name: the pool and the user's name as far as a name allows (the
/// API server appends a random tail to `<stem>-`), as `ivctl desktop get` names claims.
pub fn claim_name_stem(pool: &str, user: &str) -> String {
    let user: String = user
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    let stem: String = format!("{pool}-{user}").chars().take(200).collect();
    stem.trim_matches(|c: char| c == '-' || c == '.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(status: Value) -> DesktopClaim {
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
            "metadata": {"name": "office-alice-x1", "namespace": "team-a",
                         "creationTimestamp": "2026-11-30T10:00:00Z"},
            "spec": {"poolName": "office", "user": "alice"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_bound_claim_shows_its_desktop_since_its_binding() {
        let c = claim(json!({"phase": "Bound", "vmName": "office-1",
            "boundTime": "2026-11-30T10:01:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Bound",
                "message": "bound to desktop office-1", "lastTransitionTime": "2026-11-30T10:01:30Z"}]}));
        let v = claim_view(&c);
        assert_eq!(v["phase"], "Bound");
        assert_eq!(v["vm"], "office-1");
        assert_eq!(v["since"], "2026-11-30T10:01:00Z");
        assert_eq!(v["reason"], "Bound");
        assert!(is_live(&c));
    }

    #[test]
    fn a_released_claim_has_no_desktop_to_connect_to_and_is_not_live() {
        let c = claim(json!({"phase": "Released", "vmName": "office-1",
            "conditions": [{"type": "Ready", "status": "False", "reason": "IdleTimeout",
                "message": "powered off", "lastTransitionTime": "2026-11-30T11:00:00Z"}]}));
        let v = claim_view(&c);
        assert_eq!(v["vm"], Value::Null);
        assert_eq!(v["since"], "2026-11-30T11:00:00Z");
        assert!(!is_live(&c));
    }

    #[test]
    fn a_claim_the_operator_has_not_seen_is_pending_since_its_creation() {
        let mut c = claim(Value::Null);
        c.status = None;
        let v = claim_view(&c);
        assert_eq!(v["phase"], "Pending");
        assert_eq!(v["since"], "2026-11-30T10:00:00Z");
        assert!(is_live(&c));
    }

    #[test]
    fn only_object_names_go_into_api_paths() {
        for ok in ["team-a", "a", "office.v2", "0x"] {
            assert!(valid_name(ok, 63), "{ok}");
        }
        for bad in [
            "", "-a", "a-", "A", "a/b", "..", "a b", "%2e", "a?b", "a#b", "ü",
        ] {
            assert!(!valid_name(bad, 63), "{bad:?}");
        }
        assert!(!valid_name(&"a".repeat(64), 63));
    }

    #[test]
    fn claim_names_take_the_user_as_far_as_a_name_allows() {
        assert_eq!(
            claim_name_stem("office", "Alice@Example.com"),
            "office-alice-example-com"
        );
        assert_eq!(claim_name_stem("office", "<script>"), "office--script");
    }
}
