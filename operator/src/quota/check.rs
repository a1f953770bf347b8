//! The result of a failed quota check, and its ResourceQuota-style message.

use std::fmt;

use crate::units::Resource;

/// One resource over its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExceededResource {
    /// Which resource.
    pub resource: Resource,
    /// What the VM asks for.
    pub requested: i128,
    /// What is already used under the quota.
    pub used: i128,
    /// The limit.
    pub limited: i128,
}

/// A request that does not fit a quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// The quota that does not fit.
    pub quota: String,
    /// Every resource of that quota the request would push over its limit, in order.
    pub resources: Vec<ExceededResource>,
}

impl Exceeded {
    /// Whether usage is already above the limit (the quota was lowered below usage).
    pub fn usage_above_limit(&self) -> bool {
        self.resources.iter().any(|r| r.used > r.limited)
    }
}

impl fmt::Display for Exceeded {
    /// `exceeded quota: finance-compute, requested: vcpus=4, used: vcpus=30, limited: vcpus=32`,
    /// as Kubernetes' ResourceQuota admission words it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |pick: fn(&ExceededResource) -> i128| {
            self.resources
                .iter()
                .map(|r| format!("{}={}", r.resource, r.resource.format(pick(r))))
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "exceeded quota: {}, requested: {}, used: {}, limited: {}",
            self.quota,
            list(|r| r.requested),
            list(|r| r.used),
            list(|r| r.limited)
        )?;
        if self.usage_above_limit() {
            f.write_str(
                " (usage is above the lowered limit: running VMs keep running, new ones wait)",
            )?;
        }
        Ok(())
    }
}
