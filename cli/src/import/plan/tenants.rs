//! Which tenant each VM lands in: a rules file mapping vSphere folders, resource pools,
//! clusters, annotations and custom attributes to Ironvisor tenants.
//!
//! ```yaml
//! defaultTenant: migration-triage     # optional: where VMs no rule matches go
//! rules:
//!   - tenant: finance
//!     namespace: finance-vms          # optional: default the tenant's name
//!     match:                          # every key given must match (glob: * and ?)
//!       folder: "*/Finance/*"
//!       cluster: "Prod-*"
//!       attribute: { name: "Application Type", value: "SAP*" }
//! ```
//!
//! The first rule whose every pattern matches wins. Patterns are case-insensitive globs.
//! Pure: the file is parsed from text.

use serde::{Deserialize, Serialize};

use super::inventory::InvVm;

/// A custom attribute test (RVTools writes custom attributes as extra vInfo columns).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// The column header.
    pub name: String,
    /// Glob on its value.
    pub value: String,
}

/// What a rule matches; absent keys match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Glob on the VM's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Glob on the resource pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pool: Option<String>,
    /// Glob on the vSphere cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Glob on the datacenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Glob on the annotation (notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    /// Glob on the VM's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// A custom attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<AttributeMatch>,
}

/// One mapping rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantRule {
    /// The tenant.
    pub tenant: String,
    /// The namespace the VMs go to (default: the tenant's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The tests.
    #[serde(rename = "match", default)]
    pub matches: Match,
}

/// The rules file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantRules {
    /// Where VMs no rule matches go; without it they stay unassigned (a manual step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tenant: Option<String>,
    /// The rules, first match wins.
    #[serde(default)]
    pub rules: Vec<TenantRule>,
}

/// Why a rules file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TenantRulesError {
    /// Not YAML of the expected shape.
    #[error("the tenant rules do not parse")]
    Parse(#[source] serde_saphyr::Error),
    /// A tenant or namespace name Kubernetes refuses.
    #[error(
        "rule {index}: {name:?} is not a DNS label (lower-case letters, digits, '-', at most 63)"
    )]
    BadName {
        /// 1-based rule number (0 for defaultTenant).
        index: usize,
        /// The name.
        name: String,
    },
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl TenantRules {
    /// Parse and check a rules file.
    pub fn parse(yaml: &str) -> Result<Self, TenantRulesError> {
        let rules: Self = serde_saphyr::from_str(yaml).map_err(TenantRulesError::Parse)?;
        let names = rules.default_tenant.iter().map(|t| (0, t)).chain(
            rules.rules.iter().enumerate().flat_map(|(i, r)| {
                std::iter::once((i + 1, &r.tenant))
                    .chain(r.namespace.iter().map(move |n| (i + 1, n)))
            }),
        );
        for (index, name) in names {
            if !dns_label(name) {
                return Err(TenantRulesError::BadName {
                    index,
                    name: name.clone(),
                });
            }
        }
        Ok(rules)
    }
}

/// Where a VM lands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// Which rule: `rule 3`, `default`, or `none`.
    pub by: String,
}

/// Apply the rules to a VM.
pub fn assign(rules: &TenantRules, vm: &InvVm) -> Assignment {
    let hit = rules
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| matches(&r.matches, vm));
    match (hit, &rules.default_tenant) {
        (Some((i, r)), _) => Assignment {
            tenant: Some(r.tenant.clone()),
            namespace: Some(r.namespace.clone().unwrap_or_else(|| r.tenant.clone())),
            by: format!("rule {}", i + 1),
        },
        (None, Some(t)) => Assignment {
            tenant: Some(t.clone()),
            namespace: Some(t.clone()),
            by: "default".into(),
        },
        (None, None) => Assignment {
            tenant: None,
            namespace: None,
            by: "none".into(),
        },
    }
}

fn matches(m: &Match, vm: &InvVm) -> bool {
    let test = |pattern: &Option<String>, value: &Option<String>| {
        pattern
            .as_deref()
            .is_none_or(|p| glob(p, value.as_deref().unwrap_or("")))
    };
    let attribute = m.attribute.as_ref().is_none_or(|a| {
        let want = super::columns::normalise(&a.name);
        vm.attributes
            .iter()
            .find(|(k, _)| super::columns::normalise(k) == want)
            .is_some_and(|(_, v)| glob(&a.value, v))
    });
    test(&m.folder, &vm.folder)
        && test(&m.resource_pool, &vm.resource_pool)
        && test(&m.cluster, &vm.cluster)
        && test(&m.datacenter, &vm.datacenter)
        && test(&m.annotation, &vm.annotation)
        && test(&m.vm, &Some(vm.name.clone()))
        && attribute
}

/// Case-insensitive glob with `*` (any run) and `?` (one character); linear backtracking,
/// so a hostile pattern cannot take exponential time.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(folder: &str, cluster: &str) -> InvVm {
        InvVm {
            name: "web-01".into(),
            folder: Some(folder.into()),
            cluster: Some(cluster.into()),
            attributes: [("Application Type".to_string(), "SAP ERP".to_string())].into(),
            ..InvVm::default()
        }
    }

    #[test]
    fn globs_match_like_shells_do() {
        assert!(glob("*/finance/*", "DC1/vm/Finance/web"));
        assert!(glob("prod-??", "Prod-01"));
        assert!(!glob("prod-??", "Prod-001"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "a"));
        let long = "a".repeat(5000);
        assert!(!glob("*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn the_first_rule_whose_every_pattern_matches_wins() {
        let rules = TenantRules::parse(
            "defaultTenant: triage\nrules:\n  - tenant: finance\n    match: { folder: '*/finance/*', cluster: 'prod*' }\n  - tenant: sap\n    namespace: sap-vms\n    match: { attribute: { name: application type, value: 'SAP*' } }\n",
        )
        .unwrap();
        let a = assign(&rules, &vm("DC1/Finance/x", "Prod-1"));
        assert_eq!(
            (a.tenant.as_deref(), a.by.as_str()),
            (Some("finance"), "rule 1")
        );
        let a = assign(&rules, &vm("DC1/Finance/x", "Test"));
        assert_eq!(
            (a.tenant.as_deref(), a.namespace.as_deref()),
            (Some("sap"), Some("sap-vms"))
        );
        let mut other = vm("x", "y");
        other.attributes.clear();
        assert_eq!(assign(&rules, &other).by, "default");
    }

    #[test]
    fn a_tenant_name_kubernetes_refuses_is_an_error() {
        let e = TenantRules::parse("rules:\n  - tenant: Finance_Dept\n").unwrap_err();
        assert!(e.to_string().contains("Finance_Dept"), "{e}");
        assert!(TenantRules::parse("rules:\n  - tenant: x\n    mtach: {}\n").is_err());
    }
}
