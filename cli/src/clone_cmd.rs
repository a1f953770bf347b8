//! `ivctl clone SRC NEW [--full] [--from-snapshot S]`: a new VM whose disks are clones of a
//! template VM's disks (SRC with `spec.template: true`) or of a snapshot of SRC.
//!
//! The new VM copies SRC's spec (the one captured with the snapshot, when cloning one) with a
//! new identity: no MAC address (each interface gets one made from the new VM's uid), no
//! host name or node pin, a cloud-init seed (the instance-id is the new uid; the agent adds
//! vendor data that resets the machine-id), and `template` off. With `--wait` it follows
//! the new VM until it runs, with a progress bar while a full copy is made.
//!
//! Exit codes: 0 created (or running, with --wait), 1 refused or failed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use ironvisor_crds::vm::VirtualMachine;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::cluster::ClusterArgs;
use crate::vm::args::parse_duration;
use crate::vm::cmd::{VmError, block_on};

/// Options of `clone`.
#[derive(Clone, Debug, clap::Args)]
pub struct CloneArgs {
    /// The source VM: a template (spec.template: true), or the VM of --from-snapshot.
    pub src: String,
    /// Name of the new VM.
    pub new: String,
    /// Copy the disks (standalone, movable) instead of linking them to the source.
    #[arg(long)]
    pub full: bool,
    /// Clone this snapshot of SRC instead of the template's disks.
    #[arg(long)]
    pub from_snapshot: Option<String>,
    /// Create the new VM Halted.
    #[arg(long)]
    pub halted: bool,
    /// Wait until the new VM runs (a progress bar while full copies are made).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The new VM: `spec` (SRC's, or the one captured with the snapshot) with every disk a
/// clone of the source's disk of the same name and a new identity.
pub fn clone_object(ns: &str, a: &CloneArgs, spec: &Value) -> Value {
    let mut spec = spec.clone();
    let mode = if a.full { "Full" } else { "Linked" };
    // `get_mut`, not indexing: indexing a missing key would insert a null.
    if let Some(disks) = spec.get_mut("disks").and_then(Value::as_array_mut) {
        for d in disks {
            let name = d["name"].clone();
            d["source"] = match &a.from_snapshot {
                Some(s) => json!({"snapshot": {"name": s, "disk": name, "mode": mode}}),
                None => json!({"vm": {"name": a.src, "disk": name, "mode": mode}}),
            };
        }
    }
    if let Some(nets) = spec.get_mut("networks").and_then(Value::as_array_mut) {
        for n in nets {
            if let Some(o) = n.as_object_mut() {
                o.remove("macAddress");
            }
        }
    }
    if let Some(o) = spec.as_object_mut() {
        for field in ["template", "hostname", "nodeName"] {
            o.remove(field);
        }
        o.entry("cloudInit").or_insert_with(|| json!({}));
        o.insert(
            "runStrategy".into(),
            json!(if a.halted { "Halted" } else { "Always" }),
        );
    }
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": a.new, "namespace": ns},
        "spec": spec,
    })
}

/// The spec to copy: the snapshot's captured one, else the source VM's.
async fn source_spec(client: &kube::Client, ns: &str, a: &CloneArgs) -> Result<Value, VmError> {
    let vms = Api::<VirtualMachine>::namespaced(client.clone(), ns);
    if let Some(s) = &a.from_snapshot {
        let snaps = Api::<VirtualMachineSnapshot>::namespaced(client.clone(), ns);
        let snap = snaps.get(s).await?;
        if let Some(spec) = snap.status.and_then(|st| st.vm_spec) {
            return serde_json::to_value(spec).map_err(|e| VmError::Render(e.to_string()));
        }
    }
    let Some(vm) = vms.get_opt(&a.src).await? else {
        return Err(VmError::NotFound {
            namespace: ns.to_owned(),
            name: a.src.clone(),
        });
    };
    serde_json::to_value(vm.spec).map_err(|e| VmError::Render(e.to_string()))
}

