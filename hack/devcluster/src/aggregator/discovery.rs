//! Aggregated groups in discovery: `/apis` (APIGroupList) and `/apis/<group>` list the
//! group/versions APIServices register next to the ones served here, ordered as
//! kube-aggregator orders them (`groupPriorityMinimum`, then `versionPriority`, highest first).
//! `/apis/<group>/<version>` of an aggregated API is the server's own answer (proxied).
//!
//! Pure.

use super::apiservice::ApiService;
use crate::discovery::group_json;
use crate::registry::Registry;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The aggregated groups not served here, each with its versions in preference order, the
/// groups by priority (highest first, then name).
fn remote_groups(services: &[ApiService]) -> Vec<(String, Vec<String>)> {
    let mut by_group: BTreeMap<&str, Vec<&ApiService>> = BTreeMap::new();
    for s in services
        .iter()
        .filter(|s| s.service.is_some() && !s.group.is_empty())
    {
        by_group.entry(&s.group).or_default().push(s);
    }
    let mut groups: Vec<(i64, String, Vec<String>)> = by_group
        .into_iter()
        .map(|(g, mut vs)| {
            vs.sort_by_key(|s| (-s.version_priority, s.version.clone()));
            let prio = vs
                .iter()
                .map(|s| s.group_priority_minimum)
                .max()
                .unwrap_or(0);
            (
                prio,
                g.to_string(),
                vs.iter().map(|s| s.version.clone()).collect(),
            )
        })
        .collect();
    groups.sort_by_key(|(p, g, _)| (-p, g.clone()));
    groups.into_iter().map(|(_, g, vs)| (g, vs)).collect()
}

/// `/apis`: the local groups, then the aggregated ones. A version an APIService adds to a
/// group served here is appended to that group's versions.
pub fn group_list(reg: &Registry, services: &[ApiService]) -> Value {
    let mut list = crate::discovery::group_list(reg);
    let Some(groups) = list["groups"].as_array_mut() else {
        return list;
    };
    for (g, vs) in remote_groups(services) {
        match groups.iter_mut().find(|x| x["name"] == g.as_str()) {
            Some(local) => {
                let mut versions: Vec<String> = local["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["version"].as_str().map(String::from))
                    .collect();
                for v in vs {
                    if !versions.contains(&v) {
                        versions.push(v);
                    }
                }
                let preferred = local["preferredVersion"].clone();
                *local = group_json(&g, &versions);
                local["preferredVersion"] = preferred;
            }
            None => groups.push(group_json(&g, &vs)),
        }
    }
    list
}

/// `/apis/<group>`, local or aggregated.
pub fn group(reg: &Registry, services: &[ApiService], g: &str) -> Option<Value> {
    let list = group_list(reg, services);
    let mut v = list["groups"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == g && !g.is_empty())?
        .clone();
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::apiservice::ServiceRef;

    fn svc(group: &str, version: &str, gp: i64, vp: i64) -> ApiService {
        ApiService {
            name: format!("{version}.{group}"),
            group: group.into(),
            version: version.into(),
            service: Some(ServiceRef {
                namespace: "n".into(),
                name: "s".into(),
                port: 443,
            }),
            ca_bundle: vec![],
            insecure_skip_tls_verify: false,
            group_priority_minimum: gp,
            version_priority: vp,
        }
    }

    #[test]
    fn aggregated_groups_follow_the_local_ones_ordered_by_priority() {
        let reg = Registry::build(&[]);
        let services = [
            svc("b.io", "v1", 100, 10),
            svc("a.io", "v1beta1", 1000, 5),
            svc("a.io", "v1", 1000, 15),
        ];
        let list = group_list(&reg, &services);
        let names: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        let n = names.len();
        assert_eq!(&names[n - 2..], ["a.io", "b.io"]);
        let a = group(&reg, &services, "a.io").unwrap();
        assert_eq!(a["preferredVersion"]["groupVersion"], "a.io/v1");
        assert_eq!(a["versions"][1]["version"], "v1beta1");
        assert!(group(&reg, &services, "c.io").is_none());
    }
}
