//! The scheduler's writes to VMs: each decision as one status apply, then the label copy;
//! and settling writes whose outcome is unknown. Owns the order that keeps quota safe: room a
//! write takes is recorded in the index before the write, room it frees only after.

use ironvisor_crds::VirtualMachine;
use ironvisor_crds::labels;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};

use super::{Scheduler, WriteError};
use crate::controllers::patches;
use crate::index::{Index, VmKey};
use crate::plan::{LabelWrite, VmWrite};

impl Scheduler {
    pub(super) async fn write_vm(&self, index: &mut Index, w: &VmWrite) -> Result<(), WriteError> {
        if !self.leadership.is_leader() {
            return Err(WriteError::NotLeader);
        }
        let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), &w.key.namespace);
        let pp = PatchParams::apply(labels::OPERATOR_MANAGER).force();
        // Record a decision that takes room *before* the write that makes it durable, and one
        // that frees room only after: if the outcome is unknown, the index errs on counting.
        if w.reserves {
            if let Some(a) = &w.assume {
                index.assume(w.key.clone(), a.clone());
            }
            if let Some(a) = &w.status.admitted {
                index.raise_admitted(&w.key, *a);
            }
        }
        let first = w.status.node_name.is_some()
            && index.vm(&w.key).is_some_and(|v| v.status_node.is_none());
        let body = Patch::Apply(patches::vm_status(&w.key, &w.status));
        let vm = match api.patch_status(&w.key.name, &pp, &body).await {
            Ok(vm) => vm,
            Err(e) => {
                if w.reserves {
                    self.settle(index, &api, &w.key).await;
                }
                return Err(e.into());
            }
        };
        index.record_write(&vm);
        if let Some(a) = w.assume.as_ref().filter(|_| !w.reserves) {
            index.assume(w.key.clone(), a.clone());
        }
        if let Some(created) = index.vm(&w.key).filter(|_| first).map(|v| v.created) {
            let secs = jiff::Timestamp::now().duration_since(created).as_secs_f64();
            self.metrics.scheduling_latency.observe(secs.max(0.0));
        }
        if let Some(a) = &w.announce {
            self.metrics.decision(a.reason);
            let ev = KubeEvent {
                type_: if a.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: a.reason.into(),
                note: Some(a.note.clone()),
                action: "Schedule".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &vm.object_ref(&())).await {
                tracing::debug!(error = %e, "event not recorded");
            }
        }
        Ok(())
    }

    /// Make the `ironvisor.io/node` label copy match the placement in the status (written
    /// before, in this pass or an earlier one). Never a decision: a failure only delays the
    /// agent's watch seeing the VM, and the next pass copies again.
    pub(super) async fn write_label(
        &self,
        index: &mut Index,
        w: &LabelWrite,
    ) -> Result<(), WriteError> {
        if !self.leadership.is_leader() {
            return Err(WriteError::NotLeader);
        }
        let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), &w.key.namespace);
        let pp = PatchParams {
            field_manager: Some(labels::OPERATOR_MANAGER.into()),
            ..PatchParams::default()
        };
        let vm = api
            .patch(&w.key.name, &pp, &Patch::Merge(patches::vm_label(w)))
            .await?;
        index.record_write(&vm);
        match &w.node {
            Some(node) => tracing::debug!(vm = %w.key, node, "node label copied from the status"),
            None => tracing::info!(vm = %w.key, "node label without a placement removed"),
        }
        Ok(())
    }

    /// An assumption whose write failed or was never confirmed: read the VM back. If the API
    /// shows the assumed placement, keep it (the watch will confirm it); if it shows something
    /// else, the write did not land: forget it. If even the read fails, keep it — counting a
    /// placement that did not happen wastes room for a while, not counting one that did could
    /// overfill a quota. The object read is never put into the index (a lagging watch event
    /// could then move it backwards).
    async fn settle(&self, index: &mut Index, api: &Api<VirtualMachine>, key: &VmKey) {
        let Some(assumed) = index.assumed(key).cloned() else {
            return;
        };
        match api.get_opt(&key.name).await {
            Ok(Some(vm)) => {
                let seen = crate::index::VmEntry::from_vm(&vm);
                let shows = seen.status_node.as_deref() == Some(assumed.node.as_str())
                    && seen.observed_compute_reserved() == assumed.compute;
                if !shows {
                    index.forget(key);
                }
            }
            Ok(None) => index.delete_vm(key),
            Err(e) => tracing::debug!(error = %e, vm = %key, "cannot settle an assumption yet"),
        }
    }

    /// At every resync: settle every assumption the watch has not confirmed (a write whose
    /// outcome was unknown, or a watch that missed it).
    pub(super) async fn settle_all(&self, index: &mut Index) {
        index.release_writes();
        for key in index.assumed_keys() {
            let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), &key.namespace);
            self.settle(index, &api, &key).await;
        }
    }
}
