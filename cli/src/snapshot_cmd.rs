//! `ivctl snapshot VM` and `ivctl restore VM --snapshot S`: create the object, and with
//! `--wait` follow its phase until it is done, showing each phase as it comes.
//!
//! Exit codes: 0 done (or created, without --wait), 1 failed or refused (the condition's
//! message is printed), 2 usage.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ironvisor_crds::restore::VirtualMachineRestore;
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::ClusterArgs;
use crate::vm::args::parse_duration;
use crate::vm::cmd::{VmError, block_on};

/// Options of `snapshot`.
#[derive(Clone, Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The VM to snapshot.
    pub vm: String,
    /// Name of the snapshot (default: <vm>-<UTC time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Freeze the guest's filesystems: Auto, Required or Never.
    #[arg(long, default_value = "Auto")]
    pub freeze: String,
    /// Keep the snapshot when its VM is deleted.
    #[arg(long)]
    pub retain: bool,
    /// Wait until the snapshot is taken (or failed).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Options of `restore`.
#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    /// The VM whose disks are returned (with --from-backup: the new VM to create).
    pub vm: String,
    /// The snapshot to return to.
    #[arg(
        long,
        required_unless_present = "from_backup",
        conflicts_with = "from_backup"
    )]
    pub snapshot: Option<String>,
    /// Create the VM from this VirtualMachineBackup (its manifest, every disk restored from
    /// it after its checksum is verified), on any host that mounts the backup's location.
    #[arg(long, conflicts_with = "stop_vm")]
    pub from_backup: Option<String>,
    /// With --from-backup: the host to restore on (default: the scheduler's choice).
    #[arg(long, requires = "from_backup")]
    pub node: Option<String>,
    /// Power a running VM off for the restore (it runs again after, as its runStrategy says).
    #[arg(long)]
    pub stop_vm: bool,
    /// Name of the restore object (default: <vm>-restore-<UTC time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Wait until the restore is done (or refused).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A name with the time in it: `<prefix>-YYYYMMDD-HHMMSS`.
pub fn timed_name(prefix: &str, now: k8s_openapi::jiff::Timestamp) -> String {
    format!("{prefix}-{}", now.strftime("%Y%m%d-%H%M%S"))
}

/// The snapshot object `snapshot` creates.
pub fn snapshot_object(ns: &str, name: &str, a: &SnapshotArgs) -> Value {
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "vmName": a.vm,
            "freeze": a.freeze,
            "retainPolicy": if a.retain { "Retain" } else { "Delete" },
        },
    })
}

/// The restore object `restore` creates.
pub fn restore_object(ns: &str, name: &str, a: &RestoreArgs) -> Value {
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"vmName": a.vm, "snapshotName": a.snapshot.as_deref().unwrap_or_default(), "stopVM": a.stop_vm},
    })
}

/// Phase and Ready message of a status, as JSON.
fn phase_of(status: &Value) -> (String, String) {
    let phase = status["phase"].as_str().unwrap_or("Pending").to_owned();
    let message = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or("")
        .to_owned();
    (phase, message)
}

/// Follow an object's phase until Succeeded or Failed, printing each new one.
async fn follow<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<bool, VmError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        let obj = serde_json::to_value(api.get(name).await?).unwrap_or_default();
        let (phase, message) = phase_of(&obj["status"]);
        if phase != last {
            eprintln!("{name}: {phase} {message}");
            last = phase.clone();
        }
        match phase.as_str() {
            "Succeeded" => return Ok(true),
            "Failed" => return Ok(false),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    Err(VmError::Wait(crate::vm::wait::WaitError::Timeout {
        after: timeout,
        key: name.to_owned(),
        what: "Succeeded or Failed",
        now: last,
    }))
}

async fn create<K>(client: Client, ns: &str, obj: Value) -> Result<(Api<K>, String), VmError>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client, ns);
    let obj: K = serde_json::from_value(obj).map_err(|e| VmError::Render(e.to_string()))?;
    let made = api.create(&PostParams::default(), &obj).await?;
    Ok((api, made.name_any()))
}

