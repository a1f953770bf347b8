//! VMs on their way to another host: a live migration past scheduling reserves the VM's
//! compute on its target until it ends, so the planner does not give that room to a new VM
//! during the copy (the VM is placed on its source until QEMU completes). Fed by the
//! migration watch; the reservation goes when the migration ends or is deleted.

use ironvisor_crds::migration::{MigrationPhase, VirtualMachineMigration};
use kube::ResourceExt;

use super::{Index, VmKey};

/// The target a migration reserves room on, when it reserves any.
fn reservation(m: &VirtualMachineMigration) -> Option<(VmKey, String)> {
    let s = m.status.as_ref()?;
    if !matches!(
        s.phase,
        MigrationPhase::PreparingTarget | MigrationPhase::Migrating
    ) {
        return None;
    }
    let key = VmKey {
        namespace: m.namespace().unwrap_or_default(),
        name: m.spec.vm_name.clone(),
    };
    Some((key, s.target_node.clone()?))
}

fn migration_key(m: &VirtualMachineMigration) -> String {
    format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any())
}

impl Index {
    /// A migration was added or changed.
    pub fn apply_migration(&mut self, m: &VirtualMachineMigration) {
        match reservation(m) {
            Some(r) => {
                self.incoming.insert(migration_key(m), r);
            }
            None => {
                self.incoming.remove(&migration_key(m));
            }
        }
    }

    /// A migration is gone.
    pub fn delete_migration(&mut self, m: &VirtualMachineMigration) {
        self.incoming.remove(&migration_key(m));
    }

    /// The migration watch restarted.
    pub fn reset_migrations<'a>(
        &mut self,
        all: impl IntoIterator<Item = &'a VirtualMachineMigration>,
    ) {
        self.incoming.clear();
        for m in all {
            self.apply_migration(m);
        }
    }

    /// VMs with room reserved on another host: (VM, target).
    pub fn incoming(&self) -> impl Iterator<Item = &(VmKey, String)> {
        self.incoming.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::migration::VirtualMachineMigrationStatus;

    fn m(name: &str, phase: MigrationPhase, target: Option<&str>) -> VirtualMachineMigration {
        let mut m = VirtualMachineMigration::new(
            name,
            serde_json::from_value(serde_json::json!({"vmName": "web"})).unwrap(),
        );
        m.metadata.namespace = Some("a".into());
        m.status = Some(VirtualMachineMigrationStatus {
            phase,
            target_node: target.map(str::to_owned),
            ..Default::default()
        });
        m
    }

    #[test]
    fn room_is_reserved_from_preparing_the_target_until_the_end() {
        use MigrationPhase::*;
        let mut ix = Index::new();
        ix.apply_migration(&m("x", Scheduling, None));
        assert_eq!(ix.incoming().count(), 0);
        ix.apply_migration(&m("x", PreparingTarget, Some("h2")));
        let r: Vec<_> = ix.incoming().cloned().collect();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.name.as_str(), r[0].1.as_str()), ("web", "h2"));
        ix.apply_migration(&m("x", Migrating, Some("h2")));
        assert_eq!(ix.incoming().count(), 1);
        for end in [Completed, Failed, Cancelled] {
            let mut j = ix.clone();
            j.apply_migration(&m("x", end, Some("h2")));
            assert_eq!(j.incoming().count(), 0, "{end:?}");
        }
        ix.delete_migration(&m("x", Migrating, Some("h2")));
        assert_eq!(ix.incoming().count(), 0);
        ix.reset_migrations([&m("y", Migrating, Some("h3")), &m("z", Pending, None)]);
        assert_eq!(ix.incoming().count(), 1);
    }
}
