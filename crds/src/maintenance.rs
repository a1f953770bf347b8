//! Host maintenance mode: the `Hypervisor`'s drain progress and each VM's drain policy.
//!
//! A host enters maintenance when its `spec.maintenance` is true (`ivctl host drain`) or when
//! the Kubernetes Node of the same name is cordoned (`kubectl cordon|drain`). The operator
//! then places nothing new there and moves every running VM away by live migration; it
//! reports the progress in `status.maintenance` and the `MaintenanceReady` condition. This
//! module holds the types and the one rule "is this host in maintenance" that placement and
//! migration targets share; it does no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hypervisor::Hypervisor;

/// Condition type on a Hypervisor: True once no running VM is left on a host in
/// maintenance; False while it drains (reason `Draining` or `Blocked`).
pub const MAINTENANCE_READY: &str = "MaintenanceReady";
/// Label on the migrations a drain creates: the host being drained.
pub const DRAIN_LABEL: &str = "ironvisor.io/drain";
/// Most blocked VMs listed in the status (the counts stay exact).
pub const BLOCKED_LISTED: usize = 32;

/// What puts a host in maintenance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MaintenanceRequester {
    /// `spec.maintenance` of the Hypervisor (`ivctl host drain`).
    Hypervisor,
    /// The Kubernetes Node of the same name is cordoned (`spec.unschedulable`, as
    /// `kubectl cordon` and `kubectl drain` set it). Uncordoning ends it.
    Node,
}

/// Where a drain is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MaintenancePhase {
    /// Running VMs are being moved away (or some block).
    Draining,
    /// No running VM is left: the host may be patched or powered off.
    Ready,
}

/// The drain's progress, written by the operator while the host is in maintenance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceStatus {
    /// Who asked for maintenance.
    pub requested_by: MaintenanceRequester,
    /// Draining, or Ready once no running VM is left.
    pub phase: MaintenancePhase,
    /// When the host entered maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Running VMs still on the host (migrating, waiting or blocked).
    pub vms_remaining: u32,
    /// VMs whose live migration away is under way.
    pub vms_migrating: u32,
    /// VMs that block the drain (listed in `blocked`).
    pub vms_blocked: u32,
    /// Stopped VMs that stay on the host with their disks (they do not block; one started
    /// during maintenance is moved away like the others).
    pub vms_stopped: u32,
    /// VMs moved away by this drain so far.
    pub vms_moved: u32,
    /// The VMs that block, with the reason (at most 32 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub blocked: Vec<BlockedVm>,
    /// One sentence for `kubectl describe` and `ivctl host drain --wait`.
    #[serde(default)]
    pub message: String,
}

/// A VM that keeps a drain from completing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockedVm {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why it stays, and what to do about it.
    pub reason: String,
}

/// What a planned drain of its host does to a running VM (a host failure is
/// `evictionStrategy`'s business).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DrainStrategy {
    /// Move it to another host by live migration, without stopping it.
    #[default]
    LiveMigrate,
    /// Leave it running where it is: it blocks the drain, which reports it on the
    /// Hypervisor and in an Event, until it is stopped, moved by hand or deleted.
    None,
}

/// Whether `hv` is in maintenance: its spec asks for it, or the operator recorded a request
/// from the cordoned Node of the same name. Placement and migration targets skip such a host.
pub fn in_maintenance(hv: &Hypervisor) -> bool {
    hv.spec.maintenance || hv.status.as_ref().is_some_and(|s| s.maintenance.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{HypervisorSpec, HypervisorStatus};

    fn status(phase: MaintenancePhase) -> MaintenanceStatus {
        MaintenanceStatus {
            requested_by: MaintenanceRequester::Node,
            phase,
            since: None,
            vms_remaining: 0,
            vms_migrating: 0,
            vms_blocked: 0,
            vms_stopped: 0,
            vms_moved: 0,
            blocked: vec![],
            message: String::new(),
        }
    }

    #[test]
    fn a_host_is_in_maintenance_by_its_spec_or_a_recorded_node_request() {
        let mut hv = Hypervisor::new("h", HypervisorSpec::default());
        assert!(!in_maintenance(&hv));
        hv.spec.maintenance = true;
        assert!(in_maintenance(&hv));
        hv.spec.maintenance = false;
        hv.status = Some(HypervisorStatus {
            maintenance: Some(status(MaintenancePhase::Draining)),
            ..Default::default()
        });
        assert!(in_maintenance(&hv));
    }

    #[test]
    fn todays_manifests_stay_valid_and_drain_defaults_to_live_migration() {
        let spec: HypervisorSpec = serde_json::from_str(r#"{"unschedulable": true}"#).unwrap();
        assert!(!spec.maintenance);
        assert_eq!(DrainStrategy::default(), DrainStrategy::LiveMigrate);
        let s: DrainStrategy = serde_json::from_str(r#""None""#).unwrap();
        assert_eq!(s, DrainStrategy::None);
    }
}
