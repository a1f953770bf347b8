//! Well-known label, annotation and finalizer names shared by every component.
//!
//! They are part of the API contract: agents select their VMs by [`NODE`], tenants are found
//! through [`TENANT`], and GitOps users may read all of them.
//!
//! The hand-off between the operator and the agents:
//! - The operator admits a VM (quota) and places it: in the status it writes `nodeName`,
//!   `vcpus`, `admitted` and the `Scheduled` condition (field manager [`OPERATOR_MANAGER`]),
//!   then copies `nodeName` into the [`NODE`] label. Until then it owns `phase` and
//!   `printableStatus` (Pending with a reason such as QuotaExceeded). The status is the
//!   truth; a label set or changed by anyone else is rewritten or removed.
//! - The agent of that node sees the VM through its label-selected watch; only once
//!   `status.nodeName` names its node and Scheduled is True does it add [`AGENT_FINALIZER`],
//!   and from then on it owns `phase`, `printableStatus`, the `Ready`
//!   condition, `observedGeneration`, `domainUUID`, `startedAt`, `interfaces` (field manager
//!   `ironvisor-agent/<node>`). When the host is lost the operator forces `phase: Unknown` and
//!   `Ready=False` (reason HostLost); the agent takes them back when it returns.
//! - Each agent renews the Lease `ironvisor-agent-<node>` in [`SYSTEM_NAMESPACE`] every 10 s
//!   and keeps the status of the Hypervisor named after its node.

/// Label the operator puts on a placed VirtualMachine: a copy of `status.nodeName`. Agents
/// watch `ironvisor.io/node=<their node>` only, so the API server does the filtering; they
/// act only on what the status places on their node, since anyone who may edit the VM may
/// set a label.
pub const NODE: &str = "ironvisor.io/node";

/// Label on a Namespace: the Tenant that owns it.
pub const TENANT: &str = "ironvisor.io/tenant";

/// Annotation the operator puts on a Namespace it created for a Tenant (value: the tenant's
/// name). Only such a namespace may be deleted with its tenant (per the tenant's
/// `namespaceDeletionPolicy`). Namespaces are cluster-scoped: a tenant's owners cannot edit it.
pub const NAMESPACE_CREATED_BY: &str = "ironvisor.io/created-by-tenant";

/// Annotation the operator puts on a Namespace that existed before a Tenant claimed it (value:
/// the tenant's name). Such a namespace is only ever released (label, annotation and the
/// owners' RoleBinding removed), never deleted.
pub const NAMESPACE_ADOPTED_BY: &str = "ironvisor.io/adopted-by-tenant";

/// Annotation that asks for a restart: set it to a fresh timestamp (as
/// `kubectl rollout restart` does); the agent restarts the guest once per new value.
pub const RESTART_REQUESTED_AT: &str = "ironvisor.io/restartedAt";

/// Annotation through which `ivctl start|stop` asks a `Manual` VM to run or stop:
/// `Running` or `Stopped`. Other run strategies ignore it (ivctl changes their runStrategy).
pub const REQUESTED_STATE: &str = "ironvisor.io/requestedState";

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
