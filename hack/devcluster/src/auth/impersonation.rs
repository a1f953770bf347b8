//! Impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-<key>` headers, kubectl's
//! `--as`/`--as-group`): the caller must be allowed `impersonate` on each, as kube-apiserver
//! checks it; the request then runs as the impersonated user.
//!
//! Owns reading the headers and the checks; the caller supplies the authoriser.

use super::attributes::Attributes;
use super::{AUTHENTICATED, UserInfo};
use crate::error::ApiError;
use axum::http::HeaderMap;

fn impersonate(resource: &str, group: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        api_group: group.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The user the request acts as: `caller`, or whom its headers impersonate when `allows` lets
/// the caller impersonate each part (else 403 as kube-apiserver words it).
pub fn resolve(
    caller: UserInfo,
    headers: &HeaderMap,
    allows: &dyn Fn(&UserInfo, &Attributes) -> bool,
) -> Result<UserInfo, ApiError> {
    let Some(name) = values(headers, "impersonate-user")
        .first()
        .map(|s| s.to_string())
    else {
        if headers.contains_key("impersonate-group") {
            return Err(ApiError::bad_request(
                "requested [Impersonate-Group] without impersonating a user",
            ));
        }
        return Ok(caller);
    };
    let mut checks = vec![];
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => checks.push(impersonate("serviceaccounts", "", ns, sa)),
        None => checks.push(impersonate("users", "", "", &name)),
    }
    let groups: Vec<String> = values(headers, "impersonate-group")
        .iter()
        .map(|s| s.to_string())
        .collect();
    checks.extend(groups.iter().map(|g| impersonate("groups", "", "", g)));
    let uid = values(headers, "impersonate-uid")
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if !uid.is_empty() {
        checks.push(impersonate("uids", "authentication.k8s.io", "", &uid));
    }
    let mut user = UserInfo {
        username: name,
        uid,
        groups,
        ..Default::default()
    };
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-")
            && let Ok(val) = v.to_str()
        {
            checks.push(impersonate(
                &format!("userextras/{key}"),
                "authentication.k8s.io",
                "",
                val,
            ));
            user.extra
                .entry(key.to_string())
                .or_default()
                .push(val.to_string());
        }
    }
    for a in &checks {
        if !allows(&caller, a) {
            return Err(ApiError::forbidden_resource(
                &a.api_group,
                &a.resource,
                &a.name,
                format!(
                    "{}{} {:?} is forbidden: User {:?} cannot impersonate resource {:?} in API group {:?}{}",
                    a.resource,
                    if a.api_group.is_empty() {
                        String::new()
                    } else {
                        format!(".{}", a.api_group)
                    },
                    a.name,
                    caller.username,
                    a.resource,
                    a.api_group,
                    if a.namespace.is_empty() {
                        " at the cluster scope".to_string()
                    } else {
                        format!(" in the namespace {:?}", a.namespace)
                    }
                ),
            ));
        }
    }
    if user.username != super::ANONYMOUS && !user.in_group(AUTHENTICATED) {
        user.groups.push(AUTHENTICATED.into());
    }
    if let Some(sa) = user.username.strip_prefix("system:serviceaccount:")
        && let Some((ns, _)) = sa.split_once(':')
        && user.groups.iter().all(|g| g == AUTHENTICATED)
    {
        user.groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            AUTHENTICATED.into(),
        ];
    }
    Ok(user)
}
