//! `ivctl backup VM --location L [--wait]` and `ivctl restore NEW --from-backup B [--node N]`.
//!
//! `backup` creates a `VirtualMachineBackup` of the VM; with `--wait` it shows the copy's
//! progress (a bar from the status' `progress`) until the backup succeeded or failed.
//! `restore --from-backup` creates a new VM from the backup's manifest whose every disk's
//! source is that backup (`source.backup`): the host the VM is placed on (`--node`, or the
//! scheduler's choice) copies the images after checking their checksums. With `--wait` it
//! follows the VM until it runs (or is halted, as its runStrategy says), and fails on an
//! Event saying a checksum did not match.
//!
//! Exit codes: 0 done (or created, without --wait), 1 failed or refused, 2 usage.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ironvisor_crds::backup::{BackupPhase, VirtualMachineBackup};
use ironvisor_crds::vm::{BackupSource, DiskSource, VirtualMachine, VirtualMachineSpec};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use crate::cluster::ClusterArgs;
use crate::snapshot_cmd::timed_name;
use crate::vm::args::parse_duration;
use crate::vm::cmd::VmError;

/// Options of `backup`.
#[derive(Clone, Debug, clap::Args)]
pub struct BackupArgs {
    /// The VM to back up (a snapshot is taken for the backup and deleted after it).
    pub vm: String,
    /// The BackupLocation to write to.
    #[arg(long, default_value = "default")]
    pub location: String,
    /// Name of the backup (default: <vm>-<UTC time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Wait until the backup is written (or failed), showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The backup object `backup` creates.
pub fn backup_object(ns: &str, name: &str, a: &BackupArgs) -> Value {
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachineBackup",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"vmName": a.vm, "location": a.location},
    })
}

/// The percentage in a progress line such as `disk 1/2 (data): 43%`.
pub fn percent(progress: &str) -> Option<u64> {
    let (_, tail) = progress.rsplit_once(": ")?;
    tail.strip_suffix('%')?.trim().parse().ok()
}

/// Run `ivctl backup`; `Ok(false)` when the backup failed.
pub async fn backup(cluster: &ClusterArgs, a: &BackupArgs) -> Result<bool, VmError> {
    let ns = cluster.namespace().await;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| timed_name(&a.vm, k8s_openapi::jiff::Timestamp::now()));
    let api = Api::<VirtualMachineBackup>::namespaced(cluster.client().await?, &ns);
    let obj: VirtualMachineBackup = serde_json::from_value(backup_object(&ns, &name, a))
        .map_err(|e| VmError::Render(e.to_string()))?;
    api.create(&PostParams::default(), &obj).await?;
    println!("virtualmachinebackup {ns}/{name} created");
    if !a.wait {
        return Ok(true);
    }
    follow(&api, &name, a.timeout).await
}

