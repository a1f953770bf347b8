//! Waiting for an object to reach a state through one API watch. Polling with `kubectl get`
//! starts a process on every poll (tens of milliseconds of CPU each); on a 2-core machine a
//! poll every 50 ms takes CPU from the very thing a benchmark times, and only on the side
//! that is polled.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A client and the runtime that drives it, for the benchmarks' synchronous code.
pub struct ApiWait {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl ApiWait {
    /// Connect with the kubeconfig at `path`.
    pub fn connect(path: &Path) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(crate::api::client(path))?;
        Ok(ApiWait { rt, client })
    }

    /// The namespaced objects of kind `K` in `namespace`.
    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The cluster-scoped objects of kind `K`.
    pub fn all<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::ClusterResourceScope>,
        K::DynamicType: Default,
    {
        Api::all(self.client.clone())
    }

    /// Block until the object `name` exists and `done` holds for it (as JSON); return it.
    pub fn until<K>(
        &self,
        api: Api<K>,
        name: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool + Send + 'static,
    ) -> anyhow::Result<Value>
    where
        K: Resource + DeserializeOwned + serde::Serialize + Clone + Debug + Send + 'static,
    {
        let cond = move |o: Option<&K>| {
            o.and_then(|o| serde_json::to_value(o).ok())
                .is_some_and(|v| done(&v))
        };
        let found = self.rt.block_on(async {
            tokio::time::timeout(timeout, await_condition(api, name, cond)).await
        });
        let obj = found
            .map_err(|_| anyhow::anyhow!("{name} did not reach the state within {timeout:?}"))??
            .ok_or_else(|| anyhow::anyhow!("{name} is gone"))?;
        Ok(serde_json::to_value(obj)?)
    }
}
