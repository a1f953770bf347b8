//! Choosing a migration's target with placement's own filters and scores: never the source,
//! only a host that offers the VM's CPU model, and the named host when the user named one.
//! Pure: Hypervisors and the VM in, a host and the reason (or why none fits) out.

use std::collections::BTreeMap;

use ironvisor_crds::hypervisor::{Acceleration, Hypervisor};
use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::vm::VirtualMachine;

use crate::hosts;
use crate::placement::{self, Capacity, HostSnapshot, Request, Strategy};

/// The chosen host and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The host.
    pub node: String,
    /// Why it (its free capacity after the VM, as placement scored it).
    pub reason: String,
}

/// Why no host fits, as a sentence for the migration's condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoTarget(pub String);

/// Whether `target` runs guests with the CPU the VM has on `source`. Software emulation
/// (TCG) gives every guest QEMU's own model on any host. With KVM a host-model or
/// host-passthrough guest sees the host's CPU, so the target's must be the same model (as
/// vMotion's CPU compatibility check); a named model is checked by libvirt at the copy.
pub fn cpu_compatible(vm: &VirtualMachine, source: &Hypervisor, target: &Hypervisor) -> bool {
    let accel = |h: &Hypervisor| h.status.as_ref().and_then(|s| s.acceleration);
    if accel(source) != Some(Acceleration::Kvm) && accel(target) != Some(Acceleration::Kvm) {
        return true;
    }
    if accel(source) != accel(target) {
        return false;
    }
    match vm.spec.cpu.model.as_str() {
        "host-model" | "host-passthrough" => {
            let model = |h: &Hypervisor| {
                h.status
                    .as_ref()
                    .and_then(|s| s.cpu.as_ref())
                    .map(|c| c.model.clone())
            };
            model(source).is_some() && model(source) == model(target)
        }
        _ => true,
    }
}

/// Placement's view of a host (its reported allocations).
pub(crate) fn snapshot(hv: &Hypervisor) -> HostSnapshot {
    let allocated = hv
        .status
        .as_ref()
        .and_then(|s| s.allocated.as_ref())
        .map(|a| Capacity {
            vcpus: i128::from(a.vcpus),
            memory: to_bytes(&a.memory.0).unwrap_or(0),
        })
        .unwrap_or_default();
    HostSnapshot {
        name: hv.metadata.name.clone().unwrap_or_default(),
        labels: hv.metadata.labels.clone().unwrap_or_default(),
        ready: hosts::ready_condition(hv).is_some_and(|(s, _)| s == "True"),
        unschedulable: hv.spec.unschedulable,
        maintenance: ironvisor_crds::maintenance::in_maintenance(hv),
        unhealthy: hosts::unhealthy(hv),
        allocatable: hosts::allocatable(hv),
        allocated,
        tpm: hosts::tpm(hv),
        ..HostSnapshot::default()
    }
}

/// Compute reserved on each host for VMs migrating to it (not placed there yet).
pub type InFlight = BTreeMap<String, Capacity>;

/// The reservations of `(target, VM)` pairs of migrations under way.
pub fn in_flight(moving: &[(String, VirtualMachine)]) -> InFlight {
    let mut out = InFlight::new();
    for (target, vm) in moving {
        let c = request(vm, None).compute;
        let e = out.entry(target.clone()).or_default();
        e.vcpus += c.vcpus;
        e.memory += c.memory;
    }
    out
}

/// What the VM asks of its target.
pub(crate) fn request(vm: &VirtualMachine, wanted: Option<&str>) -> Request {
    let c = &vm.spec.cpu;
    Request {
        namespace: vm.metadata.namespace.clone().unwrap_or_default(),
        compute: Capacity {
            vcpus: i128::from(c.sockets * c.cores * c.threads),
            memory: to_bytes(&vm.spec.memory.size.0).unwrap_or(0),
        },
        node_selector: vm.spec.node_selector.clone(),
        node_name: wanted.map(str::to_owned),
        tpm: vm.spec.tpm.is_some(),
        ..Request::default()
    }
}

