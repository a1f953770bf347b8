//! The rebalancer's decision: which VMs to move where so the hosts' real load evens out.
//!
//! Pure and deterministic: hosts with their measured load and capacity, VMs with theirs, the
//! policy's weights, threshold, remaining budget and cool-down in; the moves, each with its
//! explanation, and the outcome out. Greedy, one move at a time (as vSphere DRS): among the
//! VMs of the busiest host, the (VM, target) pair that cuts the spread between the busiest
//! and the least busy host the most, if it cuts it by at least the minimum improvement; a
//! target must pass placement's own filters (with the moves chosen so far counted).
//! Never moves a VM that opted out, is in its cool-down or has an operation running.

use jiff::{SignedDuration, Timestamp};

use crate::placement::{HostSnapshot, Request, filters};

/// One host as the rebalancer sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Host {
    /// Placement's view (readiness, cordon, health, allocations) for the target filters.
    pub snapshot: HostSnapshot,
    /// Host CPU threads.
    pub cpus: u32,
    /// Host memory, bytes.
    pub memory_bytes: u64,
    /// CPU its domains used over the last interval, thousandths of a CPU.
    pub cpu_millicores: u64,
    /// Memory its domains hold, bytes.
    pub memory_bytes_used: u64,
}

/// One running VM as the rebalancer sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vm {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// CPU it used over the last interval, thousandths of a CPU.
    pub cpu_millicores: u64,
    /// Memory it holds, bytes.
    pub memory_bytes: u64,
    /// What it asks of a target (its spec's vCPUs and memory, selector).
    pub request: Request,
    /// Hosts it may not go to besides the filters' (another CPU model).
    pub excluded: Vec<String>,
    /// Its annotation says never move it.
    pub opted_out: bool,
    /// When it last started a migration of any kind.
    pub last_moved: Option<Timestamp>,
    /// Another operation (migration, snapshot, restore) holds its lock.
    pub busy: bool,
    /// Snapshots whose disk layers are on its host: a migration does not carry them and is
    /// refused (`SnapshotsOnHost`), so the VM is not a candidate.
    pub snapshots_on_host: usize,
}

/// The policy's knobs, as numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Weight of CPU in a host's load.
    pub cpu_weight: f64,
    /// Weight of memory in a host's load.
    pub memory_weight: f64,
    /// Rebalance only above this spread, percentage points.
    pub threshold: f64,
    /// A move must cut the spread by at least this, percentage points.
    pub min_improvement: f64,
    /// Moves still allowed this hour.
    pub budget: u32,
    /// No VM moves again within this of its last migration.
    pub cooldown: SignedDuration,
    /// Now (for the cool-down).
    pub now: Timestamp,
}

/// A move chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM.
    pub vm: String,
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// The metric that weighs most in the difference between the two hosts.
    pub metric: Metric,
    /// The spread after the move, percentage points.
    pub spread_after: f64,
    /// Which metric, which host, why this VM, the expected effect, in words.
    pub reason: String,
}

/// A measured metric (also a metric label value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// CPU time of the domains.
    Cpu,
    /// Memory of the domains.
    Memory,
}

impl Metric {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
        }
    }
}

/// Why the evaluation stopped where it did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Fewer than two hosts to balance between.
    TooFewHosts,
    /// The spread is within the threshold (after the moves, if any).
    Balanced,
    /// The hour's budget is used up (moves may have been chosen first).
    BudgetExhausted,
    /// No movable VM on the busiest host improves the spread enough.
    NoImprovingMove {
        /// What kept the VMs of the busiest host in place, in words.
        why: String,
    },
}

/// The evaluation: hosts' loads, the spread, the moves.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// (host, cpu %, memory %, weighted load %) before any move, by host name.
    pub loads: Vec<(String, f64, f64, f64)>,
    /// Spread before any move, percentage points.
    pub spread: f64,
    /// The moves, in order.
    pub moves: Vec<Move>,
    /// Why it stopped.
    pub outcome: Outcome,
}

/// Per-host working figures (percent of the host).
#[derive(Clone, Debug)]
struct Load {
    cpu: f64,
    mem: f64,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 * 100.0 / whole as f64
}

fn weighted(l: &Load, s: &Settings) -> f64 {
    let total = s.cpu_weight + s.memory_weight;
    if total <= 0.0 {
        return 0.0;
    }
    (l.cpu * s.cpu_weight + l.mem * s.memory_weight) / total
}

