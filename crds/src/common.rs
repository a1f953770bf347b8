//! Types shared by several resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Status of a condition, as Kubernetes spells it.
pub mod condition_status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// The condition could not be determined.
    pub const UNKNOWN: &str = "Unknown";
}

/// Well-known condition types.
pub mod condition_type {
    /// The object is doing its job (kstatus reads this one).
    pub const READY: &str = "Ready";
    /// The VM has been admitted by quota and placed on a host.
    pub const SCHEDULED: &str = "Scheduled";
    /// VM: False (reason `NoTenant`) while a placed VM's namespace belongs to no Tenant; the
    /// VM keeps running, nothing new is admitted there. Absent otherwise.
    pub const TENANT: &str = "Tenant";
    /// A spec change waits for a restart of the guest.
    pub const RESTART_REQUIRED: &str = "RestartRequired";
    /// Images for the VM's disks are available on its host.
    pub const IMAGES_READY: &str = "ImagesReady";
    /// Hypervisor: guests can use KVM acceleration here (False is information on a
    /// software-emulation host, not a reason to stop placing VMs).
    pub const KVM_AVAILABLE: &str = "KVMAvailable";
    /// Hypervisor: libvirt answers at normal speed (its capability probes are not thrashing).
    /// The operator places no new VMs on a host where this is False.
    pub const LIBVIRT_HEALTHY: &str = "LibvirtHealthy";
    /// Hypervisor: the QEMU user can reach the agent's state and images directories. The
    /// operator places no new VMs on a host where this is False.
    pub const STORAGE_ACCESSIBLE: &str = "StorageAccessible";
}

/// Reasons of the `Scheduled` condition that the agents act on (the operator writes them).
pub mod scheduled_reason {
    /// Admitted and placed: the agent may run the guest.
    pub const SCHEDULED: &str = "Scheduled";
    /// Placed while `runStrategy: Halted`, with no vCPUs or memory reserved: the agent may keep
    /// the guest stopped (and stop it), never start it.
    pub const SCHEDULED_HALTED: &str = "ScheduledHalted";
}

/// A condition of `type_` that holds (`ok`) or not, observed at `now`.
pub fn new_condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = if ok {
        condition_status::TRUE
    } else {
        condition_status::FALSE
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation,
        last_transition_time: now,
    }
}

/// Find a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of that type is `True`.
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == condition_status::TRUE)
}

/// Insert or replace a condition, keeping `lastTransitionTime` when the status does not flip.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// A subject that is granted rights over a tenant's namespaces (an RBAC subject).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)",
     "message": "namespace is required for a ServiceAccount and not allowed for a User or Group"}
]))]
pub struct Subject {
    /// Kind of the subject: User, Group or ServiceAccount.
    pub kind: SubjectKind,
    /// Name of the user, group or service account.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the service account; only for kind ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Kind of an RBAC subject.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubjectKind {
    /// A user, as the cluster's authenticator names it.
    User,
    /// A group of users.
    Group,
    /// A Kubernetes service account.
    ServiceAccount,
}

impl SubjectKind {
    /// The RBAC spelling of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::Group => "Group",
            SubjectKind::ServiceAccount => "ServiceAccount",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: &str, at: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap()),
        }
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conds = vec![cond("True", 10)];
        set_condition(&mut conds, cond("True", 20));
        assert_eq!(conds[0].last_transition_time.0.as_second(), 10);
    }

    #[test]
    fn set_condition_moves_transition_time_when_status_flips() {
        let mut conds = vec![cond("True", 10)];
        set_condition(&mut conds, cond("False", 20));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time.0.as_second(), 20);
    }
}
