//! `RebalancePolicy`: whether and how the operator evens out the hosts' real load (DRS) by
//! live-migrating VMs. Cluster-scoped; the operator reads the one named `default` and
//! writes its status (the last evaluation, the recommendations, the moves it made).
//!
//! Off by default: without the object, or with `mode: Off`, nothing is evaluated.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name of the RebalancePolicy the operator follows.
pub const REBALANCE_POLICY: &str = "default";
/// Label on a VirtualMachineMigration the rebalancer created (value `rebalancer`).
pub const MADE_BY_LABEL: &str = "ironvisor.io/made-by";
/// The value of [`MADE_BY_LABEL`] on the rebalancer's migrations.
pub const MADE_BY_REBALANCER: &str = "rebalancer";
/// Annotation on a rebalancer's migration: why it was made (the explanation of the move).
pub const REASON_ANNOTATION: &str = "ironvisor.io/rebalance-reason";
/// Annotation on a VirtualMachine: `"false"` keeps the rebalancer from ever moving it.
pub const OPT_OUT_ANNOTATION: &str = "ironvisor.io/rebalance";

/// How the cluster is rebalanced. The operator follows the one named `default`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "RebalancePolicy",
    doc = "Rebalancing (DRS) of the hosts' real load by live migration. The operator follows the one named `default`: Off (the default) evaluates nothing, DryRun only recommends moves (status and Events), Automatic migrates VMs within the hourly budget.",
    plural = "rebalancepolicies",
    singular = "rebalancepolicy",
    shortname = "rebal",
    category = "ironvisor",
    status = "RebalancePolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Imbalance","type":"integer","jsonPath":".status.imbalancePercent","description":"Spread of the hosts' weighted load, percentage points"}"#,
    printcolumn = r#"{"name":"Threshold","type":"integer","jsonPath":".spec.thresholdPercent"}"#,
    printcolumn = r#"{"name":"Moves/h","type":"integer","jsonPath":".status.movesInLastHour","description":"Moves made in the last hour"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RebalancePolicySpec {
    /// Off (nothing evaluated), DryRun (moves recommended in the status and Events, none
    /// made) or Automatic (moves made as live migrations).
    #[serde(default)]
    pub mode: RebalanceMode,
    /// Rebalance only when the busiest and the least busy host differ by more than this
    /// many percentage points of weighted load.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub threshold_percent: u32,
    /// A move must cut the spread by at least this many percentage points (a move that only
    /// swaps which host is hot is never made).
    #[serde(default = "default_min_improvement")]
    #[schemars(range(min = 1, max = 100))]
    pub min_improvement_percent: u32,
    /// How much each measured metric counts in a host's load.
    #[serde(default)]
    pub weights: Weights,
    /// Most moves per rolling hour (the migration budget).
    #[serde(default = "default_moves_per_hour")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_moves_per_hour: u32,
    /// No VM is moved again within this many seconds of its last migration (of any kind).
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 604800))]
    pub cooldown_seconds: u64,
    /// Evaluate the cluster every this many seconds.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 5, max = 86400))]
    pub interval_seconds: u64,
}

fn default_threshold() -> u32 {
    20
}
fn default_min_improvement() -> u32 {
    5
}
fn default_moves_per_hour() -> u32 {
    4
}
fn default_cooldown() -> u64 {
    3600
}
fn default_interval() -> u64 {
    60
}

/// What the rebalancer does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebalanceMode {
    /// Nothing is evaluated.
    #[default]
    Off,
    /// Moves are recommended (status, Events), never made.
    DryRun,
    /// Moves are made as live migrations.
    Automatic,
}

impl RebalanceMode {
    /// The mode as the API spells it (also a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            RebalanceMode::Off => "Off",
            RebalanceMode::DryRun => "DryRun",
            RebalanceMode::Automatic => "Automatic",
        }
    }
}

/// Weights of the measured metrics in a host's load (0 leaves a metric out).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.cpu + self.memory > 0.0", "message": "at least one weight must be above zero"}
]))]
pub struct Weights {
    /// CPU: the CPU time the host's domains used over the last interval, per host CPU.
    #[serde(default = "default_cpu_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub cpu: f64,
    /// Memory: the memory the host's domains hold, per byte of host memory.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub memory: f64,
}

fn default_cpu_weight() -> f64 {
    1.0
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            cpu: default_cpu_weight(),
            memory: 0.0,
        }
    }
}

/// What the rebalancer saw and did at its last evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalancePolicyStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the cluster was last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,
    /// Busiest minus least busy host's weighted load, percentage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imbalance_percent: Option<u32>,
    /// What the evaluation concluded, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The hosts' weighted load as evaluated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostLoadSummary>,
    /// The moves the last evaluation chose (made in Automatic mode, only recommended in
    /// DryRun).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<Recommendation>,
    /// Moves made in the last hour (counted against `maxMovesPerHour`).
    #[serde(default)]
    pub moves_in_last_hour: u32,
    /// The moves made in the last hour and in the VMs' cool-down, newest last: the budget
    /// and cool-downs survive an operator restart even if the migrations are deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_moves: Vec<RecentMove>,
}

/// One host's load as the rebalancer weighed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostLoadSummary {
    /// The host.
    pub name: String,
    /// CPU used by its domains, percent of the host's CPUs.
    pub cpu_percent: u32,
    /// Memory held by its domains, percent of the host's memory.
    pub memory_percent: u32,
    /// The weighted load, percent.
    pub load_percent: u32,
}

/// A move the rebalancer chose.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM.
    pub vm: String,
    /// The host it runs on.
    pub from: String,
    /// The host it should move to.
    pub to: String,
    /// Why: which metric, which host, why this VM, the expected effect.
    pub reason: String,
    /// The migration made for it (Automatic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
}

/// A move the rebalancer made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentMove {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM.
    pub vm: String,
    /// The migration made for it.
    pub migration: String,
    /// When the migration was created.
    pub time: Time,
}
