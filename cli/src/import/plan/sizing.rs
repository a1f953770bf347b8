//! Target sizing: vCPUs and disks as configured in vSphere; memory as configured, or
//! right-sized from vMemory's Active figure when `--right-size` is given. CPU is never
//! right-sized: the tabs read carry no per-VM CPU demand a size could be derived from. Pure.

use crate::import::model::SourceVm;

use super::inventory::InvVm;
use super::model::Sizing;
use super::readiness::mib_bytes;

/// Memory is never right-sized below this.
pub const MIN_RIGHT_SIZED_MIB: u64 = 512;
/// Right-sized memory is a multiple of this.
pub const MEMORY_STEP_MIB: u64 = 256;

/// Active × 1.5, rounded up to 256 MiB, at least 512 MiB, never above what was configured.
pub fn right_size_memory(configured_mib: u64, active_mib: u64) -> u64 {
    let wanted = active_mib
        .saturating_mul(3)
        .div_ceil(2)
        .div_ceil(MEMORY_STEP_MIB)
        .saturating_mul(MEMORY_STEP_MIB);
    wanted.max(MIN_RIGHT_SIZED_MIB).min(configured_mib)
}

/// The target size, and the memory right-sizing (from, to) when it changed anything.
pub fn size(vm: &InvVm, src: &SourceVm, right_size: bool) -> (Sizing, Option<(u64, u64)>) {
    let disks_mib: Vec<u64> = src
        .disks
        .iter()
        .filter(|d| !d.raw_device_mapping)
        .map(|d| d.capacity_bytes.unwrap_or(0) >> 20)
        .collect();
    let storage_bytes = disks_mib
        .iter()
        .map(|m| mib_bytes(*m))
        .fold(0u64, u64::saturating_add);
    let in_use = vm.in_use_mib.map(mib_bytes).filter(|b| *b > 0);
    let import_bytes = in_use.unwrap_or(storage_bytes);
    let mut basis = vec![format!(
        "vCPUs, memory and disks as configured in vSphere; import time from {}",
        if in_use.is_some() {
            "vInfo's In Use MiB"
        } else {
            "the disks' full size (no In Use figure)"
        }
    )];
    let mut memory = src.memory_mib;
    let mut changed = None;
    if right_size {
        match vm.memory_active_mib {
            Some(active) if src.memory_mib > 0 => {
                let to = right_size_memory(src.memory_mib, active);
                if to < src.memory_mib {
                    changed = Some((src.memory_mib, to));
                    memory = to;
                    basis.push(format!(
                        "memory right-sized from vMemory Active {active} MiB × 1.5"
                    ));
                }
            }
            _ => basis.push("memory not right-sized: no vMemory Active figure".into()),
        }
    }
    let sizing = Sizing {
        vcpus: src.vcpus,
        cores_per_socket: src.cores_per_socket,
        memory_mib: memory,
        source_memory_mib: src.memory_mib,
        disks_mib,
        storage_bytes,
        import_bytes,
        basis: basis.join("; "),
    };
    (sizing, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_sizing_keeps_headroom_and_bounds() {
        assert_eq!(right_size_memory(16384, 2000), 3072);
        assert_eq!(right_size_memory(16384, 10), 512);
        assert_eq!(right_size_memory(1024, 4000), 1024);
        assert_eq!(right_size_memory(u64::MAX, u64::MAX), 1 << 63);
    }
}
