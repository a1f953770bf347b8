use super::*;
use crate::placement::tests::{GI, host as snap, req};
use pretty_assertions::assert_eq;

fn host(name: &str, cpus: u32, millicores: u64) -> Host {
    Host {
        snapshot: snap(name, i128::from(cpus) * 4, 16),
        cpus,
        memory_bytes: 16 << 30,
        cpu_millicores: millicores,
        memory_bytes_used: 0,
    }
}

fn vm(name: &str, host: &str, millicores: u64) -> Vm {
    Vm {
        namespace: "ns".into(),
        name: name.into(),
        host: host.into(),
        cpu_millicores: millicores,
        memory_bytes: 128 << 20,
        request: req(1, 1),
        ..Default::default()
    }
}

fn settings(budget: u32) -> Settings {
    Settings {
        cpu_weight: 1.0,
        memory_weight: 0.0,
        threshold: 20.0,
        min_improvement: 5.0,
        budget,
        cooldown: SignedDuration::from_hours(1),
        now: Timestamp::from_second(1_000_000).unwrap(),
    }
}

fn mv(vm: &str, from: &str, to: &str) -> (String, String, String) {
    (vm.into(), from.into(), to.into())
}

fn names(p: &Plan) -> Vec<(String, String, String)> {
    p.moves
        .iter()
        .map(|m| (m.vm.clone(), m.from.clone(), m.to.clone()))
        .collect()
}

/// Two burners and an idle VM on a 2-CPU host, an empty twin: one burner moves.
#[test]
fn one_burner_moves_off_the_hot_host_and_the_idle_vm_stays() {
    let hosts = [host("a", 2, 1820), host("b", 2, 20)];
    let vms = [
        vm("burn1", "a", 900),
        vm("burn2", "a", 900),
        vm("idle", "a", 20),
    ];
    let p = decide(&hosts, &vms, &settings(4));
    assert_eq!(names(&p), vec![mv("burn1", "a", "b")]);
    assert_eq!(p.outcome, Outcome::Balanced);
    assert_eq!(p.spread.round(), 90.0);
    let m = &p.moves[0];
    assert_eq!(m.metric, Metric::Cpu);
    assert_eq!(m.spread_after.round(), 0.0);
    assert!(
        m.reason
            .starts_with("metric cpu: a is the busiest host at 91% load"),
        "{}",
        m.reason
    );
    assert!(
        m.reason.contains("burn1 uses 0.90 CPUs (45% of a)"),
        "{}",
        m.reason
    );
    assert!(m.reason.contains("spread 90 -> 0 points"), "{}", m.reason);
}

#[test]
fn a_single_burner_is_not_moved_because_that_only_swaps_the_hot_host() {
    let hosts = [host("a", 2, 1000), host("b", 2, 0)];
    let vms = [vm("burn", "a", 1000), vm("idle", "a", 0)];
    let p = decide(&hosts, &vms, &settings(4));
    assert!(p.moves.is_empty());
    let Outcome::NoImprovingMove { why } = &p.outcome else {
        panic!("{:?}", p.outcome)
    };
    assert!(why.contains("only from 50 to 50 points"), "{why}");
}

#[test]
fn within_the_threshold_nothing_moves() {
    let hosts = [host("a", 2, 500), host("b", 2, 200)];
    let vms = [vm("x", "a", 500)];
    let p = decide(&hosts, &vms, &settings(4));
    assert_eq!(p.outcome, Outcome::Balanced);
    assert!(p.moves.is_empty());
}

#[test]
fn the_budget_caps_the_moves_and_says_so() {
    let hosts = [host("a", 4, 4000), host("b", 4, 0), host("c", 4, 0)];
    let vms: Vec<Vm> = (0..4).map(|i| vm(&format!("v{i}"), "a", 1000)).collect();
    let p = decide(&hosts, &vms, &settings(1));
    assert_eq!(p.moves.len(), 1);
    assert_eq!(p.outcome, Outcome::BudgetExhausted);
    let p = decide(&hosts, &vms, &settings(0));
    assert!(p.moves.is_empty());
    assert_eq!(p.outcome, Outcome::BudgetExhausted);
    // With room, the load spreads over both empty hosts, then a third move would only
    // shift the peak (50/25/25 -> 25/50/25).
    let p = decide(&hosts, &vms, &settings(10));
    let to: Vec<&str> = p.moves.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(to, vec!["b", "c"]);
    assert!(
        matches!(&p.outcome, Outcome::NoImprovingMove { why } if why.contains("from 25 to 25")),
        "{:?}",
        p.outcome
    );
}

