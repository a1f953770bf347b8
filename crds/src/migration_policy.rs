//! `MigrationPolicy`: how live migrations run, cluster-wide and per VM (the shape of
//! KubeVirt's migration configuration and `MigrationPolicy`).
//!
//! The policy named [`CLUSTER_POLICY`] (`default`) holds the cluster-wide limits (parallel
//! migrations per cluster and outbound per host) and the defaults of every migration. Any
//! other policy selects VMs (by namespace and labels) and overrides the per-VM settings
//! (bandwidth, timeout, downtime, auto-converge, post-copy, compression) for them; among the
//! policies selecting a VM the most specific one wins (most labels, then namespaces named,
//! then name). A migration's own `bandwidthMibPerSecond` and `completionTimeoutSeconds`
//! override both. The operator writes what applied into the migration's `status.policy`, and
//! the source agent runs QEMU's job by it.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the policy holding the cluster-wide limits and defaults.
pub const CLUSTER_POLICY: &str = "default";
/// Parallel migrations in the cluster when no policy says (KubeVirt's default).
pub const DEFAULT_PARALLEL_PER_CLUSTER: u32 = 5;
/// Parallel outbound migrations per host when no policy says (KubeVirt's default).
pub const DEFAULT_PARALLEL_OUTBOUND_PER_HOST: u32 = 2;
/// Seconds a migration may take per GiB of memory and copied disk (KubeVirt's default).
pub const DEFAULT_COMPLETION_TIMEOUT_PER_GIB: u64 = 150;

/// How live migrations run: limits (on the `default` policy) and per-VM settings.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "MigrationPolicy",
    doc = "How live migrations run. The policy named `default` sets the cluster-wide limits and defaults; others select VMs and override the per-VM settings.",
    plural = "migrationpolicies",
    singular = "migrationpolicy",
    shortname = "mpol",
    category = "ironvisor",
    printcolumn = r#"{"name":"Bandwidth","type":"integer","jsonPath":".spec.bandwidthMibPerSecond","description":"MiB/s per migration"}"#,
    printcolumn = r#"{"name":"AutoConverge","type":"boolean","jsonPath":".spec.allowAutoConverge"}"#,
    printcolumn = r#"{"name":"PostCopy","type":"boolean","jsonPath":".spec.allowPostCopy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.selector) || (!has(self.parallelMigrationsPerCluster) && !has(self.parallelOutboundMigrationsPerHost))",
     "message": "the parallel limits are cluster-wide: set them on the policy named default, which selects no VMs"}
]))]
pub struct MigrationPolicySpec {
    /// The VMs this policy applies to; none: every VM (the `default` policy ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<PolicySelector>,
    /// Most migrations past `Pending` in the whole cluster at once (read from the `default`
    /// policy only); the rest wait in `Pending` with reason `ClusterLimit`. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallel_migrations_per_cluster: Option<u32>,
    /// Most migrations leaving one host at once (read from the `default` policy only); the
    /// rest wait in `Pending` with reason `HostLimit`. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub parallel_outbound_migrations_per_host: Option<u32>,
    /// Most bytes per second QEMU may send per migration, in MiB/s; none: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub bandwidth_mib_per_second: Option<u64>,
    /// Seconds a migration may take per GiB of the VM's memory and disks (at least one GiB
    /// is counted) before it is aborted and the VM stays on its source. Default 150.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub completion_timeout_per_gib_seconds: Option<u64>,
    /// Longest pause of the guest at the switch-over QEMU may plan for, milliseconds; none:
    /// QEMU's default (300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub max_downtime_milliseconds: Option<u64>,
    /// Let QEMU throttle the guest's vCPUs when memory is dirtied faster than it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_auto_converge: Option<bool>,
    /// Switch to post-copy (the guest runs on the target and fetches the pages still on the
    /// source) when the copy has not converged by half the completion timeout. Opt-in: a
    /// network failure during post-copy loses the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_post_copy: Option<bool>,
    /// Compress repeatedly sent pages (QEMU's XBZRLE cache): less data, more CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<bool>,
}

/// Which VMs a policy applies to; every part given must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySelector {
    /// Namespaces whose VMs it selects; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub namespaces: Vec<String>,
    /// Labels the VM must carry, all of them; empty: any VM.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// What applied to one migration: written by the operator into the migration's
/// `status.policy` when it leaves `Pending`, read by the source agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// The policies that contributed, the most specific last (`default` first when present).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Bandwidth cap, MiB/s; none: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib_per_second: Option<u64>,
    /// Abort (the VM stays on its source) when not completed after this many seconds.
    pub completion_timeout_seconds: u64,
    /// Longest planned pause at the switch-over, milliseconds; none: QEMU's default (300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downtime_milliseconds: Option<u64>,
    /// QEMU may throttle the guest's vCPUs to converge.
    #[serde(default)]
    pub auto_converge: bool,
    /// The agent switches to post-copy at half the timeout when the copy has not converged.
    #[serde(default)]
    pub post_copy: bool,
    /// XBZRLE compression of repeatedly sent pages.
    #[serde(default)]
    pub compression: bool,
}
