//! Simulated hosts for the scale benchmark: a Hypervisor object with the status its agent
//! would write, a heartbeat Lease renewed every 10 s, and a reporter that plays the agent's
//! status write (phase Running) for each VM placed on a simulated host. No libvirt at all:
//! what is measured is the control plane and the API, not the hypervisor.

use crate::api;
use crate::tracker::PlacedVm;
use futures::StreamExt as _;
use ironvisor_crds::labels::agent_manager;
use ironvisor_crds::{Hypervisor, VirtualMachine};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

/// Name of the i-th simulated host.
pub fn host_name(i: usize) -> String {
    format!("sim-{i:03}")
}

async fn write_status(client: &Client, name: &str, vcpus: u32, memory: &str) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now().to_string();
    Api::<Hypervisor>::all(client.clone())
        .patch_status(
            name,
            &PatchParams::apply(&agent_manager(name)).force(),
            &Patch::Apply(api::host_status(name, vcpus, memory, &now)),
        )
        .await?;
    Ok(())
}

/// Create the hosts (object, status, lease) and keep them alive every 10 s until the
/// returned task is aborted.
pub async fn hosts(
    client: &Client,
    names: &[String],
    vcpus: u32,
    memory: &str,
) -> anyhow::Result<JoinHandle<()>> {
    let api: Api<Hypervisor> = Api::all(client.clone());
    for n in names {
        let hv: Hypervisor = serde_json::from_value(json!({"metadata": {"name": n}, "spec": {}}))?;
        api.create(&PostParams::default(), &hv).await?;
        write_status(client, n, vcpus, memory).await?;
        api::renew_lease(client, n).await?;
    }
    let client = client.clone();
    let names = names.to_vec();
    let memory = memory.to_owned();
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tick.tick().await;
            for n in &names {
                if let Err(e) = api::renew_lease(&client, n).await {
                    tracing::warn!(error = %e, "simulated heartbeat failed");
                }
                if let Err(e) = write_status(&client, n, vcpus, &memory).await {
                    tracing::warn!(error = %e, "simulated host status failed");
                }
            }
        }
    }))
}

/// Report Running for each placed VM whose node `is_simulated`, `inflight` writes at a time,
/// with the host's agent field manager. Counts the writes made.
pub fn reporter(
    client: &Client,
    placed: UnboundedReceiver<PlacedVm>,
    is_simulated: impl Fn(&str) -> bool + Send + 'static,
    inflight: usize,
) -> (JoinHandle<()>, Arc<AtomicU64>) {
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    let client = client.clone();
    let stream =
        tokio_stream(placed).filter(move |(_, _, node, _)| std::future::ready(is_simulated(node)));
    let task = tokio::spawn(async move {
        stream
            .map(|(ns, name, node, generation)| {
                let client = client.clone();
                let count = count.clone();
                async move {
                    let now = jiff::Timestamp::now().to_string();
                    let r = Api::<VirtualMachine>::namespaced(client, &ns)
                        .patch_status(
                            &name,
                            &PatchParams::apply(&agent_manager(&node)).force(),
                            &Patch::Apply(api::running_status(&now, generation)),
                        )
                        .await;
                    match r {
                        Ok(_) => {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!(error = %e, vm = name, "simulated status failed"),
                    }
                }
            })
            .buffer_unordered(inflight)
            .for_each(|()| std::future::ready(()))
            .await;
    });
    (task, written)
}

fn tokio_stream<T: Send + 'static>(
    mut rx: UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_host_names_sort_in_creation_order() {
        let names: Vec<String> = (0..100).map(host_name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(host_name(7), "sim-007");
    }
}
