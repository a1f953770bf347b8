//! Migration policies, resolved: which `MigrationPolicy` settings apply to one migration
//! ([`resolve`]), the cluster-wide limits ([`limits`]) and whether one more migration may
//! start under them ([`admit`]). Pure: policies, the VM and the other migrations in, a
//! decision out; the controller does the reading and writing.

use ironvisor_crds::migration::{MigrationPhase, VirtualMachineMigration};
use ironvisor_crds::migration_policy::{
    AppliedPolicy, CLUSTER_POLICY, DEFAULT_COMPLETION_TIMEOUT_PER_GIB,
    DEFAULT_PARALLEL_OUTBOUND_PER_HOST, DEFAULT_PARALLEL_PER_CLUSTER, MigrationPolicy,
    MigrationPolicySpec,
};
use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::vm::VirtualMachine;
use kube::ResourceExt;

/// Pending reason: the cluster runs as many migrations as its policy allows.
pub const REASON_CLUSTER_LIMIT: &str = "ClusterLimit";
/// Pending reason: the VM's host sends as many migrations as the policy allows.
pub const REASON_HOST_LIMIT: &str = "HostLimit";

const GIB: i128 = 1 << 30;

/// The cluster-wide limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Migrations past `Pending` in the cluster.
    pub per_cluster: u32,
    /// Migrations past `Pending` leaving one host.
    pub outbound_per_host: u32,
}

fn cluster_policy(policies: &[MigrationPolicy]) -> Option<&MigrationPolicy> {
    policies.iter().find(|p| p.name_any() == CLUSTER_POLICY)
}

/// The limits of the `default` policy, or KubeVirt's defaults (5 and 2).
pub fn limits(policies: &[MigrationPolicy]) -> Limits {
    let spec = cluster_policy(policies).map(|p| &p.spec);
    Limits {
        per_cluster: spec
            .and_then(|s| s.parallel_migrations_per_cluster)
            .unwrap_or(DEFAULT_PARALLEL_PER_CLUSTER),
        outbound_per_host: spec
            .and_then(|s| s.parallel_outbound_migrations_per_host)
            .unwrap_or(DEFAULT_PARALLEL_OUTBOUND_PER_HOST),
    }
}

/// How specific a policy is for `vm`, when it selects it: (labels, namespaces named).
fn specificity(p: &MigrationPolicy, vm: &VirtualMachine) -> Option<(usize, usize)> {
    let Some(sel) = &p.spec.selector else {
        return Some((0, 0));
    };
    let ns = vm.namespace().unwrap_or_default();
    if !sel.namespaces.is_empty() && !sel.namespaces.contains(&ns) {
        return None;
    }
    let labels = vm.labels();
    if !sel
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return None;
    }
    Some((
        sel.match_labels.len(),
        usize::from(!sel.namespaces.is_empty()),
    ))
}

/// The VM's memory plus the sizes of its disks, in whole GiB, at least one.
fn data_gib(vm: &VirtualMachine) -> u64 {
    let memory = to_bytes(&vm.spec.memory.size.0).unwrap_or(0);
    let disks: i128 = vm
        .spec
        .disks
        .iter()
        .filter_map(|d| d.size.as_ref())
        .filter_map(|q| to_bytes(&q.0).ok())
        .sum();
    let total = (memory + disks).max(GIB);
    u64::try_from((total + GIB - 1) / GIB).unwrap_or(u64::MAX)
}

/// What applies to a migration of `vm`: the `default` policy, then the most specific other
/// policy selecting the VM, then the migration's own `bandwidthMibPerSecond` and
/// `completionTimeoutSeconds`.
pub fn resolve(
    policies: &[MigrationPolicy],
    vm: &VirtualMachine,
    m: &VirtualMachineMigration,
) -> AppliedPolicy {
    let mut layers: Vec<&MigrationPolicy> = cluster_policy(policies).into_iter().collect();
    let best = policies
        .iter()
        .filter(|p| p.name_any() != CLUSTER_POLICY)
        .filter_map(|p| Some((specificity(p, vm)?, p)))
        // Most specific first; equal ones by name, the first in order wins.
        .max_by(|(a, pa), (b, pb)| a.cmp(b).then_with(|| pb.name_any().cmp(&pa.name_any())));
    layers.extend(best.map(|(_, p)| p));
    let pick = |f: &dyn Fn(&MigrationPolicySpec) -> Option<u64>| {
        layers.iter().rev().find_map(|p| f(&p.spec))
    };
    let flag = |f: &dyn Fn(&MigrationPolicySpec) -> Option<bool>| {
        layers
            .iter()
            .rev()
            .find_map(|p| f(&p.spec))
            .unwrap_or(false)
    };
    let per_gib = pick(&|s| s.completion_timeout_per_gib_seconds)
        .unwrap_or(DEFAULT_COMPLETION_TIMEOUT_PER_GIB);
    AppliedPolicy {
        policies: layers.iter().map(|p| p.name_any()).collect(),
        bandwidth_mib_per_second: m
            .spec
            .bandwidth_mib_per_second
            .or_else(|| pick(&|s| s.bandwidth_mib_per_second)),
        completion_timeout_seconds: m
            .spec
            .completion_timeout_seconds
            .unwrap_or_else(|| per_gib.saturating_mul(data_gib(vm))),
        max_downtime_milliseconds: pick(&|s| s.max_downtime_milliseconds),
        auto_converge: flag(&|s| s.allow_auto_converge),
        post_copy: flag(&|s| s.allow_post_copy),
        compression: flag(&|s| s.compression),
    }
}

