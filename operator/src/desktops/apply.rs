//! Carries out a pool's [`Step`]s: desktop VMs (create, label, start, stop, delete by uid),
//! their clean snapshots and their resets. Never touches a VM the pool does not own (the
//! caller passes only VMs whose controller ownerReference is the pool's uid).

use std::collections::BTreeMap;

use ironvisor_crds::desktop::{
    Assignment, BOUND_AT_ANNOTATION, CLAIM_LABEL, CLAIM_UID_ANNOTATION, DIRTY_ANNOTATION,
    DesktopPool, OWNER_ANNOTATION, POOL_LABEL,
};
use ironvisor_crds::restore::VirtualMachineRestore;
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use ironvisor_crds::vm::{RunStrategy, VirtualMachine};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::decide::Step;
use super::view::{clean_snapshot_name, reset_name};

/// Why a step failed (the pass is retried).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or failed a call.
    #[error("Kubernetes API call for desktop {vm} failed")]
    Kube {
        /// The desktop concerned ("" for a new one).
        vm: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
}

/// The pool's objects of one namespace, and who writes.
pub struct Target<'a> {
    /// API client.
    pub client: &'a Client,
    /// The pool.
    pub pool: &'a DesktopPool,
    /// Uids of the pool's desktops, by name (deletes are conditional on them).
    pub uids: &'a BTreeMap<String, String>,
}

