//! The set of served resources: built-ins plus whatever the stored CRDs define.
//!
//! Rebuilt from the CRD objects after every CRD change; lookups are by group, version and
//! plural (or short name and kind for discovery). Owns compiled schemas; never stores objects.

use crate::resource::{self, ResourceInfo};
use crate::validation::Compiled;
use serde_json::Value;
use std::sync::Arc;

/// A served resource and its compiled validation.
#[derive(Debug)]
pub struct Served {
    /// Names, scope, columns, schema.
    pub info: ResourceInfo,
    /// Structural schema and CEL rules (custom resources only).
    pub validation: Option<Compiled>,
}

/// Everything served.
#[derive(Debug, Default)]
pub struct Registry {
    resources: Vec<Arc<Served>>,
}

impl Registry {
    /// Built-ins plus the resources of `crds`.
    pub fn build(crds: &[Arc<Value>]) -> Self {
        let mut resources: Vec<Arc<Served>> = resource::builtins()
            .into_iter()
            .map(|info| {
                Arc::new(Served {
                    info,
                    validation: None,
                })
            })
            .collect();
        for crd in crds {
            if crd["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            for info in resource::from_crd(crd) {
                let taken = resources.iter().any(|r| {
                    r.info.group == info.group
                        && r.info.version == info.version
                        && r.info.plural == info.plural
                });
                if taken {
                    continue;
                }
                let validation = info.schema.as_ref().map(Compiled::new);
                resources.push(Arc::new(Served { info, validation }));
            }
        }
        Self { resources }
    }

    /// The resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Served>> {
        self.resources
            .iter()
            .find(|r| r.info.group == group && r.info.version == version && r.info.plural == plural)
            .cloned()
    }

    /// All served resources.
    pub fn all(&self) -> &[Arc<Served>] {
        &self.resources
    }

    /// Groups in discovery order (core first as ""), each with its versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = vec![];
        for r in &self.resources {
            let g = &r.info.group;
            match out.iter_mut().find(|(og, _)| og == g) {
                Some((_, vs)) => {
                    if !vs.contains(&r.info.version) {
                        vs.push(r.info.version.clone());
                    }
                }
                None => out.push((g.clone(), vec![r.info.version.clone()])),
            }
        }
        for (g, vs) in &mut out {
            let storage = self
                .resources
                .iter()
                .find(|r| &r.info.group == g)
                .map(|r| r.info.storage_version.clone())
                .unwrap_or_default();
            vs.sort_by_key(|v| (v != &storage, kube_version_rank(v)));
        }
        out
    }

    /// The resources of one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<Served>> {
        self.resources
            .iter()
            .filter(|r| r.info.group == group && r.info.version == version)
            .cloned()
            .collect()
    }
}

/// Sort key for Kubernetes versions: GA before beta before alpha, higher numbers first.
fn kube_version_rank(v: &str) -> (u8, i64, i64) {
    let rest = v.strip_prefix('v').unwrap_or(v);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major: i64 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stage, n) = if tail.is_empty() {
        (0, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (1, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (2, n.parse().unwrap_or(0))
    } else {
        (3, 0)
    };
    (stage, -major, -n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ga_versions_rank_before_beta_and_alpha() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2"];
        v.sort_by_key(|s| kube_version_rank(s));
        assert_eq!(v, vec!["v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}
