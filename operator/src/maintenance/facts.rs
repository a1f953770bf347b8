//! The drain's facts from the API objects: which VMs are on the host, which migrations move
//! them, which of this drain's failed, how many it moved. Pure.

use ironvisor_crds::maintenance::DRAIN_LABEL;
use ironvisor_crds::migration::{MigrationPhase, VirtualMachineMigration};
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::plan::VmFacts;

/// Whether `m` was made by the drain of `host` that began at `since` (a migration of an
/// earlier drain of the same host does not count).
fn of_this_drain(m: &VirtualMachineMigration, host: &str, since: Option<&Time>) -> bool {
    let created = m
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    m.labels().get(DRAIN_LABEL).map(String::as_str) == Some(host)
        && match (since, created) {
            (Some(s), Some(c)) => c >= s.0.as_second(),
            _ => true,
        }
}

fn phase(m: &VirtualMachineMigration) -> MigrationPhase {
    m.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn is_of(m: &VirtualMachineMigration, vm: &VirtualMachine) -> bool {
    m.namespace() == vm.namespace()
        && m.spec.vm_name == vm.name_any()
        && m.status
            .as_ref()
            .and_then(|s| s.vm_uid.as_ref())
            .is_none_or(|u| vm.metadata.uid.as_ref() == Some(u))
}

/// The facts of every live VM placed on `host`.
pub fn vm_facts(
    host: &str,
    since: Option<&Time>,
    vms: &[VirtualMachine],
    migrations: &[VirtualMachineMigration],
) -> Vec<VmFacts> {
    vms.iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .filter(|v| v.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(host))
        .map(|v| {
            let mine: Vec<&VirtualMachineMigration> =
                migrations.iter().filter(|m| is_of(m, v)).collect();
            let active = mine
                .iter()
                .filter(|m| m.metadata.deletion_timestamp.is_none() && !phase(m).is_terminal())
                .map(|m| m.name_any())
                .min();
            let mut failed: Vec<&&VirtualMachineMigration> = mine
                .iter()
                .filter(|m| of_this_drain(m, host, since))
                .filter(|m| matches!(phase(m), MigrationPhase::Failed | MigrationPhase::Cancelled))
                .collect();
            failed.sort_by_key(|m| m.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let last_failure = failed.last().and_then(|m| {
                let s = m.status.as_ref()?;
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| format!("{}: {}", m.name_any(), c.message))
            });
            VmFacts {
                namespace: v.namespace().unwrap_or_default(),
                name: v.name_any(),
                phase: v.status.as_ref().and_then(|s| s.phase),
                run_strategy: v.spec.run_strategy,
                strategy: v.spec.drain_strategy,
                active_migration: active,
                failed_attempts: u32::try_from(failed.len()).unwrap_or(u32::MAX),
                last_failure,
                linked_clone: v.spec.has_linked_clone(),
            }
        })
        .collect()
}

/// VMs this drain has moved away: its completed migrations.
pub fn moved(host: &str, since: Option<&Time>, migrations: &[VirtualMachineMigration]) -> u32 {
    let n = migrations
        .iter()
        .filter(|m| of_this_drain(m, host, since) && phase(m) == MigrationPhase::Completed)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(name: &str, node: &str) -> VirtualMachine {
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "t", "uid": format!("u-{name}")},
            "spec": {"memory": {"size": "128Mi"}},
            "status": {"nodeName": node, "phase": "Running"}
        }))
        .unwrap()
    }

    fn mig(
        name: &str,
        vm: &str,
        drain: Option<&str>,
        phase: &str,
        at: &str,
    ) -> VirtualMachineMigration {
        let labels = drain.map_or(json!({}), |h| json!({DRAIN_LABEL: h}));
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachineMigration",
            "metadata": {"name": name, "namespace": "t", "labels": labels, "creationTimestamp": at},
            "spec": {"vmName": vm},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "False",
                "reason": "MigrationFailed", "message": "target died", "lastTransitionTime": at}]}
        }))
        .unwrap()
    }

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn only_vms_of_the_host_count_with_their_active_and_failed_migrations() {
        let vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h2")];
        let since = t("2026-11-30T10:00:00Z");
        let migs = [
            mig("a-old", "a", Some("h1"), "Failed", "2026-11-29T10:00:00Z"),
            mig("a-1", "a", Some("h1"), "Failed", "2026-11-30T10:00:01Z"),
            mig("a-2", "a", Some("h1"), "Migrating", "2026-11-30T10:00:02Z"),
            mig("b-user", "b", None, "Failed", "2026-11-30T10:00:03Z"),
            mig("c-1", "c", Some("h1"), "Completed", "2026-11-30T10:00:04Z"),
        ];
        let f = vm_facts("h1", Some(&since), &vms, &migs);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].active_migration.as_deref(), Some("a-2"));
        assert_eq!(
            f[0].failed_attempts, 1,
            "the earlier drain's failure does not count"
        );
        assert_eq!(f[0].last_failure.as_deref(), Some("a-1: target died"));
        assert_eq!(f[1].active_migration, None);
        assert_eq!(
            f[1].failed_attempts, 0,
            "a user's failed migration is not the drain's"
        );
        assert_eq!(moved("h1", Some(&since), &migs), 1);
    }
}