/// Whether a migration holds one of the limited places: past `Pending`, not over.
pub fn holds_a_place(m: &VirtualMachineMigration) -> bool {
    let phase = m.status.as_ref().map(|s| s.phase).unwrap_or_default();
    phase != MigrationPhase::Pending && !phase.is_terminal()
}

/// Why a migration waits for a place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// `ClusterLimit` or `HostLimit`.
    pub reason: &'static str,
    /// What it waits for.
    pub message: String,
}

/// Whether one more migration leaving `source` may start, given every migration in the
/// cluster (`me` by uid is not counted).
pub fn admit(
    all: &[VirtualMachineMigration],
    me: &str,
    source: &str,
    limits: Limits,
) -> Result<(), Wait> {
    let active: Vec<&VirtualMachineMigration> = all
        .iter()
        .filter(|m| m.metadata.uid.as_deref() != Some(me) && holds_a_place(m))
        .collect();
    let cluster = active.len();
    if cluster >= limits.per_cluster as usize {
        return Err(Wait {
            reason: REASON_CLUSTER_LIMIT,
            message: format!(
                "waiting: {cluster} migrations run in the cluster, the policy allows {} at once",
                limits.per_cluster
            ),
        });
    }
    let outbound = active
        .iter()
        .filter(|m| m.status.as_ref().and_then(|s| s.source_node.as_deref()) == Some(source))
        .count();
    if outbound >= limits.outbound_per_host as usize {
        return Err(Wait {
            reason: REASON_HOST_LIMIT,
            message: format!(
                "waiting: {outbound} migrations leave {source}, the policy allows {} per host at once",
                limits.outbound_per_host
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::migration::VirtualMachineMigrationStatus;
    use ironvisor_crds::migration_policy::PolicySelector;
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> MigrationPolicy {
        let spec: MigrationPolicySpec = serde_json::from_value(spec).unwrap();
        MigrationPolicy::new(name, spec)
    }

    fn vm(ns: &str, labels: serde_json::Value, memory: &str) -> VirtualMachine {
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": ns, "labels": labels},
            "spec": {"cpu": {"cores": 1}, "memory": {"size": memory}}
        }))
        .unwrap()
    }

    fn migration(spec: serde_json::Value) -> VirtualMachineMigration {
        let mut s = json!({"vmName": "web"});
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        VirtualMachineMigration::new("m", serde_json::from_value(s).unwrap())
    }

    #[test]
    fn with_no_policy_kubevirts_defaults_apply() {
        let a = resolve(&[], &vm("a", json!({}), "128Mi"), &migration(json!({})));
        assert_eq!(
            a,
            AppliedPolicy {
                completion_timeout_seconds: 150,
                ..AppliedPolicy::default()
            }
        );
        assert_eq!(
            limits(&[]),
            Limits {
                per_cluster: 5,
                outbound_per_host: 2
            }
        );
    }

    #[test]
    fn the_timeout_grows_with_memory_and_disks_by_whole_gib() {
        let mut v = vm("a", json!({}), "3Gi");
        assert_eq!(
            resolve(&[], &v, &migration(json!({}))).completion_timeout_seconds,
            450
        );
        v.spec.disks = serde_json::from_value(
            json!([{"name": "data", "size": "1536Mi", "source": {"blank": {}}}]),
        )
        .unwrap();
        // 3 GiB + 1.5 GiB rounds up to 5.
        let p = [policy(
            "default",
            json!({"completionTimeoutPerGibSeconds": 10}),
        )];
        assert_eq!(
            resolve(&p, &v, &migration(json!({}))).completion_timeout_seconds,
            50
        );
    }

    #[test]
    fn the_most_specific_selecting_policy_overrides_the_default_and_the_migration_overrides_both() {
        let p = [
            policy(
                "default",
                json!({"bandwidthMibPerSecond": 100, "allowAutoConverge": true, "maxDowntimeMilliseconds": 300}),
            ),
            policy(
                "db",
                json!({"selector": {"matchLabels": {"tier": "db"}}, "bandwidthMibPerSecond": 20, "allowPostCopy": true}),
            ),
            policy(
                "db-prod",
                json!({"selector": {"namespaces": ["prod"], "matchLabels": {"tier": "db"}}, "allowAutoConverge": false}),
            ),
            policy(
                "other",
                json!({"selector": {"matchLabels": {"tier": "web"}}, "compression": true}),
            ),
        ];
        let db_prod = vm("prod", json!({"tier": "db"}), "1Gi");
        let a = resolve(&p, &db_prod, &migration(json!({})));
        assert_eq!(a.policies, ["default", "db-prod"]);
        // db-prod says nothing of bandwidth or post-copy: the default's, not db's.
        assert_eq!(a.bandwidth_mib_per_second, Some(100));
        assert!(!a.post_copy && !a.auto_converge && !a.compression);
        assert_eq!(a.max_downtime_milliseconds, Some(300));

        let db = vm("dev", json!({"tier": "db"}), "1Gi");
        let a = resolve(&p, &db, &migration(json!({})));
        assert_eq!(a.policies, ["default", "db"]);
        assert_eq!(a.bandwidth_mib_per_second, Some(20));
        assert!(a.post_copy && a.auto_converge);

        let a = resolve(
            &p,
            &db,
            &migration(json!({"bandwidthMibPerSecond": 1, "completionTimeoutSeconds": 7})),
        );
        assert_eq!(a.bandwidth_mib_per_second, Some(1));
        assert_eq!(a.completion_timeout_seconds, 7);
    }

    #[test]
    fn a_policy_selecting_nothing_of_the_vm_does_not_apply() {
        let p = [policy(
            "web",
            json!({"selector": {"namespaces": ["a"], "matchLabels": {"tier": "web"}}, "compression": true}),
        )];
        for v in [
            vm("b", json!({"tier": "web"}), "1Gi"),
            vm("a", json!({"tier": "db"}), "1Gi"),
            vm("a", json!({}), "1Gi"),
        ] {
            let a = resolve(&p, &v, &migration(json!({})));
            assert!(a.policies.is_empty() && !a.compression, "{a:?}");
        }
        assert!(
            resolve(
                &p,
                &vm("a", json!({"tier": "web", "x": "y"}), "1Gi"),
                &migration(json!({}))
            )
            .compression
        );
    }

    #[test]
    fn equally_specific_policies_are_decided_by_name() {
        let sel = Some(PolicySelector::default());
        let mut b = policy("b", json!({"compression": false}));
        let mut a = policy("a", json!({"compression": true}));
        a.spec.selector = sel.clone();
        b.spec.selector = sel;
        for order in [[a.clone(), b.clone()], [b, a]] {
            let r = resolve(&order, &vm("x", json!({}), "1Gi"), &migration(json!({})));
            assert_eq!(r.policies, ["a"]);
        }
    }

    fn active(uid: &str, source: &str, phase: MigrationPhase) -> VirtualMachineMigration {
        let mut m = migration(json!({}));
        m.metadata.uid = Some(uid.into());
        m.status = Some(VirtualMachineMigrationStatus {
            phase,
            source_node: Some(source.into()),
            ..Default::default()
        });
        m
    }

    #[test]
    fn the_cluster_and_host_limits_count_migrations_past_pending_only() {
        use MigrationPhase::*;
        let lim = Limits {
            per_cluster: 3,
            outbound_per_host: 2,
        };
        let all = vec![
            active("1", "h1", Migrating),
            active("2", "h1", PreparingTarget),
            active("3", "h2", Pending),
            active("4", "h2", Completed),
            active("5", "h2", Failed),
        ];
        let w = admit(&all, "me", "h1", lim).unwrap_err();
        assert_eq!(w.reason, REASON_HOST_LIMIT);
        assert!(w.message.contains("2 migrations leave h1"), "{}", w.message);
        assert_eq!(admit(&all, "me", "h2", lim), Ok(()));
        // Itself is not counted (a retried admission of a migration already past Pending).
        assert_eq!(admit(&all, "1", "h1", lim), Ok(()));
        let mut more = all.clone();
        more.push(active("6", "h3", Scheduling));
        let w = admit(&more, "me", "h2", lim).unwrap_err();
        assert_eq!(w.reason, REASON_CLUSTER_LIMIT);
        let one = Limits {
            per_cluster: 1,
            outbound_per_host: 2,
        };
        assert_eq!(admit(&[], "me", "h1", one), Ok(()));
        assert_eq!(
            admit(&[active("1", "h9", Migrating)], "me", "h1", one)
                .unwrap_err()
                .reason,
            REASON_CLUSTER_LIMIT
        );
    }

    #[test]
    fn limits_come_from_the_default_policy_only() {
        let p = [
            policy("default", json!({"parallelMigrationsPerCluster": 1})),
            policy("x", json!({"parallelOutboundMigrationsPerHost": 9})),
        ];
        assert_eq!(
            limits(&p),
            Limits {
                per_cluster: 1,
                outbound_per_host: 2
            }
        );
    }
}
