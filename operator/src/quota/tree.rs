//! The tenant tree and namespace ownership.
//!
//! Owns two pure questions: which tenant owns a namespace (the earliest-created tenant that
//! lists it; a later claimant gets a conflict, never a takeover; a reserved namespace belongs
//! to no tenant), and the chain of ancestors of a tenant (stopping at a cycle or a missing
//! parent, both reported).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::Reserved;

/// What the tree needs to know about one Tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantNode {
    /// The tenant's name.
    pub name: String,
    /// `spec.parent`.
    pub parent: Option<String>,
    /// `spec.namespaces`.
    pub namespaces: Vec<String>,
    /// `metadata.creationTimestamp`; the earlier claim on a namespace wins.
    pub created: Timestamp,
}

impl TenantNode {
    /// What the tree reads of a Tenant object.
    pub fn from_tenant(t: &ironvisor_crds::tenant::Tenant) -> Self {
        use kube::ResourceExt;
        TenantNode {
            name: t.name_any(),
            parent: t.spec.parent.clone(),
            namespaces: t.spec.namespaces.clone(),
            created: t
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|c| c.0)
                .unwrap_or_default(),
        }
    }
}

/// A problem in the tree, reported on the tenant concerned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeProblem {
    /// A namespace the tenant lists is owned by an earlier tenant.
    #[error("namespace {namespace} is already owned by tenant {owner}")]
    NamespaceClaimed {
        /// The namespace.
        namespace: String,
        /// The tenant that owns it.
        owner: String,
    },
    /// The namespace can belong to no tenant ([`Reserved`]); the message says why.
    #[error("{0}")]
    NamespaceReserved(String),
    /// The parent does not exist.
    #[error("parent tenant {0} does not exist")]
    MissingParent(String),
    /// Following parents leads back to this tenant.
    #[error("the parent chain loops: {0}")]
    Cycle(String),
}

/// The tenants, indexed for ownership and ancestry queries.
#[derive(Clone, Debug, Default)]
pub struct TenantTree {
    tenants: BTreeMap<String, TenantNode>,
    /// namespace → owning tenant.
    owners: BTreeMap<String, String>,
    reserved: Reserved,
}

impl TenantTree {
    /// Build the tree from every tenant, with the default reserved namespaces.
    pub fn new(nodes: impl IntoIterator<Item = TenantNode>) -> Self {
        Self::with_reserved(nodes, Reserved::default())
    }

    /// Build the tree from every tenant; no tenant owns a namespace in `reserved`.
    pub fn with_reserved(nodes: impl IntoIterator<Item = TenantNode>, reserved: Reserved) -> Self {
        let tenants: BTreeMap<String, TenantNode> =
            nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        let mut by_age: Vec<&TenantNode> = tenants.values().collect();
        by_age.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        let mut owners = BTreeMap::new();
        for t in by_age {
            for ns in t
                .namespaces
                .iter()
                .filter(|n| reserved.refusal(n).is_none())
            {
                owners.entry(ns.clone()).or_insert_with(|| t.name.clone());
            }
        }
        Self {
            tenants,
            owners,
            reserved,
        }
    }

    /// The namespaces no tenant may own.
    pub fn reserved(&self) -> &Reserved {
        &self.reserved
    }

    /// The tenant that owns a namespace, if any.
    pub fn owner_of(&self, namespace: &str) -> Option<&str> {
        self.owners.get(namespace).map(String::as_str)
    }

