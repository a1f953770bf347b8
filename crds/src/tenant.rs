//! `Tenant`: a department, customer or project that owns namespaces and is bounded by quotas.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Subject;
use crate::quota::Usage;

/// A tenant: the namespaces it owns, who administers them, and its place in the tenant tree.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "Tenant",
    doc = "A tenant (organisation, department, customer or project): the namespaces it owns, who administers them, and its parent in the tenant tree.",
    plural = "tenants",
    singular = "tenant",
    shortname = "tn",
    category = "ironvisor",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Parent","type":"string","jsonPath":".spec.parent"}"#,
    printcolumn = r#"{"name":"VMs","type":"integer","jsonPath":".status.usage.virtualMachines","description":"VMs in the tenant and its children"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(validation = Rule::new("!has(self.spec.parent) || self.spec.parent != self.metadata.name")
    .message("spec.parent must name another tenant, not this one"))]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Name shown to people (e.g. "Finance department").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// Namespaces the tenant owns (DNS labels). They are created when missing and labelled
    /// `ironvisor.io/tenant=<tenant>`; one that already exists is adopted, and adopted
    /// namespaces are never deleted with the tenant. A namespace owned by another tenant is
    /// not taken over; `default`, `kube-*` and the control plane's namespace cannot be claimed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "set",
                      "items" = {"type": "string", "maxLength": 63,
                                 "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}))]
    pub namespaces: Vec<String>,
    /// Who administers the tenant: each gets the ironvisor-admin role in every namespace of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub owners: Vec<Subject>,
    /// Parent tenant (organisation → department → project). A parent's quotas bound the sum
    /// of its own VMs and its children's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub parent: Option<String>,
    /// Host bridges this tenant's VMs may attach to (`spec.networks[].bridge.name`). Empty: none;
    /// the tenant's VMs get user-mode networking only. A bridge is a shared layer-2 segment:
    /// allow it only to tenants meant to share it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set",
                      "items" = {"type": "string", "minLength": 1, "maxLength": 15,
                                 "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}))]
    pub allowed_bridges: Vec<String>,
    /// libvirt networks this tenant's VMs may attach to (`spec.networks[].network.name`).
    /// Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set",
                      "items" = {"type": "string", "minLength": 1, "maxLength": 64,
                                 "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}))]
    pub allowed_networks: Vec<String>,
    /// What happens to the namespaces the operator created for the tenant when the tenant is
    /// deleted: DeleteEmpty (delete those that hold no VMs, keep the others), Delete (delete
    /// all, VMs included) or Retain. Adopted (pre-existing) namespaces are always kept.
    #[serde(default)]
    pub namespace_deletion_policy: NamespaceDeletionPolicy,
}

/// What happens to the namespaces the operator created for a tenant when the tenant is
/// deleted. Adopted (pre-existing) namespaces are released and kept whatever the policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NamespaceDeletionPolicy {
    /// Delete the created namespaces that hold no VMs; keep (and unlabel) the others.
    #[default]
    DeleteEmpty,
    /// Delete every namespace created for the tenant, with its VMs and their disks.
    Delete,
    /// Keep every namespace; only the tenant label is removed.
    Retain,
}

/// Observed state of a tenant, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// State of each namespace of the tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<TenantNamespaceStatus>,
    /// Usage of the tenant and all its descendants (admitted VMs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Conditions: at least Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// State of one namespace of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantNamespaceStatus {
    /// Name of the namespace.
    pub name: String,
    /// Whether it exists, is labelled for this tenant, and its owners' RoleBinding is in place.
    pub ready: bool,
    /// Created (by the operator for this tenant: may be deleted with it) or Adopted (existed
    /// before: only ever released); absent while not claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<NamespaceOrigin>,
    /// Why it is not ready (e.g. claimed by another tenant, or reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a tenant came to own a namespace.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NamespaceOrigin {
    /// The operator created it for the tenant.
    Created,
    /// It existed before the tenant claimed it.
    Adopted,
}
