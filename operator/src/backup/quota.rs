//! Backup storage in the tenant's quota: the same rule as disks and snapshots. A backup holds
//! one standalone image per disk, each of which can be as large as the disk's declared
//! (virtual) size, so it counts the sum of the declared sizes while it is being written or
//! kept; a failed one holds nothing.

use ironvisor_crds::backup::{BackupPhase, VirtualMachineBackup};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::quota::Ledger;
use crate::snapshot::quota::snapshot_demand;

/// Whether a backup in this phase holds storage.
pub fn holds_storage(phase: BackupPhase) -> bool {
    matches!(phase, BackupPhase::InProgress | BackupPhase::Succeeded)
}

/// Add every backup that holds storage (but `except`) to the ledger.
pub async fn count_backups(
    client: &Client,
    ledger: &mut Ledger,
    except: &str,
) -> Result<(), kube::Error> {
    for b in Api::<VirtualMachineBackup>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let Some(st) = b.status.as_ref() else {
            continue;
        };
        if !holds_storage(st.phase) || b.uid().as_deref() == Some(except) {
            continue;
        }
        if let Some(u) = st.vm_spec.as_ref().and_then(|s| snapshot_demand(s).ok()) {
            ledger.add(&b.namespace().unwrap_or_default(), u);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backups_being_written_or_kept_hold_storage() {
        use BackupPhase::*;
        for (p, holds) in [
            (Pending, false),
            (InProgress, true),
            (Succeeded, true),
            (Failed, false),
        ] {
            assert_eq!(holds_storage(p), holds, "{p:?}");
        }
    }
}
