//! The host: acceleration, capacity, allocatable and allocated resources, and the
//! `Hypervisor` status built from them.
//!
//! Arithmetic is pure and exact (integers; the overcommit ratio is the only float); reading
//! /proc and /dev/kvm is kept to [`HostFacts::read`] and [`kvm_usable`].

use crate::hypervisor::HostInfo;
use ironvisor_crds::common::{Condition, condition_status, condition_type};
use ironvisor_crds::hypervisor::{
    Acceleration, HostCpu, HypervisorSpec, HypervisorStatus, ResourceSummary, Resources,
};
use ironvisor_crds::quantity::{format_bytes, to_bytes};
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when it can work here, else TCG.
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

/// Pick the acceleration. `auto` uses KVM only when /dev/kvm opens and the CPU advertises
/// hardware virtualization: nested setups expose /dev/kvm without vmx/svm, and a KVM guest
/// then hangs at boot.
pub fn choose_accel(choice: AccelChoice, kvm_opens: bool, cpu_flags: &[String]) -> Acceleration {
    match choice {
        AccelChoice::Kvm => Acceleration::Kvm,
        AccelChoice::Tcg => Acceleration::Tcg,
        AccelChoice::Auto => {
            if kvm_opens && cpu_flags.iter().any(|f| f == "vmx" || f == "svm") {
                Acceleration::Kvm
            } else {
                Acceleration::Tcg
            }
        }
    }
}

/// Whether /dev/kvm can be opened for reading and writing.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// What the agent knows about its host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostFacts {
    /// CPU threads.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// CPU model, vendor, flags.
    pub cpu: HostCpu,
    /// libvirt version.
    pub libvirt_version: String,
    /// QEMU version.
    pub qemu_version: String,
}

impl HostFacts {
    /// Read /proc/cpuinfo and /proc/meminfo; libvirt fills in what procfs lacks.
    pub fn read(libvirt: &HostInfo) -> Self {
        use procfs::Current;
        let cpuinfo = procfs::CpuInfo::current().ok();
        let mem = procfs::Meminfo::current()
            .ok()
            .map(|m| i128::from(m.mem_total));
        let cpus = cpuinfo
            .as_ref()
            .map(|c| c.num_cores() as u32)
            .filter(|n| *n > 0)
            .unwrap_or(libvirt.cpus);
        let model = cpuinfo
            .as_ref()
            .and_then(|c| c.model_name(0))
            .map(str::to_owned);
        let vendor = cpuinfo
            .as_ref()
            .and_then(|c| c.vendor_id(0))
            .map(str::to_owned);
        let flags: Vec<String> = cpuinfo
            .as_ref()
            .and_then(|c| c.flags(0))
            .map(|f| f.into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        Self {
            cpus,
            memory_bytes: mem.unwrap_or(i128::from(libvirt.memory_kib) * 1024),
            cpu: HostCpu {
                model: model.unwrap_or_else(|| libvirt.cpu_model.clone()),
                vendor,
                flags,
            },
            libvirt_version: libvirt.libvirt_version.clone(),
            qemu_version: libvirt.hypervisor_version.clone(),
        }
    }
}

/// vCPUs and bytes of memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amount {
    /// vCPUs.
    pub vcpus: u32,
    /// Bytes.
    pub memory: i128,
}

impl Amount {
    fn to_resources(self) -> Resources {
        Resources {
            vcpus: self.vcpus,
            memory: Quantity(format_bytes(self.memory)),
        }
    }
}

/// (capacity − reserved) × overcommit, floored, never negative.
pub fn allocatable(capacity: Amount, spec: &HypervisorSpec) -> Amount {
    let reserved_mem = spec
        .reserved
        .memory
        .as_ref()
        .and_then(|q| to_bytes(&q.0).ok())
        .unwrap_or(0)
        .max(0);
    let cpus = capacity.vcpus.saturating_sub(spec.reserved.vcpus);
    let mem = (capacity.memory - reserved_mem).max(0);
    let cpu_ratio = if spec.overcommit.cpu.is_finite() && spec.overcommit.cpu > 0.0 {
        spec.overcommit.cpu
    } else {
        1.0
    };
    let mem_ratio = if spec.overcommit.memory.is_finite() && spec.overcommit.memory > 0.0 {
        spec.overcommit.memory
    } else {
        1.0
    };
    Amount {
        vcpus: (f64::from(cpus) * cpu_ratio).floor() as u32,
        // Whole MiB: the ratio is a float, and a float product of bytes would print badly.
        memory: (((mem >> 20) as f64 * mem_ratio).floor() as i128) << 20,
    }
}

