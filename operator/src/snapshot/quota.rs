//! Snapshot storage in the tenant's quota: one rule with disks.
//!
//! A snapshot freezes one qcow2 layer per disk, and each layer can grow to its disk's
//! declared (virtual) size before the snapshot is taken: so a snapshot counts the sum of
//! [`accounted_bytes`] over the VM's disks, exactly what the VM's disks count. A retained
//! snapshot counts after its VM is gone.

use ironvisor_crds::vm::{AccountingError, VirtualMachineSpec, accounted_bytes};

use crate::quota::{Exceeded, Ledger, NoTenant};
use crate::units::Units;

/// Why a snapshot is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotRefusal {
    /// A disk of the VM cannot be counted.
    #[error(transparent)]
    Disk(#[from] AccountingError),
    /// The namespace has no tenant.
    #[error(transparent)]
    NoTenant(#[from] NoTenant),
    /// The storage quota has no room.
    #[error("{0} (snapshot layers count the declared size of every disk of the VM, as disks do)")]
    Exceeded(Exceeded),
}

/// What a snapshot of a VM with this spec counts: storage only.
pub fn snapshot_demand(spec: &VirtualMachineSpec) -> Result<Units, AccountingError> {
    let mut storage: i128 = 0;
    for disk in &spec.disks {
        storage = storage.saturating_add(accounted_bytes(disk)?);
    }
    Ok(Units {
        storage,
        ..Units::default()
    })
}

/// Whether a snapshot of `spec` in `namespace` fits every storage quota over it, given a
/// ledger that already counts the tenant's VMs and snapshots.
pub fn admit_snapshot(
    ledger: &Ledger,
    namespace: &str,
    spec: &VirtualMachineSpec,
) -> Result<Units, SnapshotRefusal> {
    let demand = snapshot_demand(spec)?;
    ledger.tenant_of(namespace)?;
    ledger
        .check(namespace, &demand)
        .map_err(SnapshotRefusal::Exceeded)?;
    Ok(demand)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::tree::tests::node;
    use crate::quota::{QuotaEntry, TenantTree};
    use crate::units::Limits;

    fn spec(disks: &[&str]) -> VirtualMachineSpec {
        let disks: Vec<_> = disks
            .iter()
            .enumerate()
            .map(|(i, size)| {
                serde_json::json!({"name": format!("d{i}"), "size": size, "source": {"blank": {}}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"memory": {"size": "64Mi"}, "disks": disks}))
            .unwrap()
    }

    fn ledger(storage: i128) -> Ledger {
        Ledger::new(
            TenantTree::new([node("team-a", None, &["team-a"], 1)]),
            vec![QuotaEntry {
                name: "team-a-storage".into(),
                tenant: "team-a".into(),
                limits: Limits {
                    storage: Some(storage),
                    ..Limits::default()
                },
            }],
        )
    }

    #[test]
    fn a_snapshot_counts_every_disk_by_its_declared_size() {
        let d = snapshot_demand(&spec(&["1Gi", "512Mi"])).unwrap();
        assert_eq!(d.storage, (1 << 30) + (512 << 20));
        assert_eq!((d.vms, d.vcpus, d.memory), (0, 0, 0));
    }

    #[test]
    fn a_snapshot_that_fits_is_admitted_with_its_demand() {
        let mut l = ledger(4 << 30);
        l.add("team-a", snapshot_demand(&spec(&["2Gi"])).unwrap());
        assert_eq!(
            admit_snapshot(&l, "team-a", &spec(&["2Gi"]))
                .unwrap()
                .storage,
            2 << 30
        );
    }

    #[test]
    fn a_full_quota_refuses_a_snapshot_with_a_resource_quota_message() {
        let mut l = ledger(4 << 30);
        // The VM's own disk, and one snapshot of it already.
        l.add("team-a", snapshot_demand(&spec(&["2Gi"])).unwrap());
        l.add("team-a", snapshot_demand(&spec(&["2Gi"])).unwrap());
        let e = admit_snapshot(&l, "team-a", &spec(&["2Gi"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "exceeded quota: team-a-storage, requested: storage=2Gi, used: storage=4Gi, \
             limited: storage=4Gi (snapshot layers count the declared size of every disk of \
             the VM, as disks do)"
        );
    }

    #[test]
    fn a_vm_with_an_uncountable_disk_cannot_be_snapshotted() {
        let mut s = spec(&["1Gi"]);
        s.disks[0].size = None;
        assert!(matches!(
            admit_snapshot(&ledger(1 << 40), "team-a", &s),
            Err(SnapshotRefusal::Disk(_))
        ));
    }

    #[test]
    fn a_namespace_without_a_tenant_is_refused() {
        assert!(matches!(
            admit_snapshot(&ledger(1 << 40), "elsewhere", &spec(&["1Gi"])),
            Err(SnapshotRefusal::NoTenant(_))
        ));
    }
}
