//! Ironvisor's public API: the `ironvisor.io/v1alpha1` custom resources.
//!
//! This crate owns the API types and nothing else: no client, no libvirt, no I/O beyond
//! rendering the CRD YAML. The agent, the operator, the CLI and the tests all build on it,
//! and `manifests/crds/` is generated from it by the `crdgen` binary.
//!
//! Validation lives in the schema wherever the API server can enforce it at apply time
//! (OpenAPI types, enums, patterns and CEL `x-kubernetes-validations`), so bad input is
//! rejected by `kubectl apply` with the field named, before any controller sees it.
#![forbid(unsafe_code)]

pub mod backup;
pub mod common;
pub mod console;
pub mod crdgen;
pub mod desktop;
pub mod hypervisor;
pub mod labels;
pub mod load;
pub mod maintenance;
pub mod migration;
pub mod migration_policy;
pub mod pricing;
pub mod quantity;
pub mod quota;
pub mod rebalance;
pub mod restore;
pub mod schedule;
pub mod seed;
pub mod snapshot;
pub mod tenant;
pub mod usage;
pub mod utilization;
pub mod vm;

pub use backup::{
    BackupLocation, BackupLocationSpec, VirtualMachineBackup, VirtualMachineBackupSpec,
};
pub use desktop::{DesktopClaim, DesktopClaimSpec, DesktopPool, DesktopPoolSpec};
pub use hypervisor::{Hypervisor, HypervisorSpec, HypervisorStatus};
pub use migration::{
    VirtualMachineMigration, VirtualMachineMigrationSpec, VirtualMachineMigrationStatus,
};
pub use migration_policy::{MigrationPolicy, MigrationPolicySpec};
pub use pricing::{PriceList, PriceListSpec};
pub use quota::{Quota, QuotaSpec, QuotaStatus};
pub use rebalance::{RebalancePolicy, RebalancePolicySpec, RebalancePolicyStatus};
pub use restore::{VirtualMachineRestore, VirtualMachineRestoreSpec};
pub use schedule::{VirtualMachineSchedule, VirtualMachineScheduleSpec};
pub use snapshot::{VirtualMachineSnapshot, VirtualMachineSnapshotSpec};
pub use tenant::{Tenant, TenantSpec, TenantStatus};
pub use usage::{UsageReport, UsageReportSpec, UsageReportStatus};
pub use vm::{VirtualMachine, VirtualMachineSpec, VirtualMachineStatus};

/// The API group of every Ironvisor resource.
pub const GROUP: &str = "ironvisor.io";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";

/// What every Ironvisor binary prints for `--version`: the release and the commit it was
/// built from (`IRONVISOR_COMMIT` at build time, which `hack/release.sh` sets; `unknown`
/// in builds without it).
pub const BUILD_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("IRONVISOR_COMMIT"),
    ")"
);
