//! The results of a failed admission check: no tenant for the namespace, or a quota
//! exceeded (with its ResourceQuota-style message).

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

/// A namespace no tenant owns, with no default tenant to count its VMs: nothing new is
/// admitted there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoTenant {
    /// The namespace.
    pub namespace: String,
    /// Why no tenant may own it, when it is reserved.
    pub reserved: Option<String>,
    /// The default tenant named by the operator's setting, when it names one that does not
    /// exist.
    pub missing_default: Option<String>,
}

impl fmt::Display for NoTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = &self.namespace;
        match &self.reserved {
            Some(why) => write!(
                f,
                "namespace {ns} belongs to no Tenant ({why}), so no new VM is admitted there: \
                 create the VM in a namespace a Tenant lists in spec.namespaces"
            )?,
            None => write!(
                f,
                "namespace {ns} belongs to no Tenant, so no new VM is admitted there: create a \
                 Tenant that lists {ns} in spec.namespaces"
            )?,
        }
        f.write_str(
            ", or have the administrator name a default tenant (ironvisor-operator --default-tenant)",
        )?;
        if let Some(d) = &self.missing_default {
            write!(
                f,
                "; the default tenant {d} named by --default-tenant does not exist"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for NoTenant {}
