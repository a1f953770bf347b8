//! The `APIService` kind (`apiregistration.k8s.io/v1`, cluster-scoped): which group/version a
//! Service serves, how to trust it, and its priority in discovery; the `Available` condition
//! and the table columns kubectl shows (`NAME SERVICE AVAILABLE AGE`).
//!
//! Pure: reads stored objects, never writes.

use crate::app::App;
use base64::Engine;
use serde_json::{Value, json};

/// Storage key of APIServices.
pub const KEY: &str = "apiservices.apiregistration.k8s.io";

/// `spec.service`: where the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port (default 443).
    pub port: u16,
}

impl ServiceRef {
    /// The name the server certificate must carry: `<name>.<namespace>.svc`.
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

/// One APIService, as the aggregator uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiService {
    /// `<version>.<group>`.
    pub name: String,
    /// `spec.group`.
    pub group: String,
    /// `spec.version`.
    pub version: String,
    /// `spec.service`; `None` for APIs the devcluster serves itself ("Local").
    pub service: Option<ServiceRef>,
    /// `spec.caBundle`, decoded (PEM).
    pub ca_bundle: Vec<u8>,
    /// `spec.insecureSkipTLSVerify`.
    pub insecure_skip_tls_verify: bool,
    /// `spec.groupPriorityMinimum`.
    pub group_priority_minimum: i64,
    /// `spec.versionPriority`.
    pub version_priority: i64,
}

impl ApiService {
    /// The APIService of a stored object; `None` when its name is not `<version>.<group>`
    /// (kube-apiserver's validation refuses such objects; here they are ignored).
    pub fn from_object(o: &Value) -> Option<Self> {
        let name = o["metadata"]["name"].as_str()?.to_string();
        let spec = &o["spec"];
        let group = spec["group"].as_str().unwrap_or_default().to_string();
        let version = spec["version"].as_str()?.to_string();
        if name != format!("{version}.{group}") || version.is_empty() {
            return None;
        }
        let service = spec["service"].as_object().map(|s| ServiceRef {
            namespace: s
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            name: s
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            port: s
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443),
        });
        let ca_bundle = spec["caBundle"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        Some(Self {
            name,
            group,
            version,
            service,
            ca_bundle,
            insecure_skip_tls_verify: spec["insecureSkipTLSVerify"].as_bool() == Some(true),
            group_priority_minimum: spec["groupPriorityMinimum"].as_i64().unwrap_or(0),
            version_priority: spec["versionPriority"].as_i64().unwrap_or(0),
        })
    }
}

/// Every well-formed stored APIService.
pub fn all(app: &App) -> Vec<ApiService> {
    app.store
        .list(KEY, None)
        .0
        .iter()
        .filter(|o| !crate::meta::deleting(o))
        .filter_map(|o| ApiService::from_object(o))
        .collect()
}

/// The APIService that proxies `group/version` to a Service, if any.
pub fn remote(app: &App, group: &str, version: &str) -> Option<ApiService> {
    let o = app.store.get(KEY, "", &format!("{version}.{group}"))?;
    if crate::meta::deleting(&o) {
        return None;
    }
    ApiService::from_object(&o).filter(|s| s.service.is_some())
}

/// The `Available` condition of a stored object: (status, reason).
pub fn available(o: &Value) -> Option<(String, String)> {
    let c = o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Available")?;
    Some((
        c["status"].as_str().unwrap_or("Unknown").to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
    ))
}

/// The SERVICE column: `namespace/name`, or `Local`.
pub fn service_column(o: &Value) -> Value {
    let s = &o["spec"]["service"];
    if !s.is_object() {
        return json!("Local");
    }
    json!(format!(
        "{}/{}",
        s["namespace"].as_str().unwrap_or_default(),
        s["name"].as_str().unwrap_or_default()
    ))
}

/// The AVAILABLE column: `True`, or `False (Reason)` as kube-aggregator prints it.
pub fn available_column(o: &Value) -> Value {
    match available(o) {
        None => json!("Unknown"),
        Some((s, r)) if s == "True" || r.is_empty() => json!(s),
        Some((s, r)) => json!(format!("{s} ({r})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apiservice_parses_its_service_and_ca_and_needs_a_matching_name() {
        let o = json!({"metadata": {"name": "v1.x.io"}, "spec": {"group": "x.io", "version": "v1",
            "service": {"namespace": "n", "name": "s"}, "caBundle": "UEVN",
            "groupPriorityMinimum": 1000, "versionPriority": 15}});
        let s = ApiService::from_object(&o).unwrap();
        assert_eq!(s.service.as_ref().unwrap().port, 443);
        assert_eq!(s.service.as_ref().unwrap().server_name(), "s.n.svc");
        assert_eq!(s.ca_bundle, b"PEM");
        let mut wrong = o.clone();
        wrong["metadata"]["name"] = json!("v2.x.io");
        assert!(ApiService::from_object(&wrong).is_none());
    }

    #[test]
    fn columns_show_local_and_the_reason_of_unavailability() {
        let local = json!({"spec": {"group": "x.io", "version": "v1"},
            "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]}});
        assert_eq!(service_column(&local), "Local");
        assert_eq!(available_column(&local), "True");
        let down = json!({"spec": {"service": {"namespace": "n", "name": "s"}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "MissingEndpoints"}]}});
        assert_eq!(service_column(&down), "n/s");
        assert_eq!(available_column(&down), "False (MissingEndpoints)");
    }
}
