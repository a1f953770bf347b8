//! The lock's writes: read the VM, decide, write `status.operation` with the VM's
//! resourceVersion as a precondition, retry on a lost race.

use ironvisor_crds::vm::{OperationKind, VirtualMachine, VmOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Acquired, Decision, Holder, decide, pending_reset, reset_goes_first};
use crate::error::Category;

/// The field manager of lock writes, apart from the operator's server-side-apply manager so
/// that the operator's status applies (which do not name `operation`) never release it.
pub const FIELD_MANAGER: &str = "ironvisor-operator-lock";

/// Attempts before a contended lock is reported instead of retried.
const ATTEMPTS: usize = 5;

/// Why the lock could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The VM could not be read or written.
    #[error("operation lock of VM {namespace}/{name}: {source}")]
    Api {
        /// The VM's namespace.
        namespace: String,
        /// The VM's name.
        name: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// Whether the current holder still exists could not be told: the lock is kept.
    #[error(
        "operation lock of VM {namespace}/{name}: cannot tell whether {holder} still exists \
         ({source}); the lock stays with it until the API answers"
    )]
    HolderUnknown {
        /// The VM's namespace.
        namespace: String,
        /// The VM's name.
        name: String,
        /// The current holder.
        holder: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// Every attempt lost a race with another writer of the VM.
    #[error(
        "operation lock of VM {namespace}/{name}: the VM changed under {ATTEMPTS} attempts in \
         a row; retried on the next pass"
    )]
    Contended {
        /// The VM's namespace.
        namespace: String,
        /// The VM's name.
        name: String,
    },
}

impl LockError {
    /// The metric category.
    pub fn category(&self) -> Category {
        match self {
            LockError::Api { source, .. } | LockError::HolderUnknown { source, .. } => {
                Category::of_kube(source)
            }
            LockError::Contended { .. } => Category::Conflict,
        }
    }
}

/// Takes the lock of VM `namespace/name` for `holder`, or reports the operation holding it.
pub async fn acquire(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &Holder,
    now: jiff::Timestamp,
) -> Result<Acquired, LockError> {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), namespace);
    let api_err = |source| LockError::Api {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let vm = vms.get(name).await.map_err(api_err)?;
        let current = vm.status.as_ref().and_then(|s| s.operation.clone());
        let alive = match &current {
            Some(op) if !holder.holds(op) => holder_alive(client, &vm, op).await?,
            _ => true,
        };
        let decision = decide(current.as_ref(), holder, alive);
        let outcome = match reset_goes_first(decision, holder, pending_reset(&vm, now)) {
            Decision::AlreadyHeld => return Ok(Acquired::Held),
            Decision::Busy(op) => return Ok(Acquired::Busy(op)),
            Decision::Take => Acquired::Held,
            Decision::TakeOver(op) => Acquired::TookOver(op),
        };
        let op = VmOperation {
            kind: holder.kind,
            name: holder.name.clone(),
            uid: holder.uid.clone(),
            since: Time(now),
        };
        match write(&vms, &vm, Some(&op)).await {
            Ok(()) => return Ok(outcome),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_err(e)),
        }
    }
    Err(LockError::Contended {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Gives back the lock of VM `namespace/name` if `holder` holds it. Returns whether it did
/// (false: the VM is gone, or the lock is free or someone else's — nothing to give back).
pub async fn release(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &Holder,
) -> Result<bool, LockError> {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), namespace);
    let api_err = |source| LockError::Api {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let vm = match vms.get(name).await {
            Ok(vm) => vm,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => return Err(api_err(e)),
        };
        let held = vm.status.as_ref().and_then(|s| s.operation.as_ref());
        if !held.is_some_and(|op| holder.holds(op)) {
            return Ok(false);
        }
        match write(&vms, &vm, None).await {
            Ok(()) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => return Err(api_err(e)),
        }
    }
    Err(LockError::Contended {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Writes (or clears) `status.operation`, on the condition that the VM is still the one read
/// (same uid and resourceVersion).
async fn write(
    vms: &Api<VirtualMachine>,
    vm: &VirtualMachine,
    op: Option<&VmOperation>,
) -> Result<(), kube::Error> {
    let body = json!({
        "metadata": {
            "uid": vm.metadata.uid,
            "resourceVersion": vm.metadata.resource_version,
        },
        "status": { "operation": op },
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    vms.patch_status(&vm.name_any(), &pp, &Patch::Merge(&body))
        .await
        .map(|_| ())
}

/// Whether the object recorded as holding `vm`'s lock still exists with the recorded uid.
/// Only a 404 (or another uid) says it does not; any other failure is an error, so a lock is
/// never taken over on a guess.
async fn holder_alive(
    client: &Client,
    vm: &VirtualMachine,
    op: &VmOperation,
) -> Result<bool, LockError> {
    let namespace = vm.namespace().unwrap_or_default();
    let Some((kind, plural)) = holder_resource(op.kind) else {
        // Resize and reset are held by the VM itself.
        return Ok(vm.metadata.uid.as_deref() == Some(op.uid.as_str()));
    };
    let ar = ApiResource {
        group: "ironvisor.io".into(),
        version: "v1alpha1".into(),
        api_version: "ironvisor.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &ar);
    match api.get_opt(&op.name).await {
        Ok(found) => Ok(found.is_some_and(|o| o.metadata.uid.as_deref() == Some(op.uid.as_str()))),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(source) => Err(LockError::HolderUnknown {
            namespace,
            name: vm.name_any(),
            holder: op.to_string(),
            source,
        }),
    }
}

/// The kind and plural of the object that drives an operation, when it is not the VM.
fn holder_resource(kind: OperationKind) -> Option<(&'static str, &'static str)> {
    let plural = kind.holder_plural()?;
    let kind = match kind {
        OperationKind::Migration => "VirtualMachineMigration",
        OperationKind::Snapshot => "VirtualMachineSnapshot",
        OperationKind::Restore => "VirtualMachineRestore",
        OperationKind::Backup => "VirtualMachineBackup",
        OperationKind::Resize | OperationKind::Reset => return None,
    };
    Some((kind, plural))
}
