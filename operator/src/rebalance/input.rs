//! From API objects to the decision's inputs: which hosts take part (Ready, schedulable,
//! healthy, with a fresh load report taken after the last migration touching them), the
//! running VMs on them with their measured load, each VM's last move, and the budget left.
//! Pure: objects and the time in, figures (or why to wait) out.

use std::collections::BTreeMap;

use ironvisor_crds::Hypervisor;
use ironvisor_crds::migration::VirtualMachineMigration;
use ironvisor_crds::rebalance::{
    MADE_BY_LABEL, MADE_BY_REBALANCER, OPT_OUT_ANNOTATION, RebalancePolicy, RecentMove,
};
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use ironvisor_crds::vm::{Phase, VirtualMachine};
use jiff::{SignedDuration, Timestamp};

use super::decide::{Host, Settings, Vm};
use crate::hosts;
use crate::migration::target::{cpu_compatible, request, snapshot};

/// A load report older than this is stale: its host takes no part.
pub const STALE_AFTER: SignedDuration = SignedDuration::from_secs(60);
/// The budget is per rolling hour.
const HOUR: SignedDuration = SignedDuration::from_hours(1);

/// Everything the decision needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// The hosts that take part.
    pub hosts: Vec<Host>,
    /// The running VMs on them.
    pub vms: Vec<Vm>,
    /// The policy's knobs.
    pub settings: Settings,
    /// The moves of the last hour and of the cool-down (for the status).
    pub recent: Vec<RecentMove>,
    /// Moves made in the last hour.
    pub moves_in_last_hour: u32,
}

/// Why the cluster is not evaluated now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Wait {
    /// A migration runs: loads are in flux.
    #[error("migration {0} is running; evaluating once it ends")]
    MigrationRunning(String),
    /// A host's load was measured (partly) before a migration touching it ended.
    #[error("waiting for a load report of {host} measured after migration {migration} ended")]
    StaleAfterMigration {
        /// The host.
        host: String,
        /// The migration.
        migration: String,
    },
}

fn ts(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    t.0
}

fn migration_key(m: &VirtualMachineMigration) -> String {
    format!(
        "{}/{}",
        m.metadata.namespace.as_deref().unwrap_or_default(),
        m.metadata.name.as_deref().unwrap_or_default()
    )
}

/// When a host's load interval began and when it was sampled, if it has a fresh report.
fn load_window(hv: &Hypervisor, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
    let load = hv.status.as_ref()?.load.as_ref()?;
    let at = load.sampled_at.as_ref().map(ts)?;
    if now.duration_since(at) > STALE_AFTER || load.interval_milliseconds == 0 {
        return None;
    }
    let len = SignedDuration::from_millis(i64::try_from(load.interval_milliseconds).ok()?);
    Some((at.checked_sub(len).ok()?, at))
}

/// Whether `hv` can take part: Ready, schedulable, healthy, a fresh load report.
fn takes_part(hv: &Hypervisor, now: Timestamp) -> bool {
    hosts::ready_condition(hv).is_some_and(|(s, _)| s == "True")
        && !hv.spec.unschedulable
        && hosts::unhealthy(hv).is_none()
        && load_window(hv, now).is_some()
}

/// Wait while a migration runs, or until every taking-part host touched by the last
/// migrations reported a load measured entirely after they ended.
pub fn settled(
    hypervisors: &[Hypervisor],
    migrations: &[VirtualMachineMigration],
    now: Timestamp,
) -> Result<(), Wait> {
    for m in migrations {
        let status = m.status.clone().unwrap_or_default();
        if !status.phase.is_terminal() {
            return Err(Wait::MigrationRunning(migration_key(m)));
        }
        let Some(done) = status.completion_time.as_ref().map(ts) else {
            continue;
        };
        for host in [status.source_node, status.target_node]
            .into_iter()
            .flatten()
        {
            let Some(hv) = hypervisors
                .iter()
                .find(|h| h.metadata.name.as_deref() == Some(host.as_str()))
            else {
                continue;
            };
            if let Some((start, _)) = load_window(hv, now)
                && start < done
            {
                return Err(Wait::StaleAfterMigration {
                    host,
                    migration: migration_key(m),
                });
            }
        }
    }
    Ok(())
}

/// The moves of the rebalancer in the last hour or the cool-down: those recorded in the
/// policy's status and those its labelled migrations show, once each.
pub fn recent_moves(
    policy: &RebalancePolicy,
    migrations: &[VirtualMachineMigration],
    now: Timestamp,
    cooldown: SignedDuration,
) -> Vec<RecentMove> {
    let keep = HOUR.max(cooldown);
    let mut out: BTreeMap<(String, String), RecentMove> = BTreeMap::new();
    let recorded = policy.status.iter().flat_map(|s| s.recent_moves.iter());
    for r in recorded.cloned() {
        out.insert((r.namespace.clone(), r.migration.clone()), r);
    }
    for m in migrations {
        let by_us = m
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MADE_BY_LABEL))
            .map(String::as_str)
            == Some(MADE_BY_REBALANCER);
        let (Some(ns), Some(name), Some(t)) = (
            m.metadata.namespace.clone(),
            m.metadata.name.clone(),
            m.metadata.creation_timestamp.clone(),
        ) else {
            continue;
        };
        if by_us {
            out.entry((ns.clone(), name.clone()))
                .or_insert_with(|| RecentMove {
                    namespace: ns,
                    vm: m.spec.vm_name.clone(),
                    migration: name,
                    time: t,
                });
        }
    }
    let mut v: Vec<RecentMove> = out
        .into_values()
        .filter(|r| now.duration_since(r.time.0) < keep)
        .collect();
    v.sort_by(|a, b| {
        a.time
            .0
            .cmp(&b.time.0)
            .then_with(|| a.migration.cmp(&b.migration))
    });
    v
}

