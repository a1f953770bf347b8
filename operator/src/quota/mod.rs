//! Quota arithmetic in VM units: usage rolled up the tenant tree, and the admission check.
//!
//! Owns the ledger of what each tenant (with its descendants) uses and the decision whether
//! a request fits every quota of the tenant and of its ancestors. Pure: the ledger is built
//! from the admitted VMs the index knows, and nothing here talks to the API.

mod check;
mod reserved;
pub mod tree;

pub use check::{Exceeded, ExceededResource, NoTenant};
pub use reserved::Reserved;
pub use tree::{TenantNode, TenantTree, TreeProblem};

use std::collections::BTreeMap;

use crate::units::{Limits, Resource, Units};

/// One Quota object, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaEntry {
    /// The Quota's name (in messages).
    pub name: String,
    /// The tenant it bounds, with all its descendants.
    pub tenant: String,
    /// Its limits.
    pub limits: Limits,
}

/// Usage per tenant, rolled up the tree, and the quotas that bound it.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    tree: TenantTree,
    quotas: Vec<QuotaEntry>,
    /// tenant → usage of the tenant and all its descendants.
    rolled: BTreeMap<String, Units>,
    /// namespace → its tenant and the ancestors (cached: `add` runs once per VM per pass).
    chains: BTreeMap<String, Vec<String>>,
    /// The tenant that counts VMs of namespaces no tenant owns (`--default-tenant`).
    default_tenant: Option<String>,
}