/// Follow the new VM until it runs (or is placed Halted), showing a full copy's progress.
async fn follow(api: &Api<VirtualMachine>, name: &str, timeout: Duration) -> Result<(), VmError> {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        let vm = serde_json::to_value(api.get(name).await?).unwrap_or_default();
        let st = &vm["status"];
        if let Some(p) = st["cloneProgress"]["percent"].as_u64() {
            bar.set_position(p.min(100));
            bar.set_message(format!("copying disk {}", st["cloneProgress"]["disk"]));
        }
        let phase = st["printableStatus"]
            .as_str()
            .unwrap_or("Pending")
            .to_owned();
        if phase != last {
            bar.println(format!("{name}: {phase}"));
            last = phase.clone();
        }
        if matches!(phase.as_str(), "Running" | "Stopped") {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.abandon();
    Err(VmError::Wait(crate::vm::wait::WaitError::Timeout {
        after: timeout,
        key: name.to_owned(),
        what: "Running",
        now: last,
    }))
}

async fn clone(cluster: &ClusterArgs, a: &CloneArgs) -> Result<(), VmError> {
    let ns = cluster.namespace().await;
    let client = cluster.client().await?;
    let spec = source_spec(&client, &ns, a).await?;
    let obj: VirtualMachine = serde_json::from_value(clone_object(&ns, a, &spec))
        .map_err(|e| VmError::Render(e.to_string()))?;
    let api = Api::<VirtualMachine>::namespaced(client, &ns);
    api.create(&PostParams::default(), &obj).await?;
    let from = a.from_snapshot.as_deref().map_or_else(
        || format!("template {}", a.src),
        |s| format!("snapshot {s}"),
    );
    let how = if a.full { "full copy" } else { "linked clone" };
    println!("virtualmachine {ns}/{} created ({how} of {from})", a.new);
    if a.wait {
        follow(&api, &a.new, a.timeout).await?;
    }
    Ok(())
}

/// Run `ivctl clone`.
pub fn run(cluster: &ClusterArgs, a: &CloneArgs) -> ExitCode {
    block_on(clone(cluster, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(full: bool, snap: Option<&str>) -> CloneArgs {
        CloneArgs {
            src: "tpl".into(),
            new: "web-2".into(),
            full,
            from_snapshot: snap.map(str::to_owned),
            halted: false,
            wait: false,
            timeout: Duration::from_secs(1),
        }
    }

    fn spec() -> Value {
        json!({
            "runStrategy": "Halted", "template": true, "hostname": "tpl", "nodeName": "h1",
            "memory": {"size": "64Mi"},
            "disks": [{"name": "root", "size": "1Gi", "source": {"blank": {}}}],
            "networks": [{"name": "n", "macAddress": "52:54:00:00:00:01", "user": {}}]
        })
    }

    #[test]
    fn a_clone_of_a_template_links_every_disk_and_takes_a_new_identity() {
        let o = clone_object("ns", &args(false, None), &spec());
        let vm: VirtualMachine = serde_json::from_value(o).unwrap();
        let d = &vm.spec.disks[0];
        let v = d.source.vm.as_ref().unwrap();
        assert_eq!((v.name.as_str(), v.disk.as_deref()), ("tpl", Some("root")));
        assert_eq!(v.mode, ironvisor_crds::vm::CloneMode::Linked);
        assert!(d.source.blank.is_none());
        assert_eq!(vm.spec.networks[0].mac_address, None);
        assert!(!vm.spec.template && vm.spec.hostname.is_none() && vm.spec.node_name.is_none());
        assert!(vm.spec.cloud_init.is_some());
        assert_eq!(
            vm.spec.run_strategy,
            ironvisor_crds::vm::RunStrategy::Always
        );
    }

    #[test]
    fn a_spec_without_networks_or_disks_clones_without_nulls() {
        let o = clone_object(
            "ns",
            &args(false, None),
            &json!({"memory": {"size": "64Mi"}}),
        );
        assert!(o["spec"].get("networks").is_none() && o["spec"].get("disks").is_none());
        let _: VirtualMachine = serde_json::from_value(o).unwrap();
    }

    #[test]
    fn a_full_clone_of_a_snapshot_copies_it() {
        let o = clone_object("ns", &args(true, Some("gold")), &spec());
        let vm: VirtualMachine = serde_json::from_value(o).unwrap();
        let s = vm.spec.disks[0].source.snapshot.as_ref().unwrap();
        assert_eq!(s.name, "gold");
        assert_eq!(s.mode, ironvisor_crds::vm::CloneMode::Full);
        assert!(!vm.spec.has_linked_clone());
    }
}