/// What the host's VMs take: every VM whose run strategy counts compute (all but Halted).
pub fn allocated<'a>(vms: impl IntoIterator<Item = &'a VirtualMachine>) -> (Amount, u32) {
    let mut total = Amount::default();
    let mut count = 0;
    for vm in vms {
        count += 1;
        if !vm.spec.run_strategy.counts_compute() {
            continue;
        }
        total.vcpus = total.vcpus.saturating_add(vm.spec.cpu.vcpus());
        total.memory += to_bytes(&vm.spec.memory.size.0).unwrap_or(0).max(0);
    }
    (total, count)
}

/// The condition types the agent writes on its Hypervisor.
pub const AGENT_CONDITIONS: [&str; 4] = [
    condition_type::READY,
    condition_type::KVM_AVAILABLE,
    condition_type::LIBVIRT_HEALTHY,
    condition_type::STORAGE_ACCESSIBLE,
];

/// The Hypervisor status the agent writes.
pub fn hypervisor_status(
    facts: &HostFacts,
    accel: Acceleration,
    spec: &HypervisorSpec,
    generation: Option<i64>,
    (used, vm_count): (Amount, u32),
    now: Time,
    previous: &[Condition],
) -> HypervisorStatus {
    let capacity = Amount {
        vcpus: facts.cpus,
        memory: facts.memory_bytes,
    };
    let alloc = allocatable(capacity, spec);
    // Only the agent's own conditions: another writer's (the operator's MaintenanceReady)
    // must not be applied back by this field manager.
    let mut conditions: Vec<Condition> = previous
        .iter()
        .filter(|c| AGENT_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    ironvisor_crds::common::set_condition(
        &mut conditions,
        Condition {
            type_: condition_type::READY.into(),
            status: condition_status::TRUE.into(),
            reason: "AgentReporting".into(),
            message: format!("agent reports; acceleration {}", accel_str(accel)),
            observed_generation: generation,
            last_transition_time: now.clone(),
        },
    );
    HypervisorStatus {
        capacity: Some(capacity.to_resources()),
        allocatable: Some(alloc.to_resources()),
        allocated: Some(used.to_resources()),
        summary: Some(ResourceSummary {
            vcpus: format!("{}/{}", used.vcpus, alloc.vcpus),
            memory: format!(
                "{}/{}",
                format_bytes(used.memory),
                format_bytes(alloc.memory)
            ),
        }),
        vm_count: Some(vm_count),
        cpu: Some(facts.cpu.clone()),
        libvirt_version: Some(facts.libvirt_version.clone()),
        qemu_version: Some(facts.qemu_version.clone()),
        acceleration: Some(accel),
        agent_version: Some(ironvisor_crds::BUILD_VERSION.into()),
        last_heartbeat_time: Some(now),
        health: None,
        conditions,
        observed_generation: generation,
        seed_key: None,
        tpm: None,
        load: None,
        maintenance: None,
    }
}

/// Add the host health findings: their conditions and the HEALTH summary.
pub fn add_health(status: &mut HypervisorStatus, health: &crate::health::Report, now: &Time) {
    for c in health.conditions(status.observed_generation, now) {
        ironvisor_crds::common::set_condition(&mut status.conditions, c);
    }
    status.health = Some(health.summary());
}

/// `kvm` or `tcg`.
pub fn accel_str(a: Acceleration) -> &'static str {
    match a {
        Acceleration::Kvm => "kvm",
        Acceleration::Tcg => "tcg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::hypervisor::{Overcommit, Reserved};

    fn flags(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_uses_kvm_only_with_dev_kvm_and_vmx_or_svm() {
        assert_eq!(
            choose_accel(AccelChoice::Auto, true, &flags(&["sse", "vmx"])),
            Acceleration::Kvm
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, true, &flags(&["svm"])),
            Acceleration::Kvm
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, true, &flags(&["sse"])),
            Acceleration::Tcg,
            "nested: no vmx"
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, false, &flags(&["vmx"])),
            Acceleration::Tcg
        );
        assert_eq!(
            choose_accel(AccelChoice::Kvm, false, &[]),
            Acceleration::Kvm
        );
        assert_eq!(
            choose_accel(AccelChoice::Tcg, true, &flags(&["vmx"])),
            Acceleration::Tcg
        );
    }

    #[test]
    fn allocatable_subtracts_reserved_then_applies_overcommit() {
        let spec = HypervisorSpec {
            unschedulable: false,
            overcommit: Overcommit {
                cpu: 4.0,
                memory: 1.5,
            },
            reserved: Reserved {
                vcpus: 2,
                memory: Some(Quantity("2Gi".into())),
            },
            maintenance: false,
        };
        let a = allocatable(
            Amount {
                vcpus: 8,
                memory: 10 << 30,
            },
            &spec,
        );
        assert_eq!(
            a,
            Amount {
                vcpus: 24,
                memory: 12 << 30
            }
        );
    }

    #[test]
    fn reservations_larger_than_the_host_leave_nothing_rather_than_negative() {
        let spec = HypervisorSpec {
            reserved: Reserved {
                vcpus: 100,
                memory: Some(Quantity("1Ti".into())),
            },
            ..Default::default()
        };
        assert_eq!(
            allocatable(
                Amount {
                    vcpus: 8,
                    memory: 1 << 30
                },
                &spec
            ),
            Amount::default()
        );
    }

    #[test]
    fn halted_vms_are_counted_but_take_no_compute() {
        let vm = |strategy: &str, mem: &str| -> VirtualMachine {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
                "metadata": {"name": "v", "namespace": "n"},
                "spec": {"runStrategy": strategy, "memory": {"size": mem}, "cpu": {"cores": 2}}
            }))
            .unwrap()
        };
        let vms = [
            vm("Always", "1Gi"),
            vm("Halted", "4Gi"),
            vm("Manual", "512Mi"),
        ];
        let (a, n) = allocated(vms.iter());
        assert_eq!(n, 3);
        assert_eq!(
            a,
            Amount {
                vcpus: 4,
                memory: (1 << 30) + (512 << 20)
            }
        );
    }

    #[test]
    fn the_status_carries_summary_versions_and_a_ready_condition() {
        let facts = HostFacts {
            cpus: 2,
            memory_bytes: 4 << 30,
            cpu: HostCpu {
                model: "EPYC".into(),
                vendor: None,
                flags: vec![],
            },
            libvirt_version: "9.0.0".into(),
            qemu_version: "7.2.0".into(),
        };
        let now = Time(jiff::Timestamp::from_second(1000).unwrap());
        let mut s = hypervisor_status(
            &facts,
            Acceleration::Tcg,
            &HypervisorSpec::default(),
            Some(3),
            (
                Amount {
                    vcpus: 1,
                    memory: 1 << 30,
                },
                1,
            ),
            now.clone(),
            &[],
        );
        add_health(
            &mut s,
            &crate::health::Report {
                kvm: crate::health::Finding::problem("NoHardwareVirtualization", "x".into()),
                libvirt: crate::health::Finding::ok("CapabilityProbeFast", "y".into()),
                storage: crate::health::Finding::ok("DirectoriesAccessible", "z".into()),
            },
            &now,
        );
        assert_eq!(s.health.as_deref(), Some("NoHardwareVirtualization"));
        assert_eq!(s.conditions.len(), 4);
        assert_eq!(s.summary.unwrap().vcpus, "1/8");
        assert_eq!(s.allocatable.unwrap().memory.0, "4Gi");
        assert_eq!(s.acceleration, Some(Acceleration::Tcg));
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.observed_generation, Some(3));
    }
}
