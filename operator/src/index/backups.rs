//! Backups as placement needs them: which `BackupLocation` each backup was written into,
//! and which hosts report each location available (`status.hosts`, each entry written by
//! that host's agent). A VM whose disks are restored from a backup fits only a host that
//! can read the backup's location. Fed by the backup and location watches; decides nothing.

use std::collections::{BTreeMap, BTreeSet};

use ironvisor_crds::backup::{BackupLocation, VirtualMachineBackup};
use kube::ResourceExt;

use super::Index;
use crate::placement::BackupNeed;

/// Backups and locations, by what placement asks of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupIndex {
    /// (namespace, backup name) → its location's name.
    backups: BTreeMap<(String, String), String>,
    /// Location name → the hosts that report it available.
    locations: BTreeMap<String, BTreeSet<String>>,
}

impl BackupIndex {
    /// The locations the backups `names` (in namespace `ns`) were written into; a backup
    /// the index does not know makes the need unmet by every host.
    pub fn need(&self, ns: &str, names: &BTreeSet<String>) -> BackupNeed {
        let mut need = BackupNeed::default();
        for name in names {
            match self.backups.get(&(ns.to_owned(), name.clone())) {
                Some(loc) => {
                    need.locations.insert(loc.clone());
                }
                None => need.missing = Some(name.clone()),
            }
        }
        need
    }

    /// The locations host `node` reports available.
    pub fn available_on(&self, node: &str) -> BTreeSet<String> {
        self.locations
            .iter()
            .filter(|(_, hosts)| hosts.contains(node))
            .map(|(l, _)| l.clone())
            .collect()
    }
}

fn backup_key(b: &VirtualMachineBackup) -> (String, String) {
    (b.namespace().unwrap_or_default(), b.name_any())
}

impl Index {
    /// A backup was added or changed.
    pub fn apply_backup(&mut self, b: &VirtualMachineBackup) {
        self.backups
            .backups
            .insert(backup_key(b), b.spec.location.clone());
    }

    /// A backup is gone.
    pub fn delete_backup(&mut self, b: &VirtualMachineBackup) {
        self.backups.backups.remove(&backup_key(b));
    }

    /// The backup watch restarted.
    pub fn reset_backups<'a>(&mut self, all: impl IntoIterator<Item = &'a VirtualMachineBackup>) {
        self.backups.backups.clear();
        for b in all {
            self.apply_backup(b);
        }
    }

    /// A location was added or changed.
    pub fn apply_location(&mut self, l: &BackupLocation) {
        let hosts = l
            .status
            .iter()
            .flat_map(|s| &s.hosts)
            .filter(|h| h.available)
            .map(|h| h.node.clone())
            .collect();
        self.backups.locations.insert(l.name_any(), hosts);
    }

    /// A location is gone.
    pub fn delete_location(&mut self, name: &str) {
        self.backups.locations.remove(name);
    }

    /// The location watch restarted.
    pub fn reset_locations<'a>(&mut self, all: impl IntoIterator<Item = &'a BackupLocation>) {
        self.backups.locations.clear();
        for l in all {
            self.apply_location(l);
        }
    }

    /// Backups and locations.
    pub fn backups(&self) -> &BackupIndex {
        &self.backups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::backup::{
        BackupLocationSpec, BackupLocationStatus, LocationOnHost, VirtualMachineBackupSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn backup(ns: &str, name: &str, location: &str) -> VirtualMachineBackup {
        let mut b = VirtualMachineBackup::new(
            name,
            VirtualMachineBackupSpec {
                vm_name: Some("web".into()),
                snapshot_name: None,
                location: location.into(),
            },
        );
        b.metadata.namespace = Some(ns.into());
        b
    }

    fn location(name: &str, hosts: &[(&str, bool)]) -> BackupLocation {
        let mut l = BackupLocation::new(
            name,
            BackupLocationSpec {
                path: "/mnt/backups".into(),
                nfs: None,
                bandwidth_limit: None,
            },
        );
        l.status = Some(BackupLocationStatus {
            hosts: hosts
                .iter()
                .map(|(node, available)| LocationOnHost {
                    node: (*node).into(),
                    available: *available,
                    reason: String::new(),
                    message: String::new(),
                    free_bytes: None,
                    last_check_time: Time(Default::default()),
                })
                .collect(),
        });
        l
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_backup_needs_its_location_and_only_hosts_reporting_it_available_have_it() {
        let mut ix = Index::new();
        ix.reset_backups([&backup("team-a", "nightly", "nfs")]);
        ix.reset_locations([&location("nfs", &[("h1", true), ("h2", false)])]);
        let need = ix.backups().need("team-a", &names(&["nightly"]));
        assert_eq!(need.locations, names(&["nfs"]));
        assert_eq!(need.missing, None);
        assert_eq!(ix.backups().available_on("h1"), names(&["nfs"]));
        assert!(ix.backups().available_on("h2").is_empty());
        assert!(ix.backups().available_on("h3").is_empty());
        // The agent of h2 reports it mounted now; h1's check failed.
        ix.apply_location(&location("nfs", &[("h1", false), ("h2", true)]));
        assert_eq!(ix.backups().available_on("h2"), names(&["nfs"]));
        assert!(ix.backups().available_on("h1").is_empty());
        ix.delete_location("nfs");
        assert!(ix.backups().available_on("h2").is_empty());
    }

    #[test]
    fn a_backup_of_another_namespace_or_a_deleted_one_is_missing() {
        let mut ix = Index::new();
        let b = backup("team-a", "nightly", "nfs");
        ix.apply_backup(&b);
        let need = ix.backups().need("team-b", &names(&["nightly"]));
        assert_eq!(need.missing.as_deref(), Some("nightly"));
        ix.delete_backup(&b);
        let need = ix.backups().need("team-a", &names(&["nightly"]));
        assert_eq!(need.missing.as_deref(), Some("nightly"));
        assert!(ix.backups().need("team-a", &names(&[])).is_empty());
    }
}
