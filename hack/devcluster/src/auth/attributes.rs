//! Request attributes for authorisation, derived from the method, path and query exactly as
//! kube-apiserver's `RequestInfoFactory` does (`/api/v1/namespaces/n/foos/x/status`, `watch=true`
//! on a list, DELETE of a collection, `fieldSelector=metadata.name=x` naming the object).
//!
//! Pure.

use std::collections::HashMap;

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or for
    /// non-resource requests the lower-case method.
    pub verb: String,
    /// Whether this is an API object request (else a path such as `/version`).
    pub resource_request: bool,
    /// The URL path.
    pub path: String,
    /// Namespace ("" for cluster scope).
    pub namespace: String,
    /// API group ("" for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`, `token`).
    pub subresource: String,
    /// Object name.
    pub name: String,
}

impl Attributes {
    /// `resource/subresource`, as RBAC rules name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Attributes of a request.
pub fn of_request(method: &str, path: &str, query: &HashMap<String, String>) -> Attributes {
    let mut a = Attributes {
        verb: method.to_ascii_lowercase(),
        path: path.to_string(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return a;
    }
    let mut cur = &parts[1..];
    if parts[0] == "apis" {
        if cur.len() < 3 {
            return a;
        }
        a.api_group = cur[0].to_string();
        cur = &cur[1..];
    }
    a.resource_request = true;
    a.api_version = cur[0].to_string();
    cur = &cur[1..];
    a.verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_string();
    if cur.first() == Some(&"namespaces") && cur.len() > 1 {
        a.namespace = cur[1].to_string();
        if cur.len() > 2 && !matches!(cur[2], "status" | "finalize") {
            cur = &cur[2..];
        }
    }
    if let Some(r) = cur.first() {
        a.resource = r.to_string();
    }
    if let Some(n) = cur.get(1) {
        a.name = n.to_string();
    }
    if let Some(s) = cur.get(2) {
        a.subresource = s.to_string();
    }
    if a.name.is_empty() && a.verb == "get" {
        let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
        a.verb = if watch { "watch" } else { "list" }.into();
        if let Some(n) = exact_name(query.get("fieldSelector")) {
            a.name = n;
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

/// The name a field selector requires exactly (`metadata.name=x` or `==`).
fn exact_name(fs: Option<&String>) -> Option<String> {
    fs?.split(',').find_map(|req| {
        let (k, v) = req.split_once("==").or_else(|| req.split_once('='))?;
        (k.trim() == "metadata.name" && !k.ends_with('!')).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, q: &[(&str, &str)]) -> Attributes {
        let q = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        of_request(method, path, &q)
    }

    #[test]
    fn subresources_namespaces_and_verbs_follow_request_info() {
        let a = attrs(
            "PATCH",
            "/apis/ironvisor.io/v1alpha1/namespaces/t1/virtualmachines/vm/status",
            &[],
        );
        assert_eq!(
            (
                a.verb.as_str(),
                a.api_group.as_str(),
                a.namespace.as_str(),
                a.combined_resource().as_str(),
                a.name.as_str()
            ),
            (
                "patch",
                "ironvisor.io",
                "t1",
                "virtualmachines/status",
                "vm"
            )
        );
        let w = attrs("GET", "/api/v1/namespaces/a/secrets", &[("watch", "true")]);
        assert_eq!((w.verb.as_str(), w.resource.as_str()), ("watch", "secrets"));
        let l = attrs(
            "GET",
            "/api/v1/secrets",
            &[("fieldSelector", "metadata.name=x")],
        );
        assert_eq!(
            (l.verb.as_str(), l.name.as_str(), l.namespace.as_str()),
            ("list", "x", "")
        );
        let dc = attrs("DELETE", "/api/v1/namespaces/a/configmaps", &[]);
        assert_eq!(dc.verb, "deletecollection");
    }

    #[test]
    fn a_namespace_is_its_own_namespace_and_discovery_is_not_a_resource() {
        let ns = attrs("GET", "/api/v1/namespaces/a", &[]);
        assert_eq!(
            (
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("namespaces", "a", "a")
        );
        let fin = attrs("PUT", "/api/v1/namespaces/a/finalize", &[]);
        assert_eq!(
            (fin.subresource.as_str(), fin.verb.as_str()),
            ("finalize", "update")
        );
        for p in [
            "/api/v1",
            "/apis/ironvisor.io/v1alpha1",
            "/version",
            "/openapi/v3",
        ] {
            let d = attrs("GET", p, &[]);
            assert!(!d.resource_request, "{p}");
            assert_eq!(d.verb, "get");
        }
        let tok = attrs("POST", "/api/v1/namespaces/s/serviceaccounts/sa/token", &[]);
        assert_eq!(
            (tok.verb.as_str(), tok.combined_resource().as_str()),
            ("create", "serviceaccounts/token")
        );
    }
}