fn owner(pool: &DesktopPool) -> OwnerReference {
    OwnerReference {
        api_version: DesktopPool::api_version(&()).into_owned(),
        kind: DesktopPool::kind(&()).into_owned(),
        name: pool.name_any(),
        uid: pool.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// A new desktop's name: the pool's (shortened so that the VM's host name fits) and a
/// random suffix.
pub fn new_name(pool: &str) -> String {
    let stem: String = pool.chars().take(50).collect();
    let stem = stem.trim_end_matches(['-', '.']);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{stem}-{}", &suffix[..5])
}

/// A new desktop VM of `pool`: the template, started, labelled and owned by the pool.
pub fn desktop_vm(pool: &DesktopPool, name: &str) -> VirtualMachine {
    let template = &pool.spec.template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(POOL_LABEL.into(), pool.name_any());
    let mut spec = template.spec.clone();
    spec.run_strategy = RunStrategy::Always;
    VirtualMachine {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: pool.namespace(),
            labels: Some(labels),
            annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
            owner_references: Some(vec![owner(pool)]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

fn kube_err(vm: &str) -> impl FnOnce(kube::Error) -> ApplyError + '_ {
    move |source| ApplyError::Kube {
        vm: vm.to_owned(),
        source,
    }
}

/// Whether an error is a 404 (already gone) or 409 (already exists).
fn benign(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

impl Target<'_> {
    fn ns(&self) -> String {
        self.pool.namespace().unwrap_or_default()
    }

    async fn patch_vm(&self, vm: &str, patch: Value) -> Result<(), ApplyError> {
        let api = Api::<VirtualMachine>::namespaced(self.client.clone(), &self.ns());
        match api
            .patch(vm, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(e) if !benign(&e) => Err(kube_err(vm)(e)),
            _ => Ok(()),
        }
    }

    fn run(strategy: RunStrategy) -> Value {
        json!({"spec": {"runStrategy": strategy}})
    }

    /// Carry out one step.
    pub async fn apply(&self, step: &Step) -> Result<(), ApplyError> {
        let ns = self.ns();
        let floating = self.pool.spec.assignment == Assignment::Floating;
        match step {
            Step::Create => {
                let vm = desktop_vm(self.pool, &new_name(&self.pool.name_any()));
                let api = Api::<VirtualMachine>::namespaced(self.client.clone(), &ns);
                api.create(&PostParams::default(), &vm)
                    .await
                    .map_err(kube_err(""))?;
            }
            Step::Bind {
                vm,
                claim,
                uid,
                user,
            } => {
                let mut ann = json!({
                    CLAIM_UID_ANNOTATION: uid,
                    BOUND_AT_ANNOTATION: jiff::Timestamp::now().to_string(),
                });
                if floating {
                    ann[DIRTY_ANNOTATION] = json!("true");
                } else {
                    ann[OWNER_ANNOTATION] = json!(user);
                }
                let patch =
                    json!({"metadata": {"labels": {CLAIM_LABEL: claim}, "annotations": ann}});
                self.patch_vm(vm, patch).await?;
            }
            Step::Unbind { vm, reset } => {
                let mut patch = json!({"metadata": {
                    "labels": {CLAIM_LABEL: null},
                    "annotations": {CLAIM_UID_ANNOTATION: null, BOUND_AT_ANNOTATION: null},
                }});
                if *reset {
                    patch["metadata"]["annotations"][DIRTY_ANNOTATION] = json!("true");
                    patch["spec"] = json!({"runStrategy": RunStrategy::Halted});
                }
                self.patch_vm(vm, patch).await?;
            }
            Step::Start(vm) => self.patch_vm(vm, Self::run(RunStrategy::Always)).await?,
            Step::Stop(vm) => self.patch_vm(vm, Self::run(RunStrategy::Halted)).await?,
            Step::Snapshot(vm) => self.snapshot(vm).await?,
            Step::Reset(vm) => self.reset(vm).await?,
            Step::FinishReset(vm) => {
                // The restore goes first: a leftover Succeeded restore must never make a
                // later reset look done.
                self.delete_restore(vm).await?;
                let patch = json!({"metadata": {"annotations": {DIRTY_ANNOTATION: null}}});
                self.patch_vm(vm, patch).await?;
            }
            Step::RetryReset(vm) => self.delete_restore(vm).await?,
            Step::Delete(vm) => self.delete(vm).await?,
        }
        Ok(())
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(POOL_LABEL.to_owned(), self.pool.name_any())])
    }

    async fn snapshot(&self, vm: &str) -> Result<(), ApplyError> {
        let snap: VirtualMachineSnapshot = serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": clean_snapshot_name(vm), "namespace": self.ns(), "labels": self.labels()},
            "spec": {"vmName": vm, "retainPolicy": "Delete"},
        }))
        .expect("a snapshot from a literal");
        let api = Api::<VirtualMachineSnapshot>::namespaced(self.client.clone(), &self.ns());
        match api.create(&PostParams::default(), &snap).await {
            Err(e) if !benign(&e) => Err(kube_err(vm)(e)),
            _ => Ok(()),
        }
    }

    async fn reset(&self, vm: &str) -> Result<(), ApplyError> {
        let restore: VirtualMachineRestore = serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineRestore",
            "metadata": {"name": reset_name(vm), "namespace": self.ns(), "labels": self.labels()},
            "spec": {"vmName": vm, "snapshotName": clean_snapshot_name(vm), "stopVM": true},
        }))
        .expect("a restore from a literal");
        let api = Api::<VirtualMachineRestore>::namespaced(self.client.clone(), &self.ns());
        match api.create(&PostParams::default(), &restore).await {
            Err(e) if !benign(&e) => Err(kube_err(vm)(e)),
            _ => Ok(()),
        }
    }

    async fn delete_restore(&self, vm: &str) -> Result<(), ApplyError> {
        let api = Api::<VirtualMachineRestore>::namespaced(self.client.clone(), &self.ns());
        match api.delete(&reset_name(vm), &DeleteParams::default()).await {
            Err(e) if !benign(&e) => Err(kube_err(vm)(e)),
            _ => Ok(()),
        }
    }

    /// Delete a desktop, only if it is still the VM (by uid) the pool decided about.
    async fn delete(&self, vm: &str) -> Result<(), ApplyError> {
        let Some(uid) = self.uids.get(vm) else {
            return Ok(());
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let api = Api::<VirtualMachine>::namespaced(self.client.clone(), &self.ns());
        match api.delete(vm, &dp).await {
            Err(e) if !benign(&e) => Err(kube_err(vm)(e)),
            _ => Ok(()),
        }
    }
}
