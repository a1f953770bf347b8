//! One lock per VM around every change of its layer tree: taking a snapshot, settling the
//! tree after a delete (merges and removals), returning the disks to a snapshot.
//!
//! The tree's owners come from the API (each snapshot's `status.disks[].layer`), and a
//! snapshot being taken has frozen its layer some time before its status names it. A settle
//! running in that window saw the frozen layer owned by nobody with one child and merged the
//! new active layer into it — the new snapshot's point in time was gone (seen in the
//! scheduled-snapshot test under load). Under this lock a settle starts only after the take
//! has written its status, and a take only after the settle's merges ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OwnedMutexGuard;

/// The locks, by VM uid.
#[derive(Default)]
pub struct LayerLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl LayerLocks {
    /// Wait for, and hold until the guard drops, the lock of the VM with uid `vm_uid`.
    pub async fn lock(&self, vm_uid: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // Locks nobody holds or waits for go: the map stays the size of the VMs busy now.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(vm_uid.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_vm_waits_for_the_holder_and_another_vm_does_not() {
        let locks = Arc::new(LayerLocks::default());
        let held = locks.lock("a").await;
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock("b")).await;
        assert!(other.is_ok(), "another VM's lock is free");
        let l = locks.clone();
        let same = tokio::spawn(async move { l.lock("a").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!same.is_finished(), "the same VM waits for the holder");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), same)
            .await
            .expect("the waiter gets the lock once it is released")
            .unwrap();
        drop(other);
        let _ = locks.lock("c").await;
        assert_eq!(locks.0.lock().unwrap().len(), 1, "idle locks are dropped");
    }
}
