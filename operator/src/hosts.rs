//! Host health and capacity, from a Hypervisor object and the host's heartbeat Lease.
//!
//! Owns three pure rules: when a host counts as lost (its heartbeat has not moved for longer
//! than the grace period, measured on the operator's own clock so skew between hosts does
//! not matter), what a host may give to VMs (capacity − reserved, times overcommit, in
//! integers), and which VMs may be restarted elsewhere when their host is lost.
//!
//! "Disks local", the rule: every disk source Ironvisor has today (blank, http, hostPath)
//! creates the VM's writable disk file — a blank image or a copy-on-write overlay — in the
//! state directory of the host the VM runs on. So a VM with at least one disk has local disks
//! and waits for its host; only a VM with no disks at all (direct kernel boot, cloud-init seed
//! only: both rebuilt by any agent) can be restarted elsewhere. A future shared-storage source
//! would be the first non-local kind; `disks_are_local` is the one place to teach it.

use std::time::Duration;

use ironvisor_crds::common::{condition_status, condition_type, find_condition};
use ironvisor_crds::hypervisor::Hypervisor;
use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::vm::{EvictionStrategy, VirtualMachineSpec};
use jiff::Timestamp;

use crate::placement::{Capacity, FilterReason};

/// The reason the operator writes on a lost host's Ready condition and on its VMs.
pub const HOST_LOST: &str = "HostLost";

/// Ready reason on a VM whose lost host reports again, until that host's agent reports the
/// VM (`Ready=Unknown`): the operator's HostLost mark is cleared, and the agent's own
/// forced status apply takes the condition back.
pub const HOST_RETURNED: &str = "HostReturned";

/// Ready reason on a VM re-placed off a lost host (`Ready=False`), until the new host's agent
/// reports it: the last agent's Ready would otherwise still say True.
pub const RESCHEDULED: &str = "Rescheduled";

/// Whether a VM's Ready reason is one only the operator writes (so it still owns the
/// condition and must write it until the agent takes it over).
pub fn operator_ready_reason(reason: &str) -> bool {
    [HOST_LOST, HOST_RETURNED, RESCHEDULED].contains(&reason)
}

/// Health of a host as placement and the host monitor see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Heartbeat fresh and Ready=True: VMs may be placed there.
    Ready,
    /// Heartbeat fresh but the agent says it is not ready (or has not said yet).
    NotReady,
    /// No heartbeat for longer than the grace period.
    Lost,
}

/// Decide a host's health.
///
/// `heartbeat_seen` is when the operator last saw the heartbeat move (or first saw the host,
/// so a restarted operator gives every host a full grace period). `ready_condition` is the
/// Hypervisor's Ready status; the operator's own HostLost mark is ignored once the heartbeat
/// is fresh again, so a returning host does not wait for its agent to rewrite it.
pub fn health(
    heartbeat_seen: Option<Timestamp>,
    ready_condition: Option<(&str, &str)>,
    now: Timestamp,
    grace: Duration,
) -> Health {
    let Some(seen) = heartbeat_seen else {
        return Health::NotReady;
    };
    let age = now.duration_since(seen);
    if age > jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX) {
        return Health::Lost;
    }
    match ready_condition {
        Some((status, _)) if status == condition_status::TRUE => Health::Ready,
        Some((_, reason)) if reason == HOST_LOST => Health::Ready,
        _ => Health::NotReady,
    }
}