/// Choose the target of `vm`, which runs on `source`.
pub fn choose(
    hypervisors: &[Hypervisor],
    vm: &VirtualMachine,
    source: &str,
    wanted: Option<&str>,
    strategy: Strategy,
    in_flight: &InFlight,
) -> Result<Choice, NoTarget> {
    if wanted == Some(source) {
        return Err(NoTarget(format!("the VM already runs on {source}")));
    }
    let by_name: BTreeMap<&str, &Hypervisor> = hypervisors
        .iter()
        .filter_map(|h| Some((h.metadata.name.as_deref()?, h)))
        .collect();
    let Some(src) = by_name.get(source) else {
        return Err(NoTarget(format!(
            "the source host {source} has no Hypervisor object"
        )));
    };
    let mut cpu_refused = 0;
    let snaps: Vec<HostSnapshot> = by_name
        .iter()
        .filter(|(n, _)| **n != source)
        .filter(|(_, h)| {
            let ok = cpu_compatible(vm, src, h);
            cpu_refused += usize::from(!ok);
            ok
        })
        .map(|(_, h)| {
            let mut s = snapshot(h);
            if let Some(c) = in_flight.get(&s.name) {
                s.allocated.vcpus += c.vcpus;
                s.allocated.memory += c.memory;
            }
            s
        })
        .collect();
    let req = request(vm, wanted);
    match placement::place(&snaps, &req, strategy) {
        Ok(h) => {
            let free = h.allocatable.map(|a| Capacity {
                vcpus: a.vcpus - h.allocated.vcpus - req.compute.vcpus,
                memory: a.memory - h.allocated.memory - req.compute.memory,
            });
            let reason = match free {
                Some(f) => format!(
                    "{} scored best ({strategy:?}): {} vCPUs and {} MiB free after the VM",
                    h.name,
                    f.vcpus,
                    f.memory >> 20
                ),
                None => format!("{} scored best ({strategy:?})", h.name),
            };
            Ok(Choice {
                node: h.name.clone(),
                reason,
            })
        }
        Err(unsched) => {
            let mut msg = format!("no target: {unsched} (the source {source} excluded)");
            if cpu_refused > 0 {
                msg.push_str(&format!("; {cpu_refused} without the VM's CPU model"));
            }
            Err(NoTarget(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::common::Condition;
    use ironvisor_crds::hypervisor::{HostCpu, HypervisorStatus, Resources};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn hv(name: &str, free_vcpus: u32, accel: Acceleration, model: &str) -> Hypervisor {
        let mut h = Hypervisor::new(name, Default::default());
        h.status = Some(HypervisorStatus {
            capacity: Some(Resources {
                vcpus: free_vcpus,
                memory: Quantity("8Gi".into()),
            }),
            acceleration: Some(accel),
            cpu: Some(HostCpu {
                model: model.into(),
                ..Default::default()
            }),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "AgentReady".into(),
                message: String::new(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        h
    }

    fn vm(model: &str) -> VirtualMachine {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "a"},
            "spec": {"cpu": {"cores": 2, "model": model}, "memory": {"size": "1Gi"}}
        }))
        .unwrap()
    }

    #[test]
    fn the_source_is_never_the_target() {
        let hosts = [
            hv("h1", 64, Acceleration::Tcg, "x"),
            hv("h2", 4, Acceleration::Tcg, "x"),
        ];
        let c = choose(
            &hosts,
            &vm("host-model"),
            "h1",
            None,
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap();
        assert_eq!(c.node, "h2");
        assert!(c.reason.starts_with("h2 scored best"), "{}", c.reason);
        let e = choose(
            &hosts,
            &vm("host-model"),
            "h1",
            Some("h1"),
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap_err();
        assert!(e.0.contains("already runs on h1"), "{e}");
    }

    #[test]
    fn a_host_too_small_or_not_named_is_refused_with_the_reason() {
        let hosts = [
            hv("h1", 64, Acceleration::Tcg, "x"),
            hv("h2", 0, Acceleration::Tcg, "x"),
            hv("h3", 8, Acceleration::Tcg, "x"),
        ];
        let e = choose(
            &hosts[..2],
            &vm("host-model"),
            "h1",
            None,
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap_err();
        assert!(e.0.contains("insufficient"), "{e}");
        let c = choose(
            &hosts,
            &vm("host-model"),
            "h1",
            Some("h3"),
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap();
        assert_eq!(c.node, "h3");
    }

    #[test]
    fn room_taken_by_migrations_under_way_is_not_offered_again() {
        let hosts = [
            hv("h1", 64, Acceleration::Tcg, "x"),
            hv("h2", 3, Acceleration::Tcg, "x"),
            hv("h3", 2, Acceleration::Tcg, "x"),
        ];
        // Alone, h2 scores best (more room left).
        let none = InFlight::new();
        let c = choose(
            &hosts,
            &vm("host-model"),
            "h1",
            None,
            Strategy::Spread,
            &none,
        )
        .unwrap();
        assert_eq!(c.node, "h2");
        // A large VM is on its way to h2: its room is taken, h3 is chosen.
        let mut big = vm("host-model");
        big.spec.cpu.cores = 100;
        let busy = in_flight(&[("h2".to_owned(), big.clone())]);
        assert_eq!(busy["h2"].vcpus, 100);
        let c = choose(
            &hosts,
            &vm("host-model"),
            "h1",
            None,
            Strategy::Spread,
            &busy,
        )
        .unwrap();
        assert_eq!(c.node, "h3");
        let full = in_flight(&[("h2".to_owned(), big.clone()), ("h3".to_owned(), big)]);
        let e = choose(
            &hosts,
            &vm("host-model"),
            "h1",
            None,
            Strategy::Spread,
            &full,
        )
        .unwrap_err();
        assert!(e.0.contains("insufficient"), "{e}");
    }

    #[test]
    fn with_kvm_a_host_model_guest_needs_the_same_cpu_model() {
        let hosts = [
            hv("h1", 8, Acceleration::Kvm, "EPYC"),
            hv("h2", 64, Acceleration::Kvm, "Xeon"),
            hv("h3", 8, Acceleration::Kvm, "EPYC"),
        ];
        let c = choose(
            &hosts,
            &vm("host-passthrough"),
            "h1",
            None,
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap();
        assert_eq!(c.node, "h3", "h2 has more room but another CPU");
        let e = choose(
            &hosts[..2],
            &vm("host-model"),
            "h1",
            None,
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap_err();
        assert!(e.0.contains("1 without the VM's CPU model"), "{e}");
        // A named model is left to libvirt's own check at the copy.
        assert_eq!(
            choose(
                &hosts[..2],
                &vm("Skylake-Server"),
                "h1",
                None,
                Strategy::Spread,
                &InFlight::new()
            )
            .unwrap()
            .node,
            "h2"
        );
    }

    #[test]
    fn a_vm_with_a_tpm_migrates_only_to_a_host_that_can_emulate_one() {
        let mut hosts = [
            hv("h1", 8, Acceleration::Tcg, "x"),
            hv("h2", 64, Acceleration::Tcg, "x"),
            hv("h3", 8, Acceleration::Tcg, "x"),
        ];
        for i in [0, 2] {
            hosts[i].status.as_mut().unwrap().tpm = Some(true);
        }
        let mut with_tpm = vm("host-model");
        with_tpm.spec.tpm = Some(Default::default());
        let c = choose(
            &hosts,
            &with_tpm,
            "h1",
            None,
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap();
        assert_eq!(c.node, "h3", "h2 has more room but no swtpm");
        let e = choose(
            &hosts[..2],
            &with_tpm,
            "h1",
            None,
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap_err();
        assert!(e.0.contains("1 no TPM emulator"), "{e}");
        // Without a TPM the emptiest host wins as before.
        let c = choose(
            &hosts,
            &vm("host-model"),
            "h1",
            None,
            Strategy::Spread,
            &InFlight::new(),
        )
        .unwrap();
        assert_eq!(c.node, "h2");
    }
}
