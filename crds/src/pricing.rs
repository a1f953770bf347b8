//! `PriceList`: what usage costs (showback and chargeback), and each tenant's monthly budget.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name of the PriceList the operator prices usage with.
pub const PRICE_LIST: &str = "default";

/// Hours in a billing month for storage rates per GiB-month (365 × 24 / 12).
pub const HOURS_PER_MONTH: i64 = 730;

/// Rates in one currency, each effective from its own time, and tenants' budgets. The
/// operator uses the PriceList named `default`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "PriceList",
    doc = "What VM usage costs: rates per vCPU-hour, memory GiB-hour and storage GiB-month, each effective from its time and optionally per host class, plus monthly budgets per tenant. The operator uses the PriceList named `default`.",
    plural = "pricelists",
    singular = "pricelist",
    shortname = "prices",
    category = "ironvisor",
    printcolumn = r#"{"name":"Currency","type":"string","jsonPath":".spec.currency"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PriceListSpec {
    /// ISO 4217 currency code of every rate and budget (e.g. EUR).
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Hypervisor label whose value is a host's class (e.g. `ironvisor.io/host-class`);
    /// rates with a `hostClass` apply to hosts with that value. Absent: one class for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub host_class_label: Option<String>,
    /// The rates. For each second of usage the rate with the latest `effectiveFrom` not
    /// after it applies, one for the host's class before one without a class.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub rates: Vec<Rate>,
    /// Monthly budgets per tenant (for the tenant with its descendants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub budgets: Vec<Budget>,
}

/// Rates from a point in time on, as decimal strings (up to 9 decimals).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// From when the rate applies (it never applies to usage before).
    pub effective_from: Time,
    /// The host class it applies to; absent: hosts of any class without a rate of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub host_class: Option<String>,
    /// Per vCPU-hour of a running VM.
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub vcpu_hour: String,
    /// Per GiB-hour of memory of a running VM.
    #[serde(rename = "memoryGiBHour")]
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub memory_gib_hour: String,
    /// Per GiB-month (730 hours) of storage, running or not.
    #[serde(rename = "storageGiBMonth")]
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub storage_gib_month: String,
}

/// A tenant's monthly budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The tenant (its total includes its descendants).
    #[schemars(length(min = 1, max = 253))]
    pub tenant: String,
    /// The amount per UTC month, in the price list's currency.
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub monthly: String,
}
