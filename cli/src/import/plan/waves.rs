//! Migration waves: VMs grouped into waves that each fit the maintenance window, in the
//! chosen order, with application groups kept together and a group's dependencies in the
//! same or an earlier wave; every VM is taken from the capacity ledger (quotas and hosts)
//! as it is scheduled.
//!
//! The dependency file (RVTools carries no dependencies):
//! ```yaml
//! groups:
//!   - name: erp
//!     vms: ["erp-*"]            # globs over vSphere names
//!     dependsOn: [directory]
//!   - name: directory
//!     vms: [dc01, dc02]
//! ```
//! A wave's estimate is the sum of its VMs' estimates: imports run in parallel but share the
//! host's disks, so the measured single-stream rate is taken as the whole host's. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::capacity::{Demand, Ledger};
use super::model::{CapacityViolation, PlannedVm, Readiness, Wave};
use super::readiness::mib_bytes;
use super::tenants::glob;

/// One application group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Globs over vSphere VM names.
    pub vms: Vec<String>,
    /// Groups that must move in the same or an earlier wave.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// The dependency file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Groups {
    /// The groups.
    pub groups: Vec<Group>,
}

/// How VMs are ordered within the dependency constraints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smallest first (a quick pilot wave).
    Size,
    /// By folder, then size.
    Folder,
    /// By a custom attribute's value (a tag), then size.
    Attribute(String),
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "size" => Ok(Self::Size),
            "folder" => Ok(Self::Folder),
            _ => match s
                .strip_prefix("attribute:")
                .or_else(|| s.strip_prefix("tag:"))
            {
                Some(a) if !a.is_empty() => Ok(Self::Attribute(a.into())),
                _ => Err(format!("{s:?}: use size, folder or attribute:NAME")),
            },
        }
    }
}

/// Wave limits.
#[derive(Clone, Debug)]
pub struct WaveLimits {
    /// Maintenance window, seconds.
    pub window_seconds: u64,
    /// Most VMs in one wave.
    pub max_vms: Option<usize>,
}

struct Unit {
    name: Option<String>,
    members: Vec<usize>,
    deps: BTreeSet<String>,
    key: (String, u64, String),
}

/// The VM's demand on the target.
pub fn demand(vm: &PlannedVm) -> Demand {
    Demand {
        vcpus: u64::from(vm.sizing.vcpus),
        memory_bytes: mib_bytes(vm.sizing.memory_mib),
        storage_bytes: vm.sizing.storage_bytes,
    }
}

fn units(vms: &mut [PlannedVm], groups: &Groups, order: &Order) -> Vec<Unit> {
    let mut by_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut singles = Vec::new();
    for (i, vm) in vms.iter_mut().enumerate() {
        let g = groups
            .groups
            .iter()
            .find(|g| g.vms.iter().any(|p| glob(p, &vm.name)));
        vm.group = g.map(|g| g.name.clone());
        if vm.unscheduled.is_some() {
            continue;
        }
        match g {
            Some(g) => by_group.entry(g.name.clone()).or_default().push(i),
            None => singles.push(i),
        }
    }
    let key = |members: &[usize]| {
        let bytes = members
            .iter()
            .map(|i| vms[*i].sizing.import_bytes)
            .fold(0u64, u64::saturating_add);
        let first = members
            .iter()
            .map(|i| vms[*i].name.clone())
            .min()
            .unwrap_or_default();
        let primary = match order {
            Order::Size => String::new(),
            Order::Folder | Order::Attribute(_) => members
                .iter()
                .filter_map(|i| match order {
                    Order::Folder => vms[*i].folder.clone(),
                    _ => vms[*i].order_value.clone(),
                })
                .min()
                // Without a value: last.
                .unwrap_or_else(|| "\u{10ffff}".into()),
        };
        (primary, bytes, first)
    };
    let mut out: Vec<Unit> = by_group
        .into_iter()
        .map(|(name, members)| Unit {
            deps: groups
                .groups
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.depends_on.iter().cloned().collect())
                .unwrap_or_default(),
            key: key(&members),
            name: Some(name),
            members,
        })
        .collect();
    out.extend(singles.into_iter().map(|i| Unit {
        name: None,
        key: key(&[i]),
        members: vec![i],
        deps: BTreeSet::new(),
    }));
    out
}

