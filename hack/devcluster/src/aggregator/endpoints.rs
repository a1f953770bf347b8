//! Service resolution like kube-apiserver's `--enable-aggregator-routing=true`: the Service's
//! port by number, then a ready endpoint of an EndpointSlice labelled
//! `kubernetes.io/service-name=<service>` carrying the port of the same name.
//!
//! Pure over the store; never connects.

use super::apiservice::ServiceRef;
use crate::app::App;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};

const SERVICES: &str = "services.";
const SLICES: &str = "endpointslices.discovery.k8s.io";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a Service has no endpoint to proxy to; the reasons are kube-aggregator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such Service.
    #[error("service/{name} in \"{namespace}\" is not present")]
    ServiceNotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The Service has no port with the APIService's number.
    #[error("service/{name} in \"{namespace}\" is not listening on port {port}")]
    PortNotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The APIService's port.
        port: u16,
    },
    /// No ready endpoint carries the port.
    #[error(
        "endpoints for service/{name} in \"{namespace}\" have no addresses with port name \"{port_name}\""
    )]
    MissingEndpoints {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The Service port's name.
        port_name: String,
    },
}

impl ResolveError {
    /// The `Available=False` reason kube-aggregator gives.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServiceNotFound { .. } => "ServiceNotFound",
            Self::PortNotFound { .. } => "ServicePortError",
            Self::MissingEndpoints { .. } => "MissingEndpoints",
        }
    }
}

/// An endpoint address of `svc`.
pub fn resolve(app: &App, svc: &ServiceRef) -> Result<SocketAddr, ResolveError> {
    let service = app
        .store
        .get(SERVICES, &svc.namespace, &svc.name)
        .ok_or_else(|| ResolveError::ServiceNotFound {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
        })?;
    let port_name =
        service_port_name(&service, svc.port).ok_or_else(|| ResolveError::PortNotFound {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            port: svc.port,
        })?;
    let (slices, _) = app.store.list(SLICES, Some(&svc.namespace));
    slices
        .iter()
        .filter(|s| s["metadata"]["labels"][SERVICE_NAME_LABEL] == svc.name.as_str())
        .find_map(|s| endpoint_in(s, &port_name))
        .ok_or_else(|| ResolveError::MissingEndpoints {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            port_name,
        })
}

/// The name ("" when unnamed) of the Service port numbered `port`.
fn service_port_name(service: &Value, port: u16) -> Option<String> {
    service["spec"]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["port"].as_u64() == Some(u64::from(port)))
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
}

/// The first ready address of a slice with its port named `port_name`.
fn endpoint_in(slice: &Value, port_name: &str) -> Option<SocketAddr> {
    let port = slice["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"].as_str().unwrap_or_default() == port_name)?["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())?;
    slice["endpoints"]
        .as_array()?
        .iter()
        .filter(|e| e["conditions"]["ready"].as_bool() != Some(false))
        .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_port_is_found_by_name_and_unready_endpoints_are_skipped() {
        let svc = json!({"spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}});
        assert_eq!(service_port_name(&svc, 443).as_deref(), Some("https"));
        assert_eq!(service_port_name(&svc, 80), None);
        let slice = json!({"ports": [{"name": "https", "port": 8443}],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false}},
                          {"addresses": ["127.0.0.1"]}]});
        assert_eq!(
            endpoint_in(&slice, "https"),
            Some("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(endpoint_in(&slice, "http"), None);
    }
}
