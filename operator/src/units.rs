//! VM units: what a VM asks for and what a quota limits, in exact integers.
//!
//! This module owns the translation of a VirtualMachine spec and a Quota spec into integer
//! figures (bytes, vCPUs, counts). It does no I/O and never uses floating point: quantities
//! go through `ironvisor_crds::quantity`, so sums and comparisons are exact.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use ironvisor_crds::quantity::{QuantityError, format_bytes, to_bytes};
use ironvisor_crds::quota::{QuotaLimits, Usage};
use ironvisor_crds::vm::{AccountingError, accounted_bytes};
use ironvisor_crds::vm::{AdmittedSize, VirtualMachineSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A resource a quota limits, in the order messages list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Number of VMs, running or not.
    VirtualMachines,
    /// vCPUs of VMs that should be running.
    Vcpus,
    /// Memory (bytes) of VMs that should be running.
    Memory,
    /// Sum of disk sizes (bytes) of all VMs.
    Storage,
}

impl Resource {
    /// Every resource, in message order.
    pub const ALL: [Resource; 4] = [
        Resource::VirtualMachines,
        Resource::Vcpus,
        Resource::Memory,
        Resource::Storage,
    ];

    /// The API spelling (`spec.hard` key), also the metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::VirtualMachines => "virtualMachines",
            Resource::Vcpus => "vcpus",
            Resource::Memory => "memory",
            Resource::Storage => "storage",
        }
    }

    /// A value of this resource as people read it (`2Gi` for bytes, `4` for counts).
    pub fn format(self, value: i128) -> String {
        match self {
            Resource::VirtualMachines | Resource::Vcpus => value.to_string(),
            Resource::Memory | Resource::Storage => format_bytes(value),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of every resource. Used both for one VM's demand and for sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Units {
    /// VM count.
    pub vms: i128,
    /// vCPUs.
    pub vcpus: i128,
    /// Memory in bytes.
    pub memory: i128,
    /// Storage in bytes.
    pub storage: i128,
}

impl Units {
    /// The amount of one resource.
    pub fn get(&self, r: Resource) -> i128 {
        match r {
            Resource::VirtualMachines => self.vms,
            Resource::Vcpus => self.vcpus,
            Resource::Memory => self.memory,
            Resource::Storage => self.storage,
        }
    }

    /// Only the compute part (vCPUs and memory); what a Halted VM does not count.
    pub fn compute(&self) -> Units {
        Units {
            vcpus: self.vcpus,
            memory: self.memory,
            ..Units::default()
        }
    }

    /// Everything but the compute part (VM count and storage).
    pub fn non_compute(&self) -> Units {
        Units {
            vms: self.vms,
            storage: self.storage,
            ..Units::default()
        }
    }

    /// Whether every figure is zero.
    pub fn is_zero(&self) -> bool {
        *self == Units::default()
    }

    /// What `self` asks for beyond `admitted`, per resource (never negative; `vms` 0).
    pub fn growth_over(&self, admitted: &Units) -> Units {
        Units {
            vms: 0,
            vcpus: (self.vcpus - admitted.vcpus).max(0),
            memory: (self.memory - admitted.memory).max(0),
            storage: (self.storage - admitted.storage).max(0),
        }
    }

    /// The `status.admitted` value (quantities print exactly, vCPUs saturate at i64).
    pub fn to_admitted(&self) -> AdmittedSize {
        AdmittedSize {
            vcpus: saturating_i64(self.vcpus),
            memory: Quantity(format_bytes(self.memory)),
            storage: Quantity(format_bytes(self.storage)),
            host_ports: None,
        }
    }

    /// One VM admitted at `a`; `None` when a quantity does not parse or is negative (then
    /// the VM counts as placed by an older operator: [`crate::index::VmEntry::admitted_size`]).
    pub fn from_admitted(a: &AdmittedSize) -> Option<Units> {
        let bytes = |q: &Quantity| to_bytes(&q.0).ok().filter(|b| *b >= 0);
        Some(Units {
            vms: 1,
            vcpus: Some(i128::from(a.vcpus)).filter(|v| *v >= 0)?,
            memory: bytes(&a.memory)?,
            storage: bytes(&a.storage)?,
        })
    }

    /// Convert to the API's `Usage` (counts saturate at i64, quantities print exactly).
    pub fn to_usage(&self) -> Usage {
        Usage {
            virtual_machines: saturating_i64(self.vms),
            vcpus: saturating_i64(self.vcpus),
            memory: Quantity(format_bytes(self.memory)),
            storage: Quantity(format_bytes(self.storage)),
        }
    }
}

fn saturating_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl Add for Units {
    type Output = Units;
    fn add(self, o: Units) -> Units {
        Units {
            vms: self.vms.saturating_add(o.vms),
            vcpus: self.vcpus.saturating_add(o.vcpus),
            memory: self.memory.saturating_add(o.memory),
            storage: self.storage.saturating_add(o.storage),
        }
    }
}

impl AddAssign for Units {
    fn add_assign(&mut self, o: Units) {
        *self = *self + o;
    }
}

impl Sub for Units {
    type Output = Units;
    fn sub(self, o: Units) -> Units {
        Units {
            vms: self.vms.saturating_sub(o.vms),
            vcpus: self.vcpus.saturating_sub(o.vcpus),
            memory: self.memory.saturating_sub(o.memory),
            storage: self.storage.saturating_sub(o.storage),
        }
    }
}

/// Why a spec cannot be turned into VM units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitsError {
    /// The memory size is not a quantity.
    #[error("spec.memory.size is invalid")]
    Memory(#[source] QuantityError),
    /// A disk cannot be counted (no size, or not a quantity): the storage rule of
    /// [`accounted_bytes`].
    #[error(transparent)]
    Disk(#[from] AccountingError),
    /// A quota limit is not a quantity.
    #[error("spec.hard.{resource} is invalid")]
    Limit {
        /// The limit's key.
        resource: Resource,
        /// Why.
        #[source]
        source: QuantityError,
    },
    /// A figure is negative.
    #[error("{0} must not be negative")]
    Negative(&'static str),
}

/// The full demand of a VM: one VM, its spec vCPUs and memory, and the sum of its disks'
/// accounted sizes.
///
/// Storage follows the one rule of [`accounted_bytes`]: each disk counts its declared
/// size, the largest it can grow to; a disk without one (an image disk: its real size is
/// only known on a host once fetched, too late for a quota) makes the VM unschedulable
/// with a message naming the disk. Hypervisor overhead is never counted.
pub fn vm_demand(spec: &VirtualMachineSpec) -> Result<Units, UnitsError> {
    let memory = to_bytes(&spec.memory.size.0).map_err(UnitsError::Memory)?;
    if memory < 0 {
        return Err(UnitsError::Negative("spec.memory.size"));
    }
    let mut storage: i128 = 0;
    for disk in &spec.disks {
        storage = storage.saturating_add(accounted_bytes(disk)?);
    }
    Ok(Units {
        vms: 1,
        vcpus: i128::from(spec.cpu.vcpus()),
        memory,
        storage,
    })
}

/// Quota limits as integers; `None` is "not limited".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most VMs.
    pub vms: Option<i128>,
    /// Most vCPUs.
    pub vcpus: Option<i128>,
    /// Most memory in bytes.
    pub memory: Option<i128>,
    /// Most storage in bytes.
    pub storage: Option<i128>,
}

impl Limits {
    /// Parse a Quota's `spec.hard`.
    pub fn parse(hard: &QuotaLimits) -> Result<Limits, UnitsError> {
        let qty = |q: &Option<Quantity>, resource| -> Result<Option<i128>, UnitsError> {
            q.as_ref()
                .map(|q| to_bytes(&q.0).map_err(|source| UnitsError::Limit { resource, source }))
                .transpose()
        };
        let limits = Limits {
            vms: hard.virtual_machines.map(i128::from),
            vcpus: hard.vcpus.map(i128::from),
            memory: qty(&hard.memory, Resource::Memory)?,
            storage: qty(&hard.storage, Resource::Storage)?,
        };
        for r in Resource::ALL {
            if limits.get(r).is_some_and(|v| v < 0) {
                return Err(UnitsError::Negative(r.as_str()));
            }
        }
        Ok(limits)
    }

    /// The limit on one resource.
    pub fn get(&self, r: Resource) -> Option<i128> {
        match r {
            Resource::VirtualMachines => self.vms,
            Resource::Vcpus => self.vcpus,
            Resource::Memory => self.memory,
            Resource::Storage => self.storage,
        }
    }

    /// The resources on which `used` is above the limit.
    pub fn exceeded_by(&self, used: &Units) -> Vec<Resource> {
        Resource::ALL
            .into_iter()
            .filter(|r| self.get(*r).is_some_and(|hard| used.get(*r) > hard))
            .collect()
    }

    /// `used/hard` for one resource; `-` when not limited.
    pub fn summary(&self, used: &Units, r: Resource) -> String {
        let hard = self.get(r).map_or_else(|| "-".to_owned(), |h| r.format(h));
        format!("{}/{hard}", r.format(used.get(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::vm::{Cpu, Disk, DiskSource, HttpSource, Memory};

    #[test]
    fn an_admitted_size_round_trips_exactly_and_garbage_is_refused() {
        let u = Units {
            vms: 1,
            vcpus: 3,
            memory: (1 << 30) + 512,
            storage: 10 << 30,
        };
        assert_eq!(Units::from_admitted(&u.to_admitted()), Some(u));
        let mut bad = u.to_admitted();
        bad.memory = Quantity("lots".into());
        assert_eq!(Units::from_admitted(&bad), None);
        let mut negative = u.to_admitted();
        negative.vcpus = -1;
        assert_eq!(Units::from_admitted(&negative), None);
    }

    pub(crate) fn spec(vcpus: u32, memory: &str, disks: &[&str]) -> VirtualMachineSpec {
        serde_json::from_value(serde_json::json!({
            "cpu": {"cores": vcpus},
            "memory": {"size": memory},
            "disks": disks.iter().enumerate().map(|(i, size)| serde_json::json!({
                "name": format!("d{i}"), "size": size, "source": {"blank": {}}
            })).collect::<Vec<_>>(),
        }))
        .expect("valid spec")
    }

    #[test]
    fn demand_counts_one_vm_its_vcpus_memory_and_disk_sizes_exactly() {
        let mut s = spec(2, "1536Mi", &["10Gi", "512Mi"]);
        s.cpu = Cpu {
            sockets: 2,
            cores: 2,
            threads: 2,
            ..Cpu::default()
        };
        let d = vm_demand(&s).unwrap();
        assert_eq!(
            d,
            Units {
                vms: 1,
                vcpus: 8,
                memory: 1536 << 20,
                storage: (10 << 30) + (512 << 20)
            }
        );
    }

    fn image_disk(size: Option<&str>) -> Disk {
        Disk {
            name: "img".into(),
            bus: Default::default(),
            boot_order: None,
            read_only: false,
            size: size.map(|s| Quantity(s.into())),
            source: DiskSource {
                http: Some(HttpSource {
                    url: "https://images.example.com/a.qcow2".into(),
                    sha256: "0".repeat(64),
                    format: None,
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn an_image_disk_without_a_size_makes_the_demand_an_error_naming_the_disk() {
        let mut s = spec(1, "1Gi", &[]);
        s.disks.push(image_disk(None));
        let err = vm_demand(&s).unwrap_err();
        assert!(matches!(
            err,
            UnitsError::Disk(AccountingError::SizeRequired { .. })
        ));
        assert!(
            err.to_string().contains("disk \"img\" has no size"),
            "{err}"
        );
    }

    #[test]
    fn an_image_disk_counts_its_declared_size() {
        let mut s = spec(1, "1Gi", &["1Gi"]);
        s.disks.push(image_disk(Some("20Gi")));
        assert_eq!(vm_demand(&s).unwrap().storage, 21 << 30);
    }

    #[test]
    fn a_malformed_memory_size_is_an_error_naming_the_field() {
        let mut s = spec(1, "1Gi", &[]);
        s.memory = Memory {
            size: Quantity("lots".into()),
        };
        assert_eq!(
            vm_demand(&s).unwrap_err().to_string(),
            "spec.memory.size is invalid"
        );
    }

    #[test]
    fn limits_parse_and_report_what_is_exceeded() {
        let hard: QuotaLimits = serde_json::from_value(serde_json::json!({
            "virtualMachines": 10, "vcpus": 32, "memory": "64Gi"
        }))
        .unwrap();
        let l = Limits::parse(&hard).unwrap();
        assert_eq!(l.memory, Some(64 << 30));
        assert_eq!(l.storage, None);
        let used = Units {
            vms: 10,
            vcpus: 33,
            memory: 64 << 30,
            storage: 1 << 50,
        };
        assert_eq!(l.exceeded_by(&used), vec![Resource::Vcpus]);
        assert_eq!(l.summary(&used, Resource::Memory), "64Gi/64Gi");
        assert_eq!(l.summary(&used, Resource::Storage), "1Pi/-");
    }

    #[test]
    fn negative_limits_are_rejected() {
        let hard = QuotaLimits {
            vcpus: Some(-1),
            ..Default::default()
        };
        assert!(matches!(
            Limits::parse(&hard),
            Err(UnitsError::Negative("vcpus"))
        ));
    }

    #[test]
    fn compute_and_non_compute_parts_add_up_to_the_whole() {
        let d = vm_demand(&spec(4, "2Gi", &["1Gi"])).unwrap();
        assert_eq!(d.compute() + d.non_compute(), d);
        assert_eq!(d.compute().vms, 0);
        assert_eq!(d.non_compute().vcpus, 0);
    }
}