/// Units in dependency order, smallest key first among those ready; a cycle is broken (and
/// noted) by taking the smallest remaining unit.
fn ordered(units: &[Unit], notes: &mut Vec<String>) -> Vec<usize> {
    let names: BTreeSet<&str> = units.iter().filter_map(|u| u.name.as_deref()).collect();
    for u in units {
        for d in u.deps.iter().filter(|d| !names.contains(d.as_str())) {
            notes.push(format!(
                "group {} depends on {d}, which has no VM to move; the dependency is ignored",
                u.name.as_deref().unwrap_or("?")
            ));
        }
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut left: Vec<usize> = (0..units.len()).collect();
    left.sort_by(|a, b| units[*a].key.cmp(&units[*b].key));
    let mut out = Vec::new();
    while !left.is_empty() {
        let ready = left.iter().position(|u| {
            units[*u]
                .deps
                .iter()
                .all(|d| done.contains(d) || !names.contains(d.as_str()))
        });
        let at = ready.unwrap_or_else(|| {
            notes.push(format!(
                "groups {} depend on each other in a cycle; {} is scheduled first",
                left.iter()
                    .filter_map(|u| units[*u].name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                units[left[0]].name.as_deref().unwrap_or("?")
            ));
            0
        });
        let u = left.remove(at);
        if let Some(n) = &units[u].name {
            done.insert(n.clone());
        }
        out.push(u);
    }
    out
}

/// Schedule: fills `wave`/`unscheduled`/`host` of each VM and returns the waves and the
/// capacity violations. VMs already marked unscheduled, and blocked ones, get no wave.
pub fn schedule(
    vms: &mut [PlannedVm],
    groups: &Groups,
    order: &Order,
    limits: &WaveLimits,
    ledger: &mut Ledger,
    notes: &mut Vec<String>,
) -> (Vec<Wave>, Vec<CapacityViolation>) {
    for vm in vms.iter_mut() {
        if vm.readiness == Readiness::Blocked && vm.unscheduled.is_none() {
            vm.unscheduled = Some("blocked: see its findings".into());
        } else if vm.tenant.is_none() && vm.unscheduled.is_none() {
            vm.unscheduled = Some("no tenant".into());
        }
    }
    let units = units(vms, groups, order);
    let mut waves: Vec<Wave> = Vec::new();
    let mut violations = Vec::new();
    let mut group_wave: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for u in ordered(&units, notes) {
        let unit = &units[u];
        let placed = place(
            vms,
            unit,
            &group_wave,
            limits,
            ledger,
            &mut waves,
            &mut violations,
        );
        if let Some(n) = &unit.name {
            group_wave.insert(n.clone(), placed);
        }
    }
    (waves, violations)
}

fn unschedule(vms: &mut [PlannedVm], members: &[usize], why: &str) {
    for i in members {
        vms[*i].unscheduled = Some(why.to_string());
    }
}

/// The first wave the unit may go in, or why it cannot go in any.
fn earliest_wave(
    unit: &Unit,
    group_wave: &BTreeMap<String, Option<u32>>,
    limits: &WaveLimits,
    seconds: u64,
    label: &str,
) -> Result<u32, String> {
    let mut min_wave = 1;
    for d in &unit.deps {
        match group_wave.get(d) {
            Some(Some(w)) => min_wave = min_wave.max(*w),
            Some(None) => return Err(format!("depends on group {d}, which is not scheduled")),
            None => {}
        }
    }
    if seconds > limits.window_seconds {
        return Err(format!(
            "{label} needs about {}, longer than the {} window",
            super::render::duration(seconds),
            super::render::duration(limits.window_seconds)
        ));
    }
    if limits.max_vms.is_some_and(|m| unit.members.len() > m) {
        return Err(format!("{label} has more VMs than --max-vms-per-wave"));
    }
    Ok(min_wave)
}

/// Take every member from the ledger, or none (the shortfall is recorded).
fn take_unit(
    vms: &[PlannedVm],
    unit: &Unit,
    ledger: &mut Ledger,
    violations: &mut Vec<CapacityViolation>,
    label: &str,
) -> Result<Vec<Option<String>>, String> {
    let before = ledger.clone();
    let mut hosts = Vec::new();
    for &i in &unit.members {
        match ledger.take(vms[i].tenant.as_deref(), demand(&vms[i])) {
            Ok(h) => hosts.push(h),
            Err(s) => {
                *ledger = before;
                let why = format!(
                    "{label} does not fit: {} {} ({} needed, {} left)",
                    s.limit, s.resource, s.needed, s.left
                );
                violations.push(CapacityViolation {
                    vm: vms[i].name.clone(),
                    tenant: vms[i].tenant.clone(),
                    limit: s.limit,
                    resource: s.resource,
                    needed: s.needed,
                    left: s.left,
                });
                return Err(why);
            }
        }
    }
    Ok(hosts)
}

/// The index of the first wave from `start` with room for `seconds` and `count` VMs,
/// adding waves as needed.
fn wave_for(
    waves: &mut Vec<Wave>,
    start: usize,
    seconds: u64,
    count: usize,
    limits: &WaveLimits,
) -> usize {
    let fits = |w: &Wave| {
        w.estimated_seconds.saturating_add(seconds) <= limits.window_seconds
            && limits.max_vms.is_none_or(|m| w.vms.len() + count <= m)
    };
    if let Some(at) = (start..waves.len()).find(|w| fits(&waves[*w])) {
        return at;
    }
    // No room from `start` on: a new wave (after empty ones up to `start`, which cannot
    // happen as `start` comes from an existing wave, but costs nothing to keep true).
    while waves.len() <= start {
        let number = u32::try_from(waves.len() + 1).unwrap_or(u32::MAX);
        waves.push(Wave {
            number,
            ..Wave::default()
        });
        if waves.len() > start {
            return waves.len() - 1;
        }
    }
    let number = u32::try_from(waves.len() + 1).unwrap_or(u32::MAX);
    waves.push(Wave {
        number,
        ..Wave::default()
    });
    waves.len() - 1
}

fn place(
    vms: &mut [PlannedVm],
    unit: &Unit,
    group_wave: &BTreeMap<String, Option<u32>>,
    limits: &WaveLimits,
    ledger: &mut Ledger,
    waves: &mut Vec<Wave>,
    violations: &mut Vec<CapacityViolation>,
) -> Option<u32> {
    let label = unit
        .name
        .as_ref()
        .map_or_else(|| "the VM".into(), |n| format!("group {n}"));
    let seconds = unit
        .members
        .iter()
        .map(|i| vms[*i].estimated_seconds)
        .fold(0u64, u64::saturating_add);
    let hosts = earliest_wave(unit, group_wave, limits, seconds, &label).and_then(|min_wave| {
        take_unit(vms, unit, ledger, violations, &label).map(|h| (min_wave, h))
    });
    let (min_wave, hosts) = match hosts {
        Ok(x) => x,
        Err(why) => {
            unschedule(vms, &unit.members, &why);
            return None;
        }
    };
    let start = usize::try_from(min_wave - 1).unwrap_or(0);
    let at = wave_for(waves, start, seconds, unit.members.len(), limits);
    let wave = &mut waves[at];
    for (&i, host) in unit.members.iter().zip(hosts) {
        let d = demand(&vms[i]);
        wave.vms.push(vms[i].name.clone());
        wave.vcpus = wave.vcpus.saturating_add(d.vcpus);
        wave.memory_bytes = wave.memory_bytes.saturating_add(d.memory_bytes);
        wave.storage_bytes = wave.storage_bytes.saturating_add(d.storage_bytes);
        vms[i].wave = Some(wave.number);
        vms[i].host = host;
    }
    wave.estimated_seconds = wave.estimated_seconds.saturating_add(seconds);
    if let Some(n) = &unit.name {
        wave.groups.push(n.clone());
    }
    Some(wave.number)
}
