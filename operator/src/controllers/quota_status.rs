//! The status of a Quota: limits in force, usage recomputed from admitted VMs, `used/hard`
//! summaries and conditions. Pure; the scheduler loop writes it after every pass.

use ironvisor_crds::common::{Condition, condition_type, set_condition};
use ironvisor_crds::quota::{Quota, QuotaStatus, QuotaSummary};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::quota::Ledger;
use crate::units::{Limits, Resource};

/// Condition type set while usage is above a (lowered) limit.
pub const EXCEEDED: &str = "Exceeded";

fn cond(type_: &str, ok: bool, reason: &str, message: String, now: jiff::Timestamp) -> Condition {
    ironvisor_crds::common::new_condition(type_, ok, reason, message, None, Time(now))
}

/// The status a Quota should have, given this pass's ledger.
pub fn desired(q: &Quota, ledger: &Ledger, now: jiff::Timestamp) -> QuotaStatus {
    let old = q.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone();
    let generation = q.metadata.generation;
    let limits = match Limits::parse(&q.spec.hard) {
        Ok(l) => l,
        Err(e) => {
            set_condition(
                &mut conditions,
                cond(
                    condition_type::READY,
                    false,
                    "InvalidSpec",
                    e.to_string(),
                    now,
                ),
            );
            return QuotaStatus {
                conditions,
                observed_generation: generation,
                ..old
            };
        }
    };
    let used = ledger.used(&q.spec.tenant);
    let tenant_known = ledger.tree().contains(&q.spec.tenant);
    let (ready, reason, msg) = if tenant_known {
        (
            true,
            "Enforced",
            format!("bounds tenant {} and its descendants", q.spec.tenant),
        )
    } else {
        (
            false,
            "TenantNotFound",
            format!(
                "tenant {} does not exist; the quota bounds nothing",
                q.spec.tenant
            ),
        )
    };
    set_condition(
        &mut conditions,
        cond(condition_type::READY, ready, reason, msg, now),
    );
    let over = limits.exceeded_by(&used);
    let exceeded = if over.is_empty() {
        cond(
            EXCEEDED,
            false,
            "WithinLimits",
            "usage is within every limit".into(),
            now,
        )
    } else {
        let what: Vec<String> = over
            .iter()
            .map(|r| format!("{r} {}", limits.summary(&used, *r)))
            .collect();
        cond(
            EXCEEDED,
            true,
            "UsageAboveLimit",
            format!(
                "usage is above the limit ({}): running VMs keep running, new VMs wait",
                what.join(", ")
            ),
            now,
        )
    };
    set_condition(&mut conditions, exceeded);
    QuotaStatus {
        hard: Some(q.spec.hard.clone()),
        used: Some(used.to_usage()),
        summary: Some(QuotaSummary {
            virtual_machines: limits.summary(&used, Resource::VirtualMachines),
            vcpus: limits.summary(&used, Resource::Vcpus),
            memory: limits.summary(&used, Resource::Memory),
            storage: limits.summary(&used, Resource::Storage),
        }),
        conditions,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::tree::tests::node;
    use crate::quota::{QuotaEntry, TenantTree};
    use crate::units::Units;
    use ironvisor_crds::quota::{QuotaLimits, QuotaSpec};

    fn quota(vcpus: i64) -> Quota {
        let mut q = Quota::new(
            "fin-q",
            QuotaSpec {
                tenant: "fin".into(),
                hard: QuotaLimits {
                    vcpus: Some(vcpus),
                    memory: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        "8Gi".into(),
                    )),
                    ..Default::default()
                },
            },
        );
        q.metadata.generation = Some(3);
        q
    }

    fn ledger(vcpus: i128) -> Ledger {
        let q = quota(0);
        let limits = Limits::parse(&q.spec.hard).unwrap();
        let mut l = Ledger::new(
            TenantTree::new([node("fin", None, &["fin"], 0)]),
            vec![QuotaEntry {
                name: "fin-q".into(),
                tenant: "fin".into(),
                limits,
            }],
        );
        l.add(
            "fin",
            Units {
                vms: 2,
                vcpus,
                memory: 3 << 30,
                storage: 0,
            },
        );
        l
    }

    #[test]
    fn status_shows_hard_used_and_summaries() {
        let s = desired(
            &quota(32),
            &ledger(30),
            jiff::Timestamp::from_second(0).unwrap(),
        );
        let sum = s.summary.unwrap();
        assert_eq!(
            (
                sum.virtual_machines.as_str(),
                sum.vcpus.as_str(),
                sum.memory.as_str(),
                sum.storage.as_str()
            ),
            ("2/-", "30/32", "3Gi/8Gi", "0/-")
        );
        assert_eq!(s.used.unwrap().vcpus, 30);
        assert_eq!(s.observed_generation, Some(3));
        let ex = s.conditions.iter().find(|c| c.type_ == EXCEEDED).unwrap();
        assert_eq!(ex.status, "False");
    }

    #[test]
    fn a_quota_lowered_below_usage_says_so_in_a_condition() {
        let s = desired(
            &quota(16),
            &ledger(30),
            jiff::Timestamp::from_second(0).unwrap(),
        );
        let ex = s.conditions.iter().find(|c| c.type_ == EXCEEDED).unwrap();
        assert_eq!(ex.status, "True");
        assert_eq!(
            ex.message,
            "usage is above the limit (vcpus 30/16): running VMs keep running, new VMs wait"
        );
    }

    #[test]
    fn a_quota_for_an_unknown_tenant_is_not_ready() {
        let mut q = quota(1);
        q.spec.tenant = "ghost".into();
        let s = desired(&q, &ledger(0), jiff::Timestamp::from_second(0).unwrap());
        let r = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "TenantNotFound")
        );
    }
}
