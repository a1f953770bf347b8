//! `Quota`: a tenant's allocation in VM units, checked when a VM is admitted.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Limits on what a tenant (with its descendants) may use.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "Quota",
    plural = "quotas",
    singular = "quota",
    shortname = "vmq",
    category = "ironvisor",
    status = "QuotaStatus",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenant"}"#,
    printcolumn = r#"{"name":"VMs","type":"string","jsonPath":".status.summary.virtualMachines","description":"used/hard"}"#,
    printcolumn = r#"{"name":"VCPUs","type":"string","jsonPath":".status.summary.vcpus","description":"used/hard"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.summary.memory","description":"used/hard"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","jsonPath":".status.summary.storage","description":"used/hard"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// The tenant this quota bounds (with all its descendants). Immutable.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "tenant is immutable; create another Quota"}
    ]))]
    pub tenant: String,
    /// The limits. A resource left out is not limited.
    #[serde(default)]
    pub hard: QuotaLimits,
}

/// Limits in VM units: counts and quantities, none negative.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.memory) || isQuantity(string(self.memory))",
     "message": "memory must be a Kubernetes quantity such as 64Gi", "fieldPath": ".memory"},
    {"rule": "!has(self.memory) || !isQuantity(string(self.memory)) || quantity(string(self.memory)).sign() >= 0",
     "message": "memory must not be negative", "fieldPath": ".memory"},
    {"rule": "!has(self.storage) || isQuantity(string(self.storage))",
     "message": "storage must be a Kubernetes quantity such as 1Ti", "fieldPath": ".storage"},
    {"rule": "!has(self.storage) || !isQuantity(string(self.storage)) || quantity(string(self.storage)).sign() >= 0",
     "message": "storage must not be negative", "fieldPath": ".storage"}
]))]
pub struct QuotaLimits {
    /// Most VMs, running or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub virtual_machines: Option<i64>,
    /// Most vCPUs over VMs that should be running (runStrategy other than Halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub vcpus: Option<i64>,
    /// Most memory over VMs that should be running (runStrategy other than Halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Most storage: the sum of disk sizes over all VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
}

/// What is in use, in VM units.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// VMs admitted.
    pub virtual_machines: i64,
    /// vCPUs of admitted VMs that should be running.
    pub vcpus: i64,
    /// Memory of admitted VMs that should be running.
    pub memory: Quantity,
    /// Disk sizes of admitted VMs.
    pub storage: Quantity,
}

/// Observed state of a quota, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// The limits in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<QuotaLimits>,
    /// What the tenant (with its descendants) uses, summed over admitted VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<Usage>,
    /// `used/hard` per resource, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<QuotaSummary>,
    /// Conditions: Ready, and Exceeded when usage is above a lowered limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `used/hard` per resource; `-` stands for "no limit".
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSummary {
    /// VMs used/hard.
    pub virtual_machines: String,
    /// vCPUs used/hard.
    pub vcpus: String,
    /// Memory used/hard.
    pub memory: String,
    /// Storage used/hard.
    pub storage: String,
}