/// When each VM (namespace, name) last started a migration of any kind.
fn last_moves(
    migrations: &[VirtualMachineMigration],
    recent: &[RecentMove],
) -> BTreeMap<(String, String), Timestamp> {
    let mut out: BTreeMap<(String, String), Timestamp> = BTreeMap::new();
    let mut note = |ns: String, vm: String, t: Timestamp| {
        let e = out.entry((ns, vm)).or_insert(t);
        *e = (*e).max(t);
    };
    for m in migrations {
        if let (Some(ns), Some(t)) = (
            m.metadata.namespace.clone(),
            m.metadata.creation_timestamp.as_ref(),
        ) {
            note(ns, m.spec.vm_name.clone(), t.0);
        }
    }
    for r in recent {
        note(r.namespace.clone(), r.vm.clone(), r.time.0);
    }
    out
}

fn host_of(hv: &Hypervisor) -> Host {
    let status = hv.status.clone().unwrap_or_default();
    let load = status.load.unwrap_or_default();
    let memory = status
        .capacity
        .as_ref()
        .and_then(|c| ironvisor_crds::quantity::to_bytes(&c.memory.0).ok())
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0);
    Host {
        snapshot: snapshot(hv),
        cpus: load.cpus,
        memory_bytes: memory,
        cpu_millicores: load.cpu_millicores,
        memory_bytes_used: load.memory_bytes,
    }
}

/// Build the inputs. `settings` carries the policy's knobs with a full budget; the budget
/// left is worked out here.
pub fn build(
    policy: &RebalancePolicy,
    hypervisors: &[Hypervisor],
    vms: &[VirtualMachine],
    migrations: &[VirtualMachineMigration],
    snapshots: &[VirtualMachineSnapshot],
    mut settings: Settings,
) -> Inputs {
    let now = settings.now;
    let recent = recent_moves(policy, migrations, now, settings.cooldown);
    let moves_in_last_hour = recent
        .iter()
        .filter(|r| now.duration_since(r.time.0) < HOUR)
        .count() as u32;
    settings.budget = settings.budget.saturating_sub(moves_in_last_hour);
    let last = last_moves(migrations, &recent);
    let part: Vec<&Hypervisor> = hypervisors.iter().filter(|h| takes_part(h, now)).collect();
    let by_name: BTreeMap<&str, &Hypervisor> = part
        .iter()
        .filter_map(|h| Some((h.metadata.name.as_deref()?, *h)))
        .collect();
    // Each VM looks only at the snapshots naming its uid.
    let mut snapshots_of: BTreeMap<&str, Vec<&VirtualMachineSnapshot>> = BTreeMap::new();
    for s in snapshots {
        if let Some(uid) = s.status.as_ref().and_then(|st| st.vm_uid.as_deref()) {
            snapshots_of.entry(uid).or_default().push(s);
        }
    }
    let mut out_vms = Vec::new();
    for vm in vms {
        let status = vm.status.clone().unwrap_or_default();
        let (Some(node), Some(Phase::Running)) = (status.node_name.clone(), status.phase) else {
            continue;
        };
        let Some(src) = by_name.get(node.as_str()) else {
            continue;
        };
        let ns = vm.metadata.namespace.clone().unwrap_or_default();
        let name = vm.metadata.name.clone().unwrap_or_default();
        let measured = src
            .status
            .as_ref()
            .and_then(|s| s.load.as_ref())
            .and_then(|l| l.vms.iter().find(|v| v.namespace == ns && v.name == name));
        let annotations = vm.metadata.annotations.clone().unwrap_or_default();
        out_vms.push(Vm {
            cpu_millicores: measured.map_or(0, |m| m.cpu_millicores),
            memory_bytes: measured.map_or(0, |m| m.memory_bytes),
            request: request(vm, None),
            // A linked clone reads its base on this host: no other host can take it.
            excluded: part
                .iter()
                .filter(|t| vm.spec.has_linked_clone() || !cpu_compatible(vm, src, t))
                .filter_map(|t| t.metadata.name.clone())
                .collect(),
            opted_out: annotations.get(OPT_OUT_ANNOTATION).map(String::as_str) == Some("false"),
            last_moved: last.get(&(ns.clone(), name.clone())).copied(),
            busy: status.operation.is_some(),
            snapshots_on_host: vm
                .metadata
                .uid
                .as_deref()
                .and_then(|uid| snapshots_of.get(uid))
                .map_or(0, |own| {
                    own.iter()
                        .filter(|s| crate::migration::layers_on_host(s, vm))
                        .count()
                }),
            host: node,
            namespace: ns,
            name,
        });
    }
    Inputs {
        hosts: part.iter().map(|h| host_of(h)).collect(),
        vms: out_vms,
        settings,
        recent,
        moves_in_last_hour,
    }
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
