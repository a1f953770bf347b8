//! Watches on the Secrets of the namespaces whose VMs take cloud-init data from Secrets, so a
//! changed Secret is copied again at once.
//!
//! The operator holds no cluster-wide Secret read: it may list and watch Secrets only in the
//! namespaces a Tenant owns (a RoleBinding the tenant controller keeps there), so there is
//! one metadata-only watch per namespace that needs it, started when a VM there first
//! references a Secret and stopped when none does. A watch refused (no Tenant owns the
//! namespace) retries with backoff and costs nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// A Secret that was added or changed: `(namespace, name)`.
pub type Touched = (String, String);

/// The running watches, by namespace.
pub struct SecretWatches {
    client: Client,
    tx: mpsc::UnboundedSender<Touched>,
    running: Mutex<BTreeMap<String, AbortHandle>>,
}

impl SecretWatches {
    /// No watches yet; every touched Secret is sent to `tx`.
    pub fn new(client: Client, tx: mpsc::UnboundedSender<Touched>) -> Self {
        Self {
            client,
            tx,
            running: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AbortHandle>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watch the Secrets of `namespace`, unless already watched.
    pub fn ensure(&self, namespace: &str) {
        let mut running = self.lock();
        if running.contains_key(namespace) {
            return;
        }
        // A metadata-only watch: the values are read when a VM's copy is made.
        let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(self.client.clone(), namespace);
        let tx = self.tx.clone();
        let ns = namespace.to_owned();
        let task = tokio::spawn(async move {
            watcher(api, watcher::Config::default())
                .default_backoff()
                .touched_objects()
                .for_each(|r| {
                    match r {
                        Ok(meta) => {
                            let _ = tx.send((ns.clone(), meta.name_any()));
                        }
                        Err(e) => {
                            tracing::debug!(namespace = %ns, error = %e, "secret watch failed; it retries");
                        }
                    }
                    futures::future::ready(())
                })
                .await;
        });
        tracing::debug!(namespace, "watching Secrets for seed copies");
        running.insert(namespace.to_owned(), task.abort_handle());
    }

    /// Stop the watches of every namespace not in `keep`.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        self.lock().retain(|ns, task| {
            let kept = keep.contains(ns);
            if !kept {
                task.abort();
            }
            kept
        });
    }
}

impl Drop for SecretWatches {
    fn drop(&mut self) {
        for task in self.lock().values() {
            task.abort();
        }
    }
}