#[test]
fn opted_out_busy_and_cooling_down_vms_stay_and_the_reason_counts_them() {
    let s = settings(4);
    let hosts = [host("a", 2, 2000), host("b", 2, 0)];
    let mut vms = [
        vm("out", "a", 700),
        vm("busy", "a", 700),
        vm("cool", "a", 600),
        vm("snap", "a", 800),
    ];
    vms[0].opted_out = true;
    vms[1].busy = true;
    vms[2].last_moved = Some(s.now - SignedDuration::from_mins(59));
    vms[3].snapshots_on_host = 1;
    let p = decide(&hosts, &vms, &s);
    assert!(p.moves.is_empty());
    assert_eq!(
        p.outcome,
        Outcome::NoImprovingMove {
            why: "a has 4 running VMs: 4 opted out, busy, in cool-down or with snapshots on the host, 0 with no other host that fits".into()
        }
    );
    // Past the cool-down the VM moves again; the one with snapshots never does.
    vms[2].last_moved = Some(s.now - SignedDuration::from_mins(61));
    assert_eq!(names(&decide(&hosts, &vms, &s)), vec![mv("cool", "a", "b")]);
}

#[test]
fn targets_go_through_placement_filters_and_cpu_exclusions() {
    let mut hosts = [host("a", 2, 2000), host("b", 2, 0), host("c", 2, 0)];
    hosts[1].snapshot.unschedulable = true;
    let mut vms = [vm("x", "a", 1000), vm("y", "a", 1000)];
    vms[0].excluded = vec!["c".into()];
    let p = decide(&hosts, &vms, &settings(4));
    // x cannot go anywhere (b cordoned, c another CPU); y goes to c.
    assert_eq!(names(&p), vec![mv("y", "a", "c")]);
    // A target full of allocations is filtered too.
    hosts[2].snapshot.allocated.memory = 16 * GI;
    let p = decide(&hosts, &vms, &settings(4));
    assert!(p.moves.is_empty());
    assert!(
        matches!(&p.outcome, Outcome::NoImprovingMove { why } if why.contains("2 with no other host that fits")),
        "{:?}",
        p.outcome
    );
}

#[test]
fn planned_moves_count_in_the_targets_allocation() {
    // b and c have room for exactly one more 1-vCPU VM each (16 allocatable, 15 allocated).
    let mut hosts = [host("a", 4, 4000), host("b", 4, 0), host("c", 4, 0)];
    hosts[1].snapshot.allocated.vcpus = 15;
    hosts[2].snapshot.allocated.vcpus = 15;
    let vms: Vec<Vm> = (0..4).map(|i| vm(&format!("v{i}"), "a", 1000)).collect();
    let p = decide(&hosts, &vms, &settings(10));
    let to: Vec<&str> = p.moves.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(to, vec!["b", "c"], "one each: the second would not fit");
}

#[test]
fn memory_weight_picks_the_memory_hog_and_names_the_metric() {
    let mut s = settings(4);
    s.cpu_weight = 0.0;
    s.memory_weight = 1.0;
    let mut hosts = [host("a", 2, 0), host("b", 2, 0)];
    hosts[0].memory_bytes_used = 12 << 30;
    let mut vms = [vm("small", "a", 0), vm("big", "a", 0)];
    vms[0].memory_bytes = 5 << 30;
    vms[1].memory_bytes = 8 << 30;
    let p = decide(&hosts, &vms, &s);
    assert_eq!(names(&p), vec![mv("small", "a", "b")]);
    assert_eq!(p.moves[0].metric, Metric::Memory);
    assert!(
        p.moves[0]
            .reason
            .contains("small holds 5120 MiB (31% of a)"),
        "{}",
        p.moves[0].reason
    );
}

#[test]
fn one_host_or_none_is_too_few_and_the_result_is_independent_of_input_order() {
    assert_eq!(
        decide(&[host("a", 2, 2000)], &[], &settings(4)).outcome,
        Outcome::TooFewHosts
    );
    assert_eq!(decide(&[], &[], &settings(4)).outcome, Outcome::TooFewHosts);
    let hosts = [host("b", 2, 0), host("a", 2, 1800)];
    let vms = [vm("z", "a", 900), vm("y", "a", 900)];
    let p1 = decide(&hosts, &vms, &settings(4));
    let (mut h2, mut v2) = (hosts.to_vec(), vms.to_vec());
    h2.reverse();
    v2.reverse();
    assert_eq!(p1, decide(&h2, &v2, &settings(4)));
    assert_eq!(names(&p1), vec![mv("y", "a", "b")]);
}

#[test]
fn hostile_figures_neither_panic_nor_divide_by_zero() {
    let mut hosts = [host("a", 0, u64::MAX), host("b", 2, 0)];
    hosts[0].memory_bytes = 0;
    let vms = [vm("x", "a", u64::MAX)];
    let p = decide(&hosts, &vms, &settings(4));
    assert!(p.spread.is_finite());
    let mut s = settings(4);
    s.cpu_weight = 0.0;
    s.memory_weight = 0.0;
    let p = decide(&[host("a", 2, 2000), host("b", 2, 0)], &vms, &s);
    assert_eq!(p.outcome, Outcome::Balanced);
}
