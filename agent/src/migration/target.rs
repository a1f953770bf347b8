//! The target agent: prepare the VM's directory, disks (the same names and sizes; the
//! images a disk is layered on in place before any copy starts) and cloud-init seed (from
//! the operator's incoming seed copy, sealed to this host), say where the guest goes,
//! read QEMU's downtime from the completed incoming job, and clean up what it prepared for
//! a migration that failed or was cancelled ([`INCOMING_MARKER`]).

use super::{Config, Error, labelled, patch_status};
use crate::domain_xml::name::domain_name;
use crate::domain_xml::plan_nics;
use crate::reconcile::controller::Context;
use crate::reconcile::seed_copy;
use crate::seed::SeedContent;
use crate::storage::layout;
use ironvisor_crds::migration::{
    MigrationPhase, SourceState, TARGET_LABEL, VirtualMachineMigration,
    VirtualMachineMigrationStatus,
};
use ironvisor_crds::vm::VirtualMachine;
use kube::{Api, ResourceExt};
use serde_json::json;

/// One pass over the migrations coming to this host.
pub async fn pass(ctx: &Context, config: &Config) -> Result<(), Error> {
    for m in labelled(ctx, TARGET_LABEL).await? {
        let Some(status) = &m.status else { continue };
        let ready = status.target.as_ref().is_some_and(|t| t.ready);
        let failed_here = status.target.as_ref().is_some_and(|t| t.message.is_some());
        match status.phase {
            MigrationPhase::PreparingTarget if !ready && !failed_here => {
                prepare(ctx, config, &m).await?
            }
            MigrationPhase::Migrating
                if m.spec.restarts()
                    && copied(status)
                    && !status.target.as_ref().is_some_and(|t| t.cold_boot_ready) =>
            {
                stop_paused_copy(ctx, config, &m).await?
            }
            MigrationPhase::Migrating | MigrationPhase::Completed
                if !m.spec.restarts()
                    && copied(status)
                    && status
                        .target
                        .as_ref()
                        .is_some_and(|t| t.downtime_milliseconds.is_none()) =>
            {
                report_downtime(ctx, config, &m).await?
            }
            _ => {}
        }
    }
    settle_prepared(ctx, config).await
}

/// Whether the source agent reported QEMU's completion.
fn copied(status: &VirtualMachineMigrationStatus) -> bool {
    status.source.as_ref().map(|s| s.state) == Some(SourceState::Succeeded)
}

/// A restart elsewhere: the copy arrived paused (it never ran); stop it, keeping its
/// definition, and say so, so the operator places the VM here and this host's VM controller
/// boots it afresh.
async fn stop_paused_copy(
    ctx: &Context,
    config: &Config,
    m: &VirtualMachineMigration,
) -> Result<(), Error> {
    let name = domain_name(&m.namespace().unwrap_or_default(), &m.spec.vm_name);
    let uri = config.libvirt_uri.clone();
    match tokio::task::spawn_blocking(move || super::cold::stop(&uri, &name)).await? {
        Ok(stopped) => {
            tracing::info!(
                migration = m.name_any(),
                stopped,
                "restart elsewhere: the paused copy is stopped; it boots afresh once placed here"
            );
            patch_status(ctx, m, json!({ "target": { "coldBootReady": true } })).await
        }
        Err(e) => {
            tracing::warn!(migration = m.name_any(), error = %e, "could not stop the paused copy; retrying");
            Ok(())
        }
    }
}

/// The VM the migration moves, when it is still the one (by uid) it locked.
async fn vm_of(
    ctx: &Context,
    m: &VirtualMachineMigration,
) -> Result<Option<VirtualMachine>, Error> {
    let api =
        Api::<VirtualMachine>::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let vm = api.get_opt(&m.spec.vm_name).await?;
    let want = m.status.as_ref().and_then(|s| s.vm_uid.as_deref());
    Ok(vm.filter(|v| v.metadata.uid.as_deref() == want && want.is_some()))
}

async fn refuse(ctx: &Context, m: &VirtualMachineMigration, why: String) -> Result<(), Error> {
    tracing::warn!(
        migration = m.name_any(),
        why,
        "cannot receive this migration"
    );
    patch_status(
        ctx,
        m,
        json!({ "target": { "ready": false, "message": why } }),
    )
    .await
}

async fn prepare(ctx: &Context, config: &Config, m: &VirtualMachineMigration) -> Result<(), Error> {
    let (Some(uri), Some(address)) = (&config.migration_uri, &config.migration_address) else {
        let why = format!(
            "host {} takes no incoming migrations: its agent runs without --migration-uri and \
             --migration-address",
            ctx.node
        );
        return refuse(ctx, m, why).await;
    };
    let Some(vm) = vm_of(ctx, m).await? else {
        return refuse(ctx, m, "the VM no longer exists (or was recreated)".into()).await;
    };
    let uid = vm.metadata.uid.clone().unwrap_or_default();
    let storage = &ctx.engine.storage;
    let Some(vm_dir) = layout::vm_dir(&storage.state_dir, &uid) else {
        return refuse(ctx, m, "the VM's uid is not a safe directory name".into()).await;
    };
    if let Some(progress) = storage.images_pending(&vm_dir, &vm.spec).await? {
        tracing::info!(
            migration = m.name_any(),
            progress,
            "waiting for images before the copy"
        );
        return Ok(());
    }
    storage.prepare(&vm_dir, &vm.spec).await?;
    tokio::fs::write(vm_dir.join(INCOMING_MARKER), m.uid().unwrap_or_default()).await?;
    match write_seed(ctx, &vm, &vm_dir).await? {
        SeedStep::Ready => {}
        SeedStep::Waiting(why) => {
            tracing::info!(migration = m.name_any(), why, "waiting for the seed copy");
            return Ok(());
        }
        SeedStep::Refused(why) => return refuse(ctx, m, why).await,
    }
    let owner = format!("{}/{}", vm.namespace().unwrap_or_default(), vm.name_any());
    tokio::fs::write(layout::owner_file(&vm_dir), owner).await?;
    tracing::info!(migration = m.name_any(), vm_dir = %vm_dir.display(), "ready to receive");
    patch_status(
        ctx,
        m,
        json!({ "target": {
            "ready": true,
            "libvirtUri": uri,
            "address": address,
            "vmDir": vm_dir.to_string_lossy(),
        }}),
    )
    .await
}

