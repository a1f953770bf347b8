//! A deleted snapshot or VM that must stay (linked clones read its layer) keeps the agent's
//! finalizer: cleanup returns an error (`Error::Stays`, `Error::BaseInUse`), which kube's
//! finalizer helper never takes as done, and the error policies requeue it soon as a wait,
//! not a failure. An `Ok` from cleanup lets the object go — which is what the old code, which
//! returned `Ok(Action::requeue(..))` to wait, did by mistake. Devcluster in-process.

mod common;

use common::cluster::{Cluster, create_namespace};
use ironvisor_agent::reconcile::controller::{Error as VmError, base_in_use_recheck};
use ironvisor_agent::snapshot::controller::{Error as SnapError, stays};
use ironvisor_crds::labels::AGENT_FINALIZER;
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use ironvisor_crds::vm::VirtualMachine;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};
use kube::{Api, Resource};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "it-stays";

/// Create `obj` with the agent's finalizer, delete it, and return it as the agent then sees
/// it (deletion timestamp set, finalizer there).
async fn deleted<K>(api: &Api<K>, mut obj: K) -> Arc<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + Debug,
{
    obj.meta_mut().finalizers = Some(vec![AGENT_FINALIZER.to_owned()]);
    let made = api.create(&PostParams::default(), &obj).await.unwrap();
    let name = made.meta().name.clone().unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let now = api.get(&name).await.unwrap();
    assert!(now.meta().deletion_timestamp.is_some());
    Arc::new(now)
}

fn keeps_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == AGENT_FINALIZER))
}

fn snapshot(name: &str) -> VirtualMachineSnapshot {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"vmName": "v"},
    }))
    .unwrap()
}

fn vm(name: &str) -> VirtualMachine {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"memory": {"size": "64Mi"}},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_deleted_snapshot_that_stays_keeps_its_finalizer_and_is_rechecked_soon() {
    let c = Cluster::without_agent("stays-snap").await;
    create_namespace(&c.client, NS).await;
    let api = Api::<VirtualMachineSnapshot>::namespaced(c.client.clone(), NS);

    let snap = deleted(&api, snapshot("kept")).await;
    let r = finalizer(&api, AGENT_FINALIZER, snap, |ev| async move {
        match ev {
            Event::Cleanup(_) => Err(SnapError::Stays("linked clones read its layer")),
            Event::Apply(_) => Ok(Action::await_change()),
        }
    })
    .await;
    let err = SnapError::Finalizer(Box::new(r.unwrap_err()));
    assert_eq!(
        stays(&err),
        Some(("linked clones read its layer", Duration::from_secs(5)))
    );
    assert!(keeps_finalizer(&api.get("kept").await.unwrap()));

    // Any other cleanup failure is a failure (warned, backed off), not a wait.
    let io = SnapError::Finalizer(Box::new(FinalizerError::CleanupFailed(SnapError::Io(
        std::io::Error::other("disk full"),
    ))));
    assert_eq!(stays(&io), None);
    assert_eq!(stays(&SnapError::Stays("not through the finalizer")), None);

    // An Ok from cleanup lets the snapshot go: never the way to wait.
    let snap = Arc::new(api.get("kept").await.unwrap());
    finalizer(&api, AGENT_FINALIZER, snap, |_| async {
        Ok::<_, SnapError>(Action::requeue(Duration::from_secs(5)))
    })
    .await
    .unwrap();
    assert!(api.get_opt("kept").await.unwrap().is_none());
    c.stop().await;
}

#[tokio::test]
async fn a_deleted_vm_whose_disks_clones_read_keeps_its_finalizer_and_is_rechecked_soon() {
    let c = Cluster::without_agent("stays-vm").await;
    create_namespace(&c.client, NS).await;
    let api = Api::<VirtualMachine>::namespaced(c.client.clone(), NS);

    let tpl = deleted(&api, vm("tpl")).await;
    let r = finalizer(&api, AGENT_FINALIZER, tpl, |ev| async move {
        match ev {
            Event::Cleanup(_) => Err(VmError::BaseInUse),
            Event::Apply(_) => Ok(Action::await_change()),
        }
    })
    .await;
    let err = VmError::Finalizer(Box::new(r.unwrap_err()));
    assert_eq!(base_in_use_recheck(&err), Some(Duration::from_secs(5)));
    assert!(keeps_finalizer(&api.get("tpl").await.unwrap()));

    let other = VmError::Finalizer(Box::new(FinalizerError::CleanupFailed(VmError::Identity(
        "uid",
    ))));
    assert_eq!(base_in_use_recheck(&other), None);
    assert_eq!(base_in_use_recheck(&VmError::BaseInUse), None);

    let tpl = Arc::new(api.get("tpl").await.unwrap());
    finalizer(&api, AGENT_FINALIZER, tpl, |_| async {
        Ok::<_, VmError>(Action::await_change())
    })
    .await
    .unwrap();
    assert!(api.get_opt("tpl").await.unwrap().is_none());
    c.stop().await;
}
