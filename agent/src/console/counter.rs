//! `VirtualMachine.status.console`: the connections this agent bridges, written by one task
//! under a field manager of its own, so the reconciler (which leaves the field out of its
//! status) never races it. Desktop pools read it to find idle desktops.
//!
//! Connections live in this process only: at start the task sets the count of every VM of
//! this host that still shows open connections (from before a restart) back to zero.

use super::request::Target;
use ironvisor_crds::console::ConsoleStatus;
use ironvisor_crds::labels;
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// The field manager of the console count on `node`.
pub fn field_manager(node: &str) -> String {
    format!("ironvisor-agent-console/{node}")
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    namespace: String,
    name: String,
    uid: String,
}

enum Event {
    Opened(Key),
    Closed(Key),
}

/// Counts connections; cheap to clone.
#[derive(Clone)]
pub struct Counter {
    tx: mpsc::UnboundedSender<Event>,
}

/// One open connection; dropping it counts the connection closed.
pub struct Open {
    tx: mpsc::UnboundedSender<Event>,
    key: Option<Key>,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = self.tx.send(Event::Closed(key));
        }
    }
}

impl Counter {
    /// Start the writer task for `node`.
    pub fn start(client: Client, node: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Writer::new(client, node).run(rx));
        Self { tx }
    }

    /// Count a connection to `t` open until the returned value is dropped.
    pub fn open(&self, t: &Target) -> Open {
        let key = Key {
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            uid: t.uid.clone(),
        };
        let _ = self.tx.send(Event::Opened(key.clone()));
        Open {
            tx: self.tx.clone(),
            key: Some(key),
        }
    }
}

struct Writer {
    client: Client,
    node: String,
    /// What each VM's status should say.
    wanted: BTreeMap<Key, ConsoleStatus>,
    /// VMs whose status is not written yet.
    dirty: BTreeSet<Key>,
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

impl Writer {
    fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            wanted: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        self.reset_stale().await;
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.apply(ev).await,
                    None => return,
                },
                _ = retry.tick() => {}
            }
            // Events that arrived meanwhile are folded in before writing.
            while let Ok(ev) = rx.try_recv() {
                self.apply(ev).await;
            }
            self.flush().await;
        }
    }

    async fn apply(&mut self, ev: Event) {
        let (key, opened) = match ev {
            Event::Opened(k) => (k, true),
            Event::Closed(k) => (k, false),
        };
        if !self.wanted.contains_key(&key) {
            let prev = self.current(&key).await.unwrap_or_default();
            // Connections of this process only: any count left from before is stale.
            let start = ConsoleStatus {
                active_connections: 0,
                ..prev
            };
            self.wanted.insert(key.clone(), start);
        }
        let s = self.wanted.get_mut(&key).expect("inserted above");
        if opened {
            s.active_connections += 1;
            s.last_connected_time = Some(now());
        } else {
            s.active_connections = s.active_connections.saturating_sub(1);
            s.last_disconnected_time = Some(now());
        }
        self.dirty.insert(key);
    }

    /// The VM's console status as the API has it (None: the VM is gone or replaced).
    async fn current(&self, key: &Key) -> Option<ConsoleStatus> {
        let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), &key.namespace);
        let vm = api.get_opt(&key.name).await.ok()??;
        (vm.uid().as_deref() == Some(key.uid.as_str()))
            .then(|| vm.status.and_then(|s| s.console).unwrap_or_default())
    }

    async fn flush(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(status) = self.wanted.get(&key).cloned() else {
                continue;
            };
            match self.write(&key, &status).await {
                Ok(()) => {
                    if status.active_connections == 0 {
                        // Nothing to remember: the API has it.
                        self.wanted.remove(&key);
                    }
                }
                Err(e) => {
                    tracing::warn!(vm = %format!("{}/{}", key.namespace, key.name),
                        error = %e, "cannot write the console count; retrying");
                    self.dirty.insert(key);
                }
            }
        }
    }

    async fn write(&self, key: &Key, status: &ConsoleStatus) -> Result<(), kube::Error> {
        let api: Api<VirtualMachine> = Api::namespaced(self.client.clone(), &key.namespace);
        // Only the VM with that uid: a VM deleted and created again under the same name
        // starts from no connections.
        let Some(vm) = api.get_opt(&key.name).await? else {
            return Ok(());
        };
        if vm.uid().as_deref() != Some(key.uid.as_str()) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "status": {"console": status},
        });
        let params = PatchParams::apply(&field_manager(&self.node)).force();
        api.patch_status(&key.name, &params, &Patch::Apply(&patch))
            .await?;
        Ok(())
    }

    /// Set VMs of this host that still count connections (from before a restart) to zero.
    async fn reset_stale(&mut self) {
        let api: Api<VirtualMachine> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{}={}", labels::NODE, self.node));
        let vms = match api.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list VMs to reset stale console counts");
                return;
            }
        };
        for vm in vms {
            let Some(prev) = vm.status.as_ref().and_then(|s| s.console.clone()) else {
                continue;
            };
            if prev.active_connections == 0 {
                continue;
            }
            let (Some(namespace), Some(uid)) = (vm.namespace(), vm.uid()) else {
                continue;
            };
            let key = Key {
                namespace,
                name: vm.name_any(),
                uid,
            };
            let status = ConsoleStatus {
                active_connections: 0,
                last_disconnected_time: Some(now()),
                ..prev
            };
            self.wanted.insert(key.clone(), status);
            self.dirty.insert(key);
        }
        self.flush().await;
    }
}