/// Busiest and least busy host (index) and the spread; ties by name order.
fn extremes(loads: &[Load], s: &Settings) -> (usize, usize, f64) {
    let mut hot = 0;
    let mut cold = 0;
    for i in 1..loads.len() {
        if weighted(&loads[i], s) > weighted(&loads[hot], s) {
            hot = i;
        }
        if weighted(&loads[i], s) < weighted(&loads[cold], s) {
            cold = i;
        }
    }
    (
        hot,
        cold,
        weighted(&loads[hot], s) - weighted(&loads[cold], s),
    )
}

fn spread(loads: &[Load], s: &Settings) -> f64 {
    extremes(loads, s).2
}

/// Why a VM stays put regardless of targets, if it does.
fn pinned(vm: &Vm, s: &Settings) -> Option<&'static str> {
    if vm.opted_out {
        return Some("opted out");
    }
    if vm.busy {
        return Some("another operation runs");
    }
    if vm.snapshots_on_host > 0 {
        return Some("has snapshots on its host");
    }
    if vm
        .last_moved
        .is_some_and(|t| s.now.duration_since(t) < s.cooldown)
    {
        return Some("in cool-down");
    }
    None
}

/// Decide the moves. `hosts` are the hosts that take part (fresh load); `vms` the running
/// VMs on them.
pub fn decide(hosts: &[Host], vms: &[Vm], s: &Settings) -> Plan {
    let mut hosts: Vec<Host> = hosts.to_vec();
    hosts.sort_by(|a, b| a.snapshot.name.cmp(&b.snapshot.name));
    let mut loads: Vec<Load> = hosts
        .iter()
        .map(|h| Load {
            cpu: pct(h.cpu_millicores, u64::from(h.cpus) * 1000),
            mem: pct(h.memory_bytes_used, h.memory_bytes),
        })
        .collect();
    let before: Vec<(String, f64, f64, f64)> = hosts
        .iter()
        .zip(&loads)
        .map(|(h, l)| (h.snapshot.name.clone(), l.cpu, l.mem, weighted(l, s)))
        .collect();
    let mut plan = Plan {
        spread: if hosts.len() < 2 {
            0.0
        } else {
            spread(&loads, s)
        },
        loads: before,
        moves: Vec::new(),
        outcome: Outcome::Balanced,
    };
    if hosts.len() < 2 {
        plan.outcome = Outcome::TooFewHosts;
        return plan;
    }
    let mut vms: Vec<Vm> = vms.to_vec();
    vms.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut moved = vec![false; vms.len()];
    loop {
        let (hot, _, now) = extremes(&loads, s);
        if now <= s.threshold {
            plan.outcome = Outcome::Balanced;
            return plan;
        }
        if plan.moves.len() as u32 >= s.budget {
            plan.outcome = Outcome::BudgetExhausted;
            return plan;
        }
        match best_move(&hosts, &loads, &vms, &moved, hot, s) {
            Err(why) => {
                plan.outcome = Outcome::NoImprovingMove { why };
                return plan;
            }
            Ok((v, t, after)) => {
                let m = explain(&hosts, &loads, &vms[v], hot, t, now, after, s);
                apply(&mut hosts, &mut loads, &vms[v], hot, t);
                moved[v] = true;
                plan.moves.push(m);
            }
        }
    }
}

/// The VM's share of a host, percent.
fn share(vm: &Vm, h: &Host) -> Load {
    Load {
        cpu: pct(vm.cpu_millicores, u64::from(h.cpus) * 1000),
        mem: pct(vm.memory_bytes, h.memory_bytes),
    }
}

/// The loads after moving `vm` from `from` to `to`.
fn after_move(hosts: &[Host], loads: &[Load], vm: &Vm, from: usize, to: usize) -> Vec<Load> {
    let mut next = loads.to_vec();
    let out = share(vm, &hosts[from]);
    let into = share(vm, &hosts[to]);
    next[from].cpu = (next[from].cpu - out.cpu).max(0.0);
    next[from].mem = (next[from].mem - out.mem).max(0.0);
    next[to].cpu += into.cpu;
    next[to].mem += into.mem;
    next
}