/// Where the seed stands on this host.
enum SeedStep {
    /// Written (or the VM has none).
    Ready,
    /// The operator has not sealed the values to this host's key yet: retried next pass.
    Waiting(String),
    /// The spec cannot give a seed here.
    Refused(String),
}

/// Write the VM's cloud-init seed in its directory here, the same content the source built
/// (the interfaces' MACs come from the spec and uid): the seed is a read-only CD-ROM, which
/// QEMU does not copy, and the domain the source sends names it.
async fn write_seed(
    ctx: &Context,
    vm: &VirtualMachine,
    vm_dir: &std::path::Path,
) -> Result<SeedStep, Error> {
    let Some(ci) = vm.spec.cloud_init.as_ref() else {
        return Ok(SeedStep::Ready);
    };
    let uid = vm.metadata.uid.clone().unwrap_or_default();
    let data = seed_copy::fetch(&ctx.client, &uid, Some(ci), &ctx.seed_key).await?;
    if let Some(why) = data.pending {
        return Ok(SeedStep::Waiting(why));
    }
    let nics = match plan_nics(&vm.spec, &uid) {
        Ok(n) => n,
        Err(e) => return Ok(SeedStep::Refused(format!("the VM's interfaces: {e}"))),
    };
    let hostname = vm.spec.hostname.clone().unwrap_or_else(|| vm.name_any());
    let content = SeedContent::new(
        &uid,
        &hostname,
        data.user_data.as_deref(),
        data.network_data.as_deref(),
        &nics,
    );
    crate::seed::write_seed(&layout::seed_file(vm_dir), &content).await?;
    Ok(SeedStep::Ready)
}

async fn report_downtime(
    ctx: &Context,
    config: &Config,
    m: &VirtualMachineMigration,
) -> Result<(), Error> {
    let name = domain_name(&m.namespace().unwrap_or_default(), &m.spec.vm_name);
    let uri = config.libvirt_uri.clone();
    let stats =
        tokio::task::spawn_blocking(move || super::ops::job_stats(&uri, &name, true)).await?;
    match stats {
        Ok(s) => {
            patch_status(
                ctx,
                m,
                json!({ "target": {
                    "downtimeMilliseconds": s.downtime_ms.unwrap_or(0),
                    "jobMilliseconds": s.elapsed_ms,
                }}),
            )
            .await
        }
        Err(e) => {
            tracing::warn!(migration = m.name_any(), error = %e, "no completed job statistics");
            Ok(())
        }
    }
}

/// The marker the target leaves in a directory it prepared for an incoming guest, until the
/// guest is placed here: a directory with it, whose VM is placed elsewhere and held by no
/// migration, was prepared for a migration that did not happen (failed, cancelled, deleted)
/// and holds nothing of the VM's: it is removed. Without the marker nothing is removed here.
pub const INCOMING_MARKER: &str = "migration-incoming";

/// Settle the directories prepared for incoming guests: drop the marker once the VM is
/// placed here, remove the directory once no migration brings the VM any more.
async fn settle_prepared(ctx: &Context, config: &Config) -> Result<(), Error> {
    let storage = &ctx.engine.storage;
    for uid in crate::storage::prepare::list_vm_dirs(&storage.state_dir).await? {
        let Some(vm_dir) = layout::vm_dir(&storage.state_dir, &uid) else {
            continue;
        };
        let marker = vm_dir.join(INCOMING_MARKER);
        if !tokio::fs::try_exists(&marker).await? {
            continue;
        }
        let Ok(owner) = tokio::fs::read_to_string(layout::owner_file(&vm_dir)).await else {
            continue;
        };
        let Some((ns, name)) = owner.trim().split_once('/') else {
            continue;
        };
        let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), ns)
            .get_opt(name)
            .await?;
        let Some(vm) = vm.filter(|v| v.metadata.uid.as_deref() == Some(uid.as_str())) else {
            // Gone: the leftover sweep removes it with its own checks.
            continue;
        };
        if vm.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(ctx.node.as_str()) {
            tokio::fs::remove_file(&marker).await?;
            continue;
        }
        if crate::reconcile::controller::migrating(&vm) {
            continue;
        }
        let (u, d) = (config.libvirt_uri.clone(), domain_name(ns, name));
        let running = tokio::task::spawn_blocking(move || super::ops::is_running(&u, &d))
            .await?
            .unwrap_or(true);
        if !running && crate::reconcile::release::moved_dir_free(ctx, &vm).await? {
            tracing::info!(
                uid,
                vm = owner.trim(),
                "removing what was prepared for a migration that did not happen"
            );
            storage.remove_vm(&uid).await?;
        }
    }
    Ok(())
}