    /// Whether a tenant exists.
    pub fn contains(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// A tenant followed by its ancestors, nearest first. Stops before a repeated tenant
    /// (a cycle) or a missing parent, so it always terminates.
    pub fn chain(&self, tenant: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut cur = self.tenants.get(tenant);
        while let Some(t) = cur {
            if out.contains(&t.name.as_str()) {
                break;
            }
            out.push(&t.name);
            cur = t.parent.as_deref().and_then(|p| self.tenants.get(p));
        }
        out
    }

    /// Whether `ancestor` is `tenant` or one of its ancestors.
    pub fn is_within(&self, tenant: &str, ancestor: &str) -> bool {
        self.chain(tenant).contains(&ancestor)
    }

    /// The namespaces a tenant owns (claimed first by it).
    pub fn owned_namespaces(&self, tenant: &str) -> BTreeSet<&str> {
        self.owners
            .iter()
            .filter(|(_, o)| *o == tenant)
            .map(|(ns, _)| ns.as_str())
            .collect()
    }

    /// Problems with one tenant: namespaces claimed earlier by others, a missing parent, a cycle.
    pub fn problems(&self, tenant: &str) -> Vec<TreeProblem> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ns in &t.namespaces {
            if let Some(why) = self.reserved.refusal(ns) {
                out.push(TreeProblem::NamespaceReserved(why));
            } else if let Some(owner) = self.owners.get(ns).filter(|o| *o != tenant) {
                out.push(TreeProblem::NamespaceClaimed {
                    namespace: ns.clone(),
                    owner: owner.clone(),
                });
            }
        }
        let chain = self.chain(tenant);
        let last = chain.last().and_then(|n| self.tenants.get(*n));
        if let Some(parent) = last.and_then(|l| l.parent.as_deref()) {
            if self.tenants.contains_key(parent) {
                let mut path: Vec<&str> = chain.clone();
                path.push(parent);
                out.push(TreeProblem::Cycle(path.join(" -> ")));
            } else {
                out.push(TreeProblem::MissingParent(parent.to_owned()));
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node(name: &str, parent: Option<&str>, ns: &[&str], created: i64) -> TenantNode {
        TenantNode {
            name: name.into(),
            parent: parent.map(Into::into),
            namespaces: ns.iter().map(|s| (*s).to_owned()).collect(),
            created: Timestamp::from_second(created).expect("valid time"),
        }
    }

    #[test]
    fn the_earlier_tenant_owns_a_namespace_claimed_twice_and_the_later_one_is_told() {
        let tree = TenantTree::new([
            node("late", None, &["shared"], 20),
            node("early", None, &["shared"], 10),
        ]);
        assert_eq!(tree.owner_of("shared"), Some("early"));
        assert_eq!(
            tree.problems("late"),
            vec![TreeProblem::NamespaceClaimed {
                namespace: "shared".into(),
                owner: "early".into()
            }]
        );
        assert!(tree.problems("early").is_empty());
    }

    #[test]
    fn a_reserved_namespace_is_owned_by_no_tenant_and_the_claimant_is_told_why() {
        let tree = TenantTree::with_reserved(
            [node(
                "t",
                None,
                &["default", "kube-system", "ops", "mine"],
                1,
            )],
            Reserved::default().with_own_namespace(Some("ops")),
        );
        for ns in ["default", "kube-system", "ops"] {
            assert_eq!(tree.owner_of(ns), None, "{ns}");
        }
        assert_eq!(tree.owner_of("mine"), Some("t"));
        let problems = tree.problems("t");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0]
                .to_string()
                .starts_with("namespace default cannot belong")
        );
    }

    #[test]
    fn equal_creation_times_break_ties_by_name() {
        let tree = TenantTree::new([node("b", None, &["x"], 10), node("a", None, &["x"], 10)]);
        assert_eq!(tree.owner_of("x"), Some("a"));
    }

    #[test]
    fn the_chain_lists_a_tenant_then_its_ancestors() {
        let tree = TenantTree::new([
            node("org", None, &[], 1),
            node("finance", Some("org"), &[], 2),
            node("payroll", Some("finance"), &["pay"], 3),
        ]);
        assert_eq!(tree.chain("payroll"), vec!["payroll", "finance", "org"]);
        assert!(tree.is_within("payroll", "org"));
        assert!(!tree.is_within("org", "payroll"));
        assert!(tree.problems("payroll").is_empty());
    }

    #[test]
    fn a_cycle_terminates_and_is_reported() {
        let tree = TenantTree::new([node("a", Some("b"), &[], 1), node("b", Some("a"), &[], 2)]);
        assert_eq!(tree.chain("a"), vec!["a", "b"]);
        assert_eq!(
            tree.problems("a"),
            vec![TreeProblem::Cycle("a -> b -> a".into())]
        );
    }

    #[test]
    fn a_missing_parent_is_reported() {
        let tree = TenantTree::new([node("a", Some("ghost"), &[], 1)]);
        assert_eq!(tree.chain("a"), vec!["a"]);
        assert_eq!(
            tree.problems("a"),
            vec![TreeProblem::MissingParent("ghost".into())]
        );
    }
}
