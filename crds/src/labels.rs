//! Well-known label, annotation and finalizer names shared by every component.
//!
//! They are part of the API contract: agents select their VMs by [`NODE`], tenants are found
//! through [`TENANT`], and GitOps users may read all of them.

/// Label the operator puts on a placed VirtualMachine: the host it runs on. Agents watch
/// `ironvisor.io/node=<their node>` only, so the API server does the filtering.
pub const NODE: &str = "ironvisor.io/node";

/// Label on a Namespace: the Tenant that owns it.
pub const TENANT: &str = "ironvisor.io/tenant";

/// Annotation that asks for a restart: set it to a fresh timestamp (as
/// `kubectl rollout restart` does); the agent restarts the guest once per new value.
pub const RESTART_REQUESTED_AT: &str = "ironvisor.io/restartedAt";

/// Finalizer the agent keeps on a placed VM until its domain, disks and seed are gone.
pub const AGENT_FINALIZER: &str = "ironvisor.io/agent";

/// Finalizer the operator keeps on a VM until its quota reservation is released.
pub const OPERATOR_FINALIZER: &str = "ironvisor.io/operator";

/// Finalizer the operator keeps on a Tenant until its namespaces are released.
pub const TENANT_FINALIZER: &str = "ironvisor.io/tenant";

/// Namespace where the control plane lives (heartbeat Leases, leader election).
pub const SYSTEM_NAMESPACE: &str = "ironvisor-system";

/// Name prefix of the per-host heartbeat Lease in [`SYSTEM_NAMESPACE`].
pub const HEARTBEAT_LEASE_PREFIX: &str = "ironvisor-agent-";

/// Field manager of the operator for server-side apply.
pub const OPERATOR_MANAGER: &str = "ironvisor-operator";

/// Field manager of an agent for server-side apply: `ironvisor-agent/<node>`.
pub fn agent_manager(node: &str) -> String {
    format!("ironvisor-agent/{node}")
}