/// Follow a backup, with a bar for the copy, until it finished.
async fn follow(
    api: &Api<VirtualMachineBackup>,
    name: &str,
    timeout: Duration,
) -> Result<bool, VmError> {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        let st = api.get(name).await?.status.unwrap_or_default();
        let message = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let progress = st.progress.clone().unwrap_or_default();
        bar.set_position(percent(&progress).unwrap_or(0));
        bar.set_message(format!("{:?} {progress}", st.phase));
        last = format!("{:?}", st.phase);
        match st.phase {
            BackupPhase::Succeeded => {
                bar.finish_and_clear();
                println!("{name}: Succeeded {message}");
                return Ok(true);
            }
            BackupPhase::Failed => {
                bar.finish_and_clear();
                eprintln!("{name}: Failed {message}");
                return Ok(false);
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    bar.abandon();
    Err(VmError::Wait(crate::vm::wait::WaitError::Timeout {
        after: timeout,
        key: name.to_owned(),
        what: "Succeeded or Failed",
        now: last,
    }))
}

/// The VM `restore --from-backup` creates: the backup's spec, every disk from the backup,
/// placed on `node` when given.
pub fn vm_from_backup(
    ns: &str,
    name: &str,
    backup: &str,
    spec: &VirtualMachineSpec,
    node: Option<&str>,
) -> VirtualMachine {
    let mut spec = spec.clone();
    for d in &mut spec.disks {
        d.source = DiskSource {
            backup: Some(BackupSource {
                name: backup.to_owned(),
                disk: d.name.clone(),
            }),
            ..DiskSource::default()
        };
    }
    if let Some(n) = node {
        spec.node_name = Some(n.to_owned());
    }
    let mut vm = VirtualMachine::new(name, spec);
    vm.metadata.namespace = Some(ns.to_owned());
    vm
}

/// Run `ivctl restore NEW --from-backup B`; `Ok(false)` when the restore is refused.
pub async fn restore_from_backup(
    cluster: &ClusterArgs,
    vm: &str,
    backup: &str,
    node: Option<&str>,
    wait: Option<Duration>,
) -> Result<bool, VmError> {
    let ns = cluster.namespace().await;
    let client = cluster.client().await?;
    let b = Api::<VirtualMachineBackup>::namespaced(client.clone(), &ns)
        .get(backup)
        .await?;
    let st = b.status.unwrap_or_default();
    let Some(spec) = st.vm_spec.filter(|_| st.phase == BackupPhase::Succeeded) else {
        eprintln!(
            "backup {ns}/{backup} has not succeeded ({:?}): nothing to restore",
            st.phase
        );
        return Ok(false);
    };
    let vms = Api::<VirtualMachine>::namespaced(client.clone(), &ns);
    vms.create(
        &PostParams::default(),
        &vm_from_backup(&ns, vm, backup, &spec, node),
    )
    .await?;
    println!("virtualmachine {ns}/{vm} created from backup {backup}");
    let Some(timeout) = wait else {
        return Ok(true);
    };
    let events = Api::<Event>::namespaced(client, &ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=VirtualMachine,involvedObject.name={vm}"
    ));
    let start = Instant::now();
    while start.elapsed() < timeout {
        for e in events.list(&lp).await?.items {
            if matches!(
                e.reason.as_deref(),
                Some("BackupChecksumMismatch" | "BackupRestoreFailed")
            ) {
                eprintln!("{vm}: {}", e.message.unwrap_or_default());
                return Ok(false);
            }
        }
        let status = vms.get(vm).await?.status.unwrap_or_default();
        if let Some(why) = refused_spec(&status) {
            eprintln!("{vm}: {why}");
            return Ok(false);
        }
        if let Some(p) = status.phase.filter(|p| {
            matches!(
                p,
                ironvisor_crds::vm::Phase::Running | ironvisor_crds::vm::Phase::Stopped
            )
        }) {
            println!("{vm}: {p:?}, disks restored from {backup}");
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(VmError::Wait(crate::vm::wait::WaitError::Timeout {
        after: timeout,
        key: format!("{ns}/{vm}"),
        what: "Running or Stopped",
        now: String::new(),
    }))
}

/// Why the agent refuses the VM's spec for good (phase Failed, Ready reason InvalidSpec):
/// waiting longer changes nothing.
fn refused_spec(status: &ironvisor_crds::vm::VirtualMachineStatus) -> Option<String> {
    if status.phase != Some(ironvisor_crds::vm::Phase::Failed) {
        return None;
    }
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
        .map(|c| format!("the spec cannot run: {}", c.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_the_percentage() {
        assert_eq!(percent("disk 1/2 (data): 43%"), Some(43));
        assert_eq!(percent("disk 2/2 (root): checksum"), None);
        assert_eq!(percent("starting"), None);
    }

    #[test]
    fn the_backup_object_parses_as_the_api_type() {
        let a = BackupArgs {
            vm: "web".into(),
            location: "nfs".into(),
            name: None,
            wait: false,
            timeout: Duration::from_secs(1),
        };
        let b: VirtualMachineBackup =
            serde_json::from_value(backup_object("ns", "web-1", &a)).unwrap();
        assert_eq!(b.spec.vm_name.as_deref(), Some("web"));
        assert_eq!(b.spec.location, "nfs");
    }

    #[test]
    fn a_vm_from_a_backup_takes_every_disk_from_it_and_the_node_asked_for() {
        let spec: VirtualMachineSpec = serde_json::from_value(json!({
            "memory": {"size": "64Mi"},
            "nodeName": "old-host",
            "disks": [
                {"name": "root", "size": "1Gi", "source": {"http": {"url": "https://x/y", "sha256": "0".repeat(64)}}},
                {"name": "data", "size": "64Mi", "source": {"blank": {}}}
            ]
        }))
        .unwrap();
        let vm = vm_from_backup("team", "web-copy", "nightly", &spec, Some("new-host"));
        assert_eq!(vm.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(vm.spec.node_name.as_deref(), Some("new-host"));
        for d in &vm.spec.disks {
            let b = d.source.backup.as_ref().unwrap();
            assert_eq!(
                (b.name.as_str(), b.disk.as_str()),
                ("nightly", d.name.as_str())
            );
            assert!(d.source.http.is_none() && d.source.blank.is_none());
        }
        assert_eq!(vm.spec.disks[0].size, spec.disks[0].size);
    }

    #[test]
    fn only_a_failed_vm_with_an_invalid_spec_ends_the_wait() {
        let status = |phase: &str, reason: &str| -> ironvisor_crds::vm::VirtualMachineStatus {
            serde_json::from_value(json!({
                "phase": phase,
                "conditions": [{"type": "Ready", "status": "False", "reason": reason,
                    "message": "disk \"data\" needs exactly one source",
                    "lastTransitionTime": "2026-11-30T13:50:48Z"}]
            }))
            .unwrap()
        };
        let why = refused_spec(&status("Failed", "InvalidSpec")).unwrap();
        assert!(why.contains("needs exactly one source"), "{why}");
        // libvirt refusals are retried: keep waiting.
        assert_eq!(refused_spec(&status("Failed", "DefineFailed")), None);
        assert_eq!(refused_spec(&status("Starting", "InvalidSpec")), None);
    }
}