/// The best (VM index, target index, spread after) among the hot host's VMs, or why none.
fn best_move(
    hosts: &[Host],
    loads: &[Load],
    vms: &[Vm],
    moved: &[bool],
    hot: usize,
    s: &Settings,
) -> Result<(usize, usize, f64), String> {
    let now = spread(loads, s);
    let hot_name = &hosts[hot].snapshot.name;
    let mut best: Option<(usize, usize, f64)> = None;
    let (mut candidates, mut pinned_n, mut no_target) = (0, 0, 0);
    for (v, vm) in vms.iter().enumerate() {
        if vm.host != *hot_name || moved[v] {
            continue;
        }
        candidates += 1;
        if pinned(vm, s).is_some() {
            pinned_n += 1;
            continue;
        }
        let mut fits = false;
        for (t, h) in hosts.iter().enumerate() {
            if t == hot
                || vm.excluded.contains(&h.snapshot.name)
                || filters::run(&h.snapshot, &vm.request).is_err()
            {
                continue;
            }
            fits = true;
            let after = spread(&after_move(hosts, loads, vm, hot, t), s);
            // Strictly better only: ties keep the first VM by name, then the first target.
            if best.is_none_or(|(_, _, b)| after < b) {
                best = Some((v, t, after));
            }
        }
        no_target += usize::from(!fits);
    }
    match best {
        Some((v, t, after)) if now - after >= s.min_improvement => Ok((v, t, after)),
        Some((_, _, after)) => Err(format!(
            "the best move on {hot_name} would cut the spread only from {now:.0} to {after:.0} points (minimum improvement {:.0})",
            s.min_improvement
        )),
        None => Err(format!(
            "{hot_name} has {candidates} running VMs: {pinned_n} opted out, busy, in cool-down or with snapshots on the host, {no_target} with no other host that fits"
        )),
    }
}

/// Record the move in the working figures: loads and the targets' allocations.
fn apply(hosts: &mut [Host], loads: &mut Vec<Load>, vm: &Vm, from: usize, to: usize) {
    *loads = after_move(hosts, loads, vm, from, to);
    let c = vm.request.compute;
    let from = &mut hosts[from].snapshot.allocated;
    from.vcpus -= c.vcpus;
    from.memory -= c.memory;
    let to = &mut hosts[to].snapshot.allocated;
    to.vcpus += c.vcpus;
    to.memory += c.memory;
}

/// The explanation: which metric, which host, why this VM, the expected effect.
#[allow(clippy::too_many_arguments)]
fn explain(
    hosts: &[Host],
    loads: &[Load],
    vm: &Vm,
    from: usize,
    to: usize,
    spread_now: f64,
    spread_after: f64,
    s: &Settings,
) -> Move {
    let (f, t) = (&loads[from], &loads[to]);
    let cpu_gap = (f.cpu - t.cpu) * s.cpu_weight;
    let mem_gap = (f.mem - t.mem) * s.memory_weight;
    let metric = if cpu_gap >= mem_gap {
        Metric::Cpu
    } else {
        Metric::Memory
    };
    let next = after_move(hosts, loads, vm, from, to);
    let (fname, tname) = (&hosts[from].snapshot.name, &hosts[to].snapshot.name);
    let usage = match metric {
        Metric::Cpu => format!(
            "{} uses {:.2} CPUs ({:.0}% of {fname})",
            vm.name,
            vm.cpu_millicores as f64 / 1000.0,
            share(vm, &hosts[from]).cpu
        ),
        Metric::Memory => format!(
            "{} holds {} MiB ({:.0}% of {fname})",
            vm.name,
            vm.memory_bytes >> 20,
            share(vm, &hosts[from]).mem
        ),
    };
    let reason = format!(
        "metric {m}: {fname} is the busiest host at {fl:.0}% load (cpu {fc:.0}%, memory {fm:.0}%), \
         {tname} at {tl:.0}%; spread {spread_now:.0} points > threshold {th:.0}. \
         Why this VM: {usage}; of the movable VMs on {fname} its move evens the hosts out most. \
         Expected: {fname} {fa:.0}%, {tname} {ta:.0}%, spread {spread_now:.0} -> {spread_after:.0} points",
        m = metric.as_str(),
        fl = weighted(f, s),
        fc = f.cpu,
        fm = f.mem,
        tl = weighted(t, s),
        th = s.threshold,
        fa = weighted(&next[from], s),
        ta = weighted(&next[to], s),
    );
    Move {
        namespace: vm.namespace.clone(),
        vm: vm.name.clone(),
        from: fname.clone(),
        to: tname.clone(),
        metric,
        spread_after,
        reason,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