/// The Hypervisor's Ready condition as (status, reason).
pub fn ready_condition(hv: &Hypervisor) -> Option<(&str, &str)> {
    let status = hv.status.as_ref()?;
    find_condition(&status.conditions, condition_type::READY)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// The first health condition the agent reports False among those that keep new VMs away:
/// LibvirtHealthy (a thrashing or unreachable libvirtd makes every start take minutes) and
/// StorageAccessible (QEMU cannot open what the agent prepares). KVMAvailable is not one: a
/// software-emulation host works. A condition not reported (an older agent) is no finding.
pub fn unhealthy(hv: &Hypervisor) -> Option<FilterReason> {
    let status = hv.status.as_ref()?;
    [
        (
            condition_type::LIBVIRT_HEALTHY,
            FilterReason::LibvirtUnhealthy,
        ),
        (
            condition_type::STORAGE_ACCESSIBLE,
            FilterReason::StorageInaccessible,
        ),
    ]
    .into_iter()
    .find(|(t, _)| {
        find_condition(&status.conditions, t).is_some_and(|c| c.status == condition_status::FALSE)
    })
    .map(|(_, r)| r)
}

/// Whether the host's agent reports it can give VMs an emulated TPM (not reported: no).
pub fn tpm(hv: &Hypervisor) -> bool {
    hv.status.as_ref().and_then(|s| s.tpm).unwrap_or(false)
}

/// A ratio as an integer number of thousandths, rounded to nearest; never negative.
fn milli(ratio: f64) -> i128 {
    if ratio.is_finite() && ratio > 0.0 {
        // At most 64.0 by schema: the product fits easily, and rounding to 1/1000 is the
        // only inexact step; everything after it is integer arithmetic.
        (ratio * 1000.0).round() as i128
    } else {
        0
    }
}

/// What a host may give to VMs: (capacity − reserved) × overcommit, from the spec the admin
/// wrote and the capacity the agent reported. Falls back to the agent's `allocatable` when no
/// capacity is reported; `None` when neither is.
pub fn allocatable(hv: &Hypervisor) -> Option<Capacity> {
    let status = hv.status.as_ref()?;
    if let Some(cap) = &status.capacity {
        let cap_mem = to_bytes(&cap.memory.0).ok()?;
        let res_mem = match &hv.spec.reserved.memory {
            Some(q) => to_bytes(&q.0).ok()?,
            None => 0,
        };
        let vcpus = (i128::from(cap.vcpus) - i128::from(hv.spec.reserved.vcpus)).max(0);
        let memory = (cap_mem - res_mem).max(0);
        return Some(Capacity {
            vcpus: vcpus * milli(hv.spec.overcommit.cpu) / 1000,
            memory: memory.saturating_mul(milli(hv.spec.overcommit.memory)) / 1000,
        });
    }
    let a = status.allocatable.as_ref()?;
    Some(Capacity {
        vcpus: i128::from(a.vcpus),
        memory: to_bytes(&a.memory.0).ok()?,
    })
}

/// Whether the VM's disks live on its host (see the module doc for the rule).
pub fn disks_are_local(spec: &VirtualMachineSpec) -> bool {
    !spec.disks.is_empty()
}

/// Whether a VM on a lost host is restarted elsewhere: it asks for it and has no local disks.
pub fn restart_elsewhere(spec: &VirtualMachineSpec) -> bool {
    spec.eviction_strategy == EvictionStrategy::Restart && !disks_are_local(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::hypervisor::{
        HypervisorSpec, HypervisorStatus, Overcommit, Reserved, Resources,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    const GRACE: Duration = Duration::from_secs(40);

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("valid")
    }

    #[test]
    fn a_fresh_ready_host_is_ready() {
        assert_eq!(
            health(Some(t(100)), Some(("True", "AgentReady")), t(130), GRACE),
            Health::Ready
        );
    }

    #[test]
    fn a_heartbeat_older_than_the_grace_period_means_the_host_is_lost() {
        assert_eq!(
            health(Some(t(100)), Some(("True", "AgentReady")), t(140), GRACE),
            Health::Ready
        );
        assert_eq!(
            health(Some(t(100)), Some(("True", "AgentReady")), t(141), GRACE),
            Health::Lost
        );
    }

    #[test]
    fn a_fresh_host_whose_agent_says_not_ready_is_not_ready() {
        assert_eq!(
            health(Some(t(100)), Some(("False", "LibvirtDown")), t(101), GRACE),
            Health::NotReady
        );
        assert_eq!(health(Some(t(100)), None, t(101), GRACE), Health::NotReady);
        assert_eq!(
            health(None, Some(("True", "x")), t(101), GRACE),
            Health::NotReady
        );
    }

    #[test]
    fn a_returning_host_is_not_held_back_by_the_operators_own_host_lost_mark() {
        assert_eq!(
            health(Some(t(100)), Some(("False", HOST_LOST)), t(101), GRACE),
            Health::Ready
        );
    }

    fn hv(
        cap_vcpus: u32,
        cap_mem: &str,
        reserved: (u32, Option<&str>),
        ratios: (f64, f64),
    ) -> Hypervisor {
        let mut h = Hypervisor::new(
            "h",
            HypervisorSpec {
                unschedulable: false,
                overcommit: Overcommit {
                    cpu: ratios.0,
                    memory: ratios.1,
                },
                reserved: Reserved {
                    vcpus: reserved.0,
                    memory: reserved.1.map(|m| Quantity(m.into())),
                },
                maintenance: false,
            },
        );
        h.status = Some(HypervisorStatus {
            capacity: Some(Resources {
                vcpus: cap_vcpus,
                memory: Quantity(cap_mem.into()),
            }),
            ..Default::default()
        });
        h
    }

    #[test]
    fn allocatable_is_capacity_minus_reserved_times_overcommit_exactly() {
        let a = allocatable(&hv(16, "64Gi", (2, Some("4Gi")), (4.0, 1.5))).unwrap();
        assert_eq!(
            a,
            Capacity {
                vcpus: 56,
                memory: 90 << 30
            }
        );
    }

    #[test]
    fn fractional_overcommit_rounds_down_to_whole_vcpus() {
        let a = allocatable(&hv(3, "1Gi", (0, None), (1.5, 1.0))).unwrap();
        assert_eq!(a.vcpus, 4);
    }

    #[test]
    fn a_reservation_above_capacity_leaves_nothing_rather_than_a_negative() {
        let a = allocatable(&hv(2, "1Gi", (4, Some("2Gi")), (4.0, 1.0))).unwrap();
        assert_eq!(
            a,
            Capacity {
                vcpus: 0,
                memory: 0
            }
        );
    }

    #[test]
    fn without_capacity_the_agents_allocatable_is_used_and_without_either_none() {
        let mut h = hv(1, "1Gi", (0, None), (1.0, 1.0));
        let st = h.status.as_mut().unwrap();
        st.capacity = None;
        assert_eq!(allocatable(&h), None);
        h.status.as_mut().unwrap().allocatable = Some(Resources {
            vcpus: 8,
            memory: Quantity("2Gi".into()),
        });
        assert_eq!(
            allocatable(&h),
            Some(Capacity {
                vcpus: 8,
                memory: 2 << 30
            })
        );
    }

    #[test]
    fn only_diskless_restart_vms_move_off_a_lost_host() {
        let mut s: VirtualMachineSpec =
            serde_json::from_value(serde_json::json!({"memory": {"size": "1Gi"}})).unwrap();
        assert!(!restart_elsewhere(&s), "evictionStrategy None waits");
        s.eviction_strategy = EvictionStrategy::Restart;
        assert!(restart_elsewhere(&s));
        s.disks = serde_json::from_value(serde_json::json!([
            {"name": "root", "source": {"http": {"url": "http://x/i", "sha256": "0".repeat(64)}}}
        ]))
        .unwrap();
        assert!(disks_are_local(&s));
        assert!(
            !restart_elsewhere(&s),
            "an overlay in the host's state dir is local"
        );
    }

    #[test]
    fn libvirt_or_storage_false_makes_a_host_unhealthy_but_kvm_false_or_unreported_does_not() {
        let cond = |t: &str, status: &str| ironvisor_crds::common::Condition {
            type_: t.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            ),
        };
        let mut hv = Hypervisor::new("h", HypervisorSpec::default());
        assert_eq!(unhealthy(&hv), None);
        hv.status = Some(HypervisorStatus {
            conditions: vec![
                cond("KVMAvailable", "False"),
                cond("LibvirtHealthy", "True"),
            ],
            ..Default::default()
        });
        assert_eq!(unhealthy(&hv), None);
        hv.status
            .as_mut()
            .unwrap()
            .conditions
            .push(cond("StorageAccessible", "False"));
        assert_eq!(unhealthy(&hv), Some(FilterReason::StorageInaccessible));
        hv.status.as_mut().unwrap().conditions[1].status = "False".into();
        assert_eq!(unhealthy(&hv), Some(FilterReason::LibvirtUnhealthy));
    }
}
