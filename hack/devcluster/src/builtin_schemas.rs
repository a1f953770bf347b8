//! OpenAPI schemas of the built-in kinds, generated from the k8s-openapi types.
//!
//! Gives `kubectl explain configmap` real field docs and lets custom resource documents
//! reference `ObjectMeta`. Pure.

use crate::resource::ResourceInfo;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventsEvent;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

fn generate<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
    let _ = g.subschema_for::<T>();
    T::schema_name().into_owned()
}

struct All {
    names: Vec<((&'static str, &'static str), String)>,
    defs: Map<String, Value>,
}

fn all() -> &'static All {
    static ALL: OnceLock<All> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut g = SchemaSettings::openapi3().into_generator();
        let names = vec![
            (("", "Namespace"), generate::<Namespace>(&mut g)),
            (("", "ConfigMap"), generate::<ConfigMap>(&mut g)),
            (("", "Secret"), generate::<Secret>(&mut g)),
            (("", "ServiceAccount"), generate::<ServiceAccount>(&mut g)),
            (("", "Event"), generate::<Event>(&mut g)),
            (("", "Node"), generate::<Node>(&mut g)),
            (("", "Pod"), generate::<Pod>(&mut g)),
            (("events.k8s.io", "Event"), generate::<EventsEvent>(&mut g)),
            (("", "Service"), generate::<Service>(&mut g)),
            (
                ("discovery.k8s.io", "EndpointSlice"),
                generate::<EndpointSlice>(&mut g),
            ),
            (
                ("apiregistration.k8s.io", "APIService"),
                generate::<APIService>(&mut g),
            ),
            (("coordination.k8s.io", "Lease"), generate::<Lease>(&mut g)),
            (
                ("rbac.authorization.k8s.io", "Role"),
                generate::<Role>(&mut g),
            ),
            (
                ("rbac.authorization.k8s.io", "ClusterRole"),
                generate::<ClusterRole>(&mut g),
            ),
            (
                ("rbac.authorization.k8s.io", "RoleBinding"),
                generate::<RoleBinding>(&mut g),
            ),
            (
                ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
                generate::<ClusterRoleBinding>(&mut g),
            ),
            (
                ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
                generate::<ValidatingAdmissionPolicy>(&mut g),
            ),
            (
                (
                    "admissionregistration.k8s.io",
                    "ValidatingAdmissionPolicyBinding",
                ),
                generate::<ValidatingAdmissionPolicyBinding>(&mut g),
            ),
            (
                ("apiextensions.k8s.io", "CustomResourceDefinition"),
                generate::<CustomResourceDefinition>(&mut g),
            ),
        ];
        let _ = generate::<ObjectMeta>(&mut g);
        let defs = g.take_definitions(true);
        All { names, defs }
    })
}

/// The schema name of a built-in kind.
pub fn name_of(info: &ResourceInfo) -> String {
    all()
        .names
        .iter()
        .find(|((g, k), _)| *g == info.group && *k == info.kind)
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| format!("devcluster.{}", info.kind))
}

/// Schemas every document carries: all generated definitions (ObjectMeta and friends).
pub fn common() -> Map<String, Value> {
    all().defs.clone()
}

/// Tags the schema of a built-in kind with its group/version/kind.
pub fn add(info: &ResourceInfo, schemas: &mut Map<String, Value>) {
    let name = name_of(info);
    let entry = schemas
        .entry(name)
        .or_insert_with(|| json!({"type": "object"}));
    entry["x-kubernetes-group-version-kind"] =
        json!([{"group": info.group, "version": info.version, "kind": info.kind}]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::builtins;

    #[test]
    fn every_builtin_kind_has_a_generated_schema() {
        for info in builtins() {
            let name = name_of(&info);
            assert!(common().contains_key(&name), "{name}");
        }
    }
}