impl Ledger {
    /// A ledger with no usage yet.
    pub fn new(tree: TenantTree, mut quotas: Vec<QuotaEntry>) -> Self {
        quotas.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.tenant.cmp(&b.tenant)));
        Self {
            tree,
            quotas,
            rolled: BTreeMap::new(),
            chains: BTreeMap::new(),
            default_tenant: None,
        }
    }

    /// Count VMs of namespaces no tenant owns under `tenant` (when it exists), instead of
    /// refusing them with [`NoTenant`].
    pub fn with_default_tenant(mut self, tenant: Option<String>) -> Self {
        self.default_tenant = tenant;
        self.chains.clear();
        self
    }

    /// The tenant whose quotas bound VMs in `namespace`: its owner, else the default tenant
    /// when one is named and exists. A namespace with neither admits no new VM.
    pub fn tenant_of(&self, namespace: &str) -> Result<&str, NoTenant> {
        if let Some(owner) = self.tree.owner_of(namespace) {
            return Ok(owner);
        }
        match self.default_tenant.as_deref() {
            Some(d) if self.tree.contains(d) => Ok(d),
            missing => Err(NoTenant {
                namespace: namespace.to_owned(),
                reserved: self.tree.reserved().refusal(namespace),
                missing_default: missing.map(str::to_owned),
            }),
        }
    }

    /// The tenant tree.
    pub fn tree(&self) -> &TenantTree {
        &self.tree
    }

    /// Record usage of a VM in a namespace: it counts for the namespace's tenant (or the
    /// default tenant) and every ancestor. A VM admitted before its namespace lost its
    /// tenant counts nowhere.
    pub fn add(&mut self, namespace: &str, units: Units) {
        if !self.chains.contains_key(namespace) {
            let chain: Vec<String> = match self.tenant_of(namespace).ok() {
                Some(owner) => self
                    .tree
                    .chain(owner)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                None => Vec::new(),
            };
            self.chains.insert(namespace.to_owned(), chain);
        }
        for t in self.chains.get(namespace).into_iter().flatten() {
            match self.rolled.get_mut(t) {
                Some(u) => *u += units,
                None => {
                    self.rolled.insert(t.clone(), units);
                }
            }
        }
    }

    /// What a tenant and its descendants use.
    pub fn used(&self, tenant: &str) -> Units {
        self.rolled.get(tenant).copied().unwrap_or_default()
    }

    /// The quotas, sorted by name.
    pub fn quotas(&self) -> &[QuotaEntry] {
        &self.quotas
    }

    /// The quotas that bound VMs in a namespace: those of its tenant and of every ancestor,
    /// nearest tenant first, then by quota name.
    pub fn quotas_for(&self, namespace: &str) -> Vec<&QuotaEntry> {
        let Ok(owner) = self.tenant_of(namespace) else {
            return Vec::new();
        };
        let chain = self.tree.chain(owner);
        let mut qs: Vec<(usize, &QuotaEntry)> = self
            .quotas
            .iter()
            .filter_map(|q| chain.iter().position(|t| *t == q.tenant).map(|i| (i, q)))
            .collect();
        qs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        qs.into_iter().map(|(_, q)| q).collect()
    }

    /// Check a request against every quota of the namespace's tenant and its ancestors (a
    /// namespace with no tenant has none: ask [`Ledger::tenant_of`] first). Only resources the request asks for are checked, so a Halted VM (no vCPUs, no
    /// memory) is not blocked by a compute quota that is already exceeded.
    pub fn check(&self, namespace: &str, request: &Units) -> Result<(), Exceeded> {
        for q in self.quotas_for(namespace) {
            let used = self.used(&q.tenant);
            let over: Vec<ExceededResource> = Resource::ALL
                .into_iter()
                .filter(|r| request.get(*r) > 0)
                .filter_map(|r| {
                    let hard = q.limits.get(r)?;
                    let after = used.get(r).saturating_add(request.get(r));
                    (after > hard).then_some(ExceededResource {
                        resource: r,
                        requested: request.get(r),
                        used: used.get(r),
                        limited: hard,
                    })
                })
                .collect();
            if !over.is_empty() {
                return Err(Exceeded {
                    quota: q.name.clone(),
                    resources: over,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::tree::tests::node;
    use super::*;
    use pretty_assertions::assert_eq;

    fn limits(vms: Option<i128>, vcpus: Option<i128>, memory: Option<i128>) -> Limits {
        Limits {
            vms,
            vcpus,
            memory,
            storage: None,
        }
    }

    fn ledger() -> Ledger {
        let tree = TenantTree::new([
            node("org", None, &["org-ns"], 1),
            node("finance", Some("org"), &["fin"], 2),
            node("payroll", Some("finance"), &["pay"], 3),
            node("hr", Some("org"), &["hr"], 4),
        ]);
        Ledger::new(
            tree,
            vec![
                QuotaEntry {
                    name: "org-all".into(),
                    tenant: "org".into(),
                    limits: limits(Some(10), None, None),
                },
                QuotaEntry {
                    name: "finance-compute".into(),
                    tenant: "finance".into(),
                    limits: limits(None, Some(32), None),
                },
            ],
        )
    }

    fn vm(vcpus: i128, memory: i128) -> Units {
        Units {
            vms: 1,
            vcpus,
            memory,
            storage: 0,
        }
    }

    #[test]
    fn usage_rolls_up_to_every_ancestor_but_not_to_siblings() {
        let mut l = ledger();
        l.add("pay", vm(4, 1 << 30));
        l.add("fin", vm(2, 1 << 30));
        l.add("hr", vm(1, 1 << 30));
        assert_eq!(l.used("payroll").vcpus, 4);
        assert_eq!(l.used("finance").vcpus, 6);
        assert_eq!(l.used("org").vcpus, 7);
        assert_eq!(l.used("hr").vcpus, 1);
    }

    #[test]
    fn a_namespace_without_a_tenant_has_no_tenant_and_counts_nowhere() {
        let mut l = ledger();
        l.add("nobody", vm(1000, 0));
        assert_eq!(l.used("org"), Units::default());
        let e = l.tenant_of("nobody").unwrap_err();
        assert_eq!(
            e.to_string(),
            "namespace nobody belongs to no Tenant, so no new VM is admitted there: create a \
             Tenant that lists nobody in spec.namespaces, or have the administrator name a \
             default tenant (ironvisor-operator --default-tenant)"
        );
    }

    #[test]
    fn the_default_tenant_owns_unclaimed_namespaces_and_its_quotas_bound_them() {
        let mut l = ledger().with_default_tenant(Some("hr".into()));
        assert_eq!(l.tenant_of("nobody"), Ok("hr"));
        assert_eq!(l.tenant_of("fin"), Ok("finance"), "an owner comes first");
        l.add("nobody", vm(3, 0));
        assert_eq!(l.used("hr").vcpus, 3);
        assert_eq!(l.used("org").vcpus, 3, "and its ancestors");
        for _ in 0..9 {
            l.add("nobody", vm(0, 0));
        }
        assert_eq!(l.check("nobody", &vm(1, 0)).unwrap_err().quota, "org-all");
    }

    #[test]
    fn a_default_tenant_that_does_not_exist_is_named_in_the_refusal() {
        let l = ledger().with_default_tenant(Some("ghost".into()));
        let e = l.tenant_of("default").unwrap_err().to_string();
        assert!(e.starts_with("namespace default belongs to no Tenant (namespace default cannot belong to a tenant: "), "{e}");
        assert!(
            e.ends_with("; the default tenant ghost named by --default-tenant does not exist"),
            "{e}"
        );
    }

    #[test]
    fn exceeding_a_quota_gives_the_resource_quota_message() {
        let mut l = ledger();
        for _ in 0..15 {
            l.add("fin", vm(2, 0));
        }
        // 15 VMs > org-all's 10 already, but org-all is checked only after finance's quota.
        let e = l
            .check(
                "pay",
                &Units {
                    vms: 0,
                    vcpus: 4,
                    memory: 0,
                    storage: 0,
                },
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "exceeded quota: finance-compute, requested: vcpus=4, used: vcpus=30, limited: vcpus=32"
        );
    }

    #[test]
    fn a_parent_quota_bounds_the_sum_of_its_children() {
        let mut l = ledger();
        for _ in 0..5 {
            l.add("pay", vm(1, 0));
            l.add("hr", vm(1, 0));
        }
        let e = l.check("hr", &vm(1, 0)).unwrap_err();
        assert_eq!(e.quota, "org-all");
        assert_eq!(
            e.to_string(),
            "exceeded quota: org-all, requested: virtualMachines=1, used: virtualMachines=10, limited: virtualMachines=10"
        );
    }

    #[test]
    fn a_request_that_fits_exactly_is_admitted() {
        let mut l = ledger();
        l.add("fin", vm(28, 0));
        assert_eq!(l.check("fin", &vm(4, 0)), Ok(()));
        assert!(l.check("fin", &vm(5, 0)).is_err());
    }

    #[test]
    fn a_lowered_quota_blocks_new_compute_but_not_a_halted_vm_and_says_so() {
        let mut l = ledger();
        l.add("fin", vm(40, 0));
        let e = l.check("fin", &vm(1, 0)).unwrap_err();
        assert!(e.usage_above_limit());
        assert!(
            e.to_string().ends_with(
                "(usage is above the lowered limit: running VMs keep running, new ones wait)"
            ),
            "{e}"
        );
        let halted = vm(1, 1 << 30).non_compute();
        assert_eq!(l.check("fin", &halted), Ok(()));
    }

    #[test]
    fn every_exceeded_resource_of_the_first_failing_quota_is_listed_in_order() {
        let tree = TenantTree::new([node("t", None, &["ns"], 1)]);
        let mut l = Ledger::new(
            tree,
            vec![QuotaEntry {
                name: "q".into(),
                tenant: "t".into(),
                limits: limits(Some(1), Some(2), Some(1 << 30)),
            }],
        );
        l.add("ns", vm(2, 1 << 30));
        let e = l.check("ns", &vm(1, 512 << 20)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "exceeded quota: q, requested: virtualMachines=1,vcpus=1,memory=512Mi, used: virtualMachines=1,vcpus=2,memory=1Gi, limited: virtualMachines=1,vcpus=2,memory=1Gi"
        );
    }
}
