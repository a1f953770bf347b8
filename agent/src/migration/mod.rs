//! Live migration, the agents' half: the target agent prepares the VM's directory, disks and seed
//! and says where to send the guest ([`target`]); the source agent drives QEMU's copy through
//! libvirt, peer to peer, reports its progress and aborts it on cancel ([`source`]).
//!
//! The operator decides (lock, target, phase, moving the VM's node); agents only act on
//! `VirtualMachineMigration`s labelled with their node, and write their own part of the
//! status (`target` or `source`). While a migration holds the VM's lock, the VM controller
//! of both agents leaves the VM alone, so the target never treats the incoming domain as a
//! leftover and the source never restarts a guest that has just left.
//!
//! Never deleted here before the API confirms it: the source's VM directory goes only once
//! the VM (by uid) is placed on the target and reported running there.

pub mod cold;
mod converge;
pub mod ops;
mod source;
mod target;
pub mod xml;

use crate::reconcile::controller::Context;
use futures::{FutureExt, StreamExt};
use ironvisor_crds::migration::VirtualMachineMigration;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How often the agent looks at the migrations of its host with no change seen (the
/// cleanups wait for VM changes, which the migration watch does not show).
const RESYNC: Duration = Duration::from_secs(10);
/// Least time between two passes: a burst of changes (progress reports) makes one pass,
/// while the first change after a quiet spell is acted on at once (each step of a
/// migration waits on the other host's or the operator's last one; a delay here is on the
/// migration's critical path).
const SPACING: Duration = Duration::from_millis(500);

/// Where peers reach this host for migrations (`--migration-uri`, `--migration-address`).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// This host's own libvirt URI (the agent's connection).
    pub libvirt_uri: String,
    /// The libvirt URI another host's libvirtd opens to reach this host's; `None`: this host
    /// takes no incoming migrations.
    pub migration_uri: Option<String>,
    /// The address this host's QEMU listens on for incoming guests.
    pub migration_address: Option<String>,
}

/// Why a migration step failed (retried on the next pass).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a read or write.
    #[error("migration API call")]
    Api(#[from] kube::Error),
    /// A blocking task did not finish.
    #[error("migration worker task failed")]
    Join(#[from] tokio::task::JoinError),
    /// Preparing the target's storage failed.
    #[error("preparing the target's disks")]
    Storage(#[from] crate::storage::prepare::StorageError),
    /// A file operation failed.
    #[error("migration file operation")]
    Io(#[from] std::io::Error),
    /// The target's cloud-init seed could not be written.
    #[error("writing the target's cloud-init seed")]
    Seed(#[from] crate::seed::SeedError),
}

/// Run both roles until the task is dropped; failures are logged and retried. A pass runs
/// when the watch of this host's migrations (either label) shows a change, and every
/// [`RESYNC`] without one.
pub async fn run(ctx: Arc<Context>, config: Config) {
    let config = Arc::new(config);
    let jobs = source::Jobs::default();
    let api = Api::<VirtualMachineMigration>::all(ctx.client.clone());
    let watch = |label: &str| {
        let cfg = watcher::Config::default().labels(&format!("{label}={}", ctx.node));
        watcher(api.clone(), cfg).default_backoff().boxed()
    };
    let mut changes = futures::stream::select(
        watch(ironvisor_crds::migration::SOURCE_LABEL),
        watch(ironvisor_crds::migration::TARGET_LABEL),
    );
    let mut resync = tokio::time::interval(RESYNC);
    let mut last_pass: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            ev = changes.next() => {
                if let Some(Err(e)) = ev {
                    tracing::debug!(error = %e, "migration watch");
                }
            }
            _ = resync.tick() => {}
        }
        if let Some(at) = last_pass {
            tokio::time::sleep_until(at + SPACING).await;
        }
        last_pass = Some(tokio::time::Instant::now());
        // Everything that arrived meanwhile is covered by this pass.
        while let Some(Some(_)) = changes.next().now_or_never() {}
        if let Err(e) = target::pass(&ctx, &config).await {
            tracing::warn!(error = %crate::reconcile::failure::chain(&e), "migration target pass failed");
        }
        if let Err(e) = source::pass(&ctx, &config, &jobs).await {
            tracing::warn!(error = %crate::reconcile::failure::chain(&e), "migration source pass failed");
        }
    }
}

/// The migrations labelled with this node in `label`.
async fn labelled(ctx: &Context, label: &str) -> Result<Vec<VirtualMachineMigration>, Error> {
    let api = Api::<VirtualMachineMigration>::all(ctx.client.clone());
    let params = ListParams::default().labels(&format!("{label}={}", ctx.node));
    Ok(api.list(&params).await?.items)
}

/// Merge `status` (this agent's part only) into the migration's status.
async fn patch_status(
    ctx: &Context,
    m: &VirtualMachineMigration,
    status: Value,
) -> Result<(), Error> {
    let api = Api::<VirtualMachineMigration>::namespaced(
        ctx.client.clone(),
        &m.namespace().unwrap_or_default(),
    );
    let manager = format!("ironvisor-agent/{}", ctx.node);
    api.patch_status(
        &m.name_any(),
        &PatchParams::apply(&manager),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}