async fn snapshot(cluster: &ClusterArgs, a: &SnapshotArgs) -> Result<bool, VmError> {
    let ns = cluster.namespace().await;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| timed_name(&a.vm, k8s_openapi::jiff::Timestamp::now()));
    let client = cluster.client().await?;
    let (api, name) =
        create::<VirtualMachineSnapshot>(client, &ns, snapshot_object(&ns, &name, a)).await?;
    println!("virtualmachinesnapshot {ns}/{name} created");
    if !a.wait {
        return Ok(true);
    }
    follow(&api, &name, a.timeout).await
}

async fn restore(cluster: &ClusterArgs, a: &RestoreArgs) -> Result<bool, VmError> {
    let ns = cluster.namespace().await;
    let prefix = format!("{}-restore", a.vm);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| timed_name(&prefix, k8s_openapi::jiff::Timestamp::now()));
    let client = cluster.client().await?;
    let (api, name) =
        create::<VirtualMachineRestore>(client, &ns, restore_object(&ns, &name, a)).await?;
    println!("virtualmachinerestore {ns}/{name} created");
    if !a.wait {
        return Ok(true);
    }
    follow(&api, &name, a.timeout).await
}

fn exit(ok: ExitCode, done: std::sync::Arc<std::sync::atomic::AtomicBool>) -> ExitCode {
    if ok == ExitCode::SUCCESS && !done.load(std::sync::atomic::Ordering::Relaxed) {
        return ExitCode::FAILURE;
    }
    ok
}

/// Run `ivctl snapshot`.
pub fn run_snapshot(cluster: &ClusterArgs, a: &SnapshotArgs) -> ExitCode {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let code = block_on(async move {
        let ok = snapshot(cluster, a).await?;
        flag.store(ok, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    exit(code, done)
}

/// Run `ivctl backup`.
pub fn run_backup(cluster: &ClusterArgs, a: &crate::backup_cmd::BackupArgs) -> ExitCode {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let code = block_on(async move {
        let ok = crate::backup_cmd::backup(cluster, a).await?;
        flag.store(ok, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    exit(code, done)
}

/// Run `ivctl restore` (from a snapshot, or `--from-backup` into a new VM).
pub fn run_restore(cluster: &ClusterArgs, a: &RestoreArgs) -> ExitCode {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let code = block_on(async move {
        let ok = match &a.from_backup {
            Some(b) => {
                let wait = a.wait.then_some(a.timeout);
                crate::backup_cmd::restore_from_backup(cluster, &a.vm, b, a.node.as_deref(), wait)
                    .await?
            }
            None => restore(cluster, a).await?,
        };
        flag.store(ok, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    exit(code, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_parse_as_the_api_types() {
        let s = SnapshotArgs {
            vm: "web".into(),
            name: None,
            freeze: "Never".into(),
            retain: true,
            wait: false,
            timeout: Duration::from_secs(1),
        };
        let snap: VirtualMachineSnapshot =
            serde_json::from_value(snapshot_object("ns", "web-1", &s)).unwrap();
        assert_eq!(snap.spec.vm_name, "web");
        assert_eq!(
            snap.spec.retain_policy,
            ironvisor_crds::snapshot::RetainPolicy::Retain
        );
        let r = RestoreArgs {
            vm: "web".into(),
            snapshot: Some("web-1".into()),
            from_backup: None,
            node: None,
            stop_vm: true,
            name: None,
            wait: false,
            timeout: Duration::from_secs(1),
        };
        let rest: VirtualMachineRestore =
            serde_json::from_value(restore_object("ns", "r", &r)).unwrap();
        assert!(rest.spec.stop_vm);
        assert_eq!(rest.spec.snapshot_name, "web-1");
    }

    #[test]
    fn a_bad_freeze_policy_is_refused_before_anything_is_sent() {
        let s = SnapshotArgs {
            vm: "web".into(),
            name: None,
            freeze: "Sometimes".into(),
            retain: false,
            wait: false,
            timeout: Duration::from_secs(1),
        };
        let parsed: Result<VirtualMachineSnapshot, _> =
            serde_json::from_value(snapshot_object("ns", "x", &s));
        assert!(parsed.is_err());
    }

    #[test]
    fn default_names_carry_the_time() {
        let t: k8s_openapi::jiff::Timestamp = "2026-11-30T08:05:09Z".parse().unwrap();
        assert_eq!(timed_name("web", t), "web-20261130-080509");
    }
}
