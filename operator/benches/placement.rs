//! Placement benchmark: 10,000 VMs over 100 hosts through the real planner (`plan::plan`),
//! with each pass's writes fed back into the index the way the watch would.
//!
//! Two runs: a burst (all 10,000 VMs exist before the first pass) and a stream (VMs arrive
//! 100 at a time, one pass per arrival batch). Reports decisions per second and p50/p99 from
//! a VM's arrival in the index to the end of the pass that placed it. No cluster: this is the
//! decision cost only; API round trips come on top (see docs/operator.md).
//!
//! Run: `cargo bench -p ironvisor-operator --bench placement`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ironvisor_crds::vm::RunStrategy;
use ironvisor_operator::index::{HostEntry, Index, VmEntry, VmKey, VmNet};
use ironvisor_operator::placement::{Capacity, Request, Strategy};
use ironvisor_operator::plan::{Config, Plan, plan};
use ironvisor_operator::quota::{QuotaEntry, TenantNode};
use ironvisor_operator::units::{Limits, Units};
use jiff::Timestamp;

const HOSTS: usize = 100;
const VMS: usize = 10_000;
const GI: i128 = 1 << 30;
const TENANTS: usize = 10;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid")
}

/// A small deterministic generator (xorshift), so every run places the same VMs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn cluster() -> Index {
    let mut ix = Index::new();
    for t in 0..TENANTS {
        ix.apply_tenant_node(TenantNode {
            name: format!("t{t}"),
            parent: None,
            namespaces: vec![format!("ns{t}")],
            created: now(),
        });
        // Limits large enough to admit everything: the bench measures placement, with the
        // quota check still done for every VM.
        let limits = Limits {
            vms: Some(2_000),
            vcpus: Some(10_000),
            memory: Some(40_000 * GI),
            storage: None,
        };
        ix.apply_quota_entry(QuotaEntry {
            name: format!("q{t}"),
            tenant: format!("t{t}"),
            limits,
        });
    }
    for h in 0..HOSTS {
        let entry = HostEntry {
            labels: [("zone".to_owned(), format!("z{}", h % 4))].into(),
            has_object: true,
            unschedulable: false,
            maintenance: false,
            allocatable: Some(Capacity {
                vcpus: 320,
                memory: 640 * GI,
            }),
            ready: Some(("True".into(), "AgentReady".into())),
            heartbeat: Some(now()),
            status_heartbeat: None,
            heartbeat_seen: Some(now()),
            unhealthy: None,
            tpm: false,
        };
        ix.hosts_mut().insert(format!("host{h:03}"), entry);
    }
    ix
}

fn vm(i: usize, rng: &mut Rng) -> VmEntry {
    let ns = format!("ns{}", i % TENANTS);
    let vcpus = 1 + (rng.next() % 4) as i128;
    let mem = 1 + (rng.next() % 8) as i128;
    let mut request = Request {
        namespace: ns.clone(),
        ..Request::default()
    };
    if i.is_multiple_of(10) {
        request.anti_affinity_group = Some(format!("g{}", i % 50));
    }
    if i.is_multiple_of(7) {
        request
            .node_selector
            .insert("zone".into(), format!("z{}", i % 4));
    }
    VmEntry {
        key: VmKey {
            namespace: ns,
            name: format!("vm{i:05}"),
        },
        uid: format!("uid{i}"),
        created: now() + Duration::from_millis(i as u64),
        deleting: false,
        demand: Ok(Units {
            vms: 1,
            vcpus,
            memory: mem * GI,
            storage: 10 * GI,
        }),
        run_strategy: RunStrategy::Always,
        request,
        restart_elsewhere: false,
        label_node: None,
        legacy_annotation: false,
        status_node: None,
        status_vcpus: None,
        admitted: None,
        admitted_ports: None,
        phase: None,
        printable: None,
        scheduled: None,
        ready: None,
        tenant: None,
        agents: BTreeSet::new(),
        operator_owns_phase: false,
        net: VmNet::default(),
        template: false,
        clones: Vec::new(),
        operation: None,
    }
}

/// Apply the writes as the API server and watch would.
fn write_back(ix: &mut Index, p: &Plan) {
    for w in &p.vms {
        let Some(mut e) = ix.vm(&w.key).cloned() else {
            continue;
        };
        e.label_node = w.status.node_name.clone();
        e.status_node = w.status.node_name.clone();
        e.status_vcpus = w.status.vcpus;
        e.admitted = w.status.admitted;
        e.scheduled = Some(w.status.scheduled.clone());
        if let Some((ph, s)) = &w.status.phase {
            e.phase = Some(*ph);
            e.printable = Some(s.clone());
        }
        e.operator_owns_phase = w.status.phase.is_some();
        ix.apply_vm_entry(e);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(
    name: &str,
    placed: usize,
    passes: usize,
    decide: Duration,
    total: Duration,
    mut lat: Vec<Duration>,
) {
    lat.sort();
    println!(
        "{name:<7} placed {placed:>5} in {passes:>3} passes | decision time {:>7.1} ms ({:>8.0} decisions/s) | wall {:>7.1} ms | arrival->placed p50 {:>7.2} ms p99 {:>7.2} ms",
        decide.as_secs_f64() * 1e3,
        placed as f64 / decide.as_secs_f64(),
        total.as_secs_f64() * 1e3,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

fn burst(strategy: Strategy) {
    let mut ix = cluster();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cfg = Config {
        strategy,
        ..Config::default()
    };
    let start = Instant::now();
    for i in 0..VMS {
        ix.apply_vm_entry(vm(i, &mut rng));
    }
    let (mut placed, mut passes, mut decide, mut lat) =
        (0, 0, Duration::ZERO, Vec::with_capacity(VMS));
    loop {
        let t = Instant::now();
        let p = plan(&ix, cfg.clone(), now());
        decide += t.elapsed();
        passes += 1;
        let n = p.placed.len();
        placed += n;
        lat.extend(std::iter::repeat_n(start.elapsed(), n));
        write_back(&mut ix, &p);
        if n == 0 {
            break;
        }
    }
    report(
        &format!(
            "burst/{}",
            if strategy == Strategy::Spread {
                "s"
            } else {
                "b"
            }
        ),
        placed,
        passes,
        decide,
        start.elapsed(),
        lat,
    );
    assert_eq!(placed, VMS, "everything fits");
}

fn stream(strategy: Strategy, batch: usize) {
    let mut ix = cluster();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cfg = Config {
        strategy,
        ..Config::default()
    };
    let start = Instant::now();
    let (mut placed, mut passes, mut decide, mut lat) =
        (0, 0, Duration::ZERO, Vec::with_capacity(VMS));
    let mut arrived = std::collections::BTreeMap::new();
    let mut i = 0;
    while placed < VMS {
        for _ in 0..batch.min(VMS - i) {
            let e = vm(i, &mut rng);
            arrived.insert(e.key.clone(), Instant::now());
            ix.apply_vm_entry(e);
            i += 1;
        }
        let t = Instant::now();
        let p = plan(&ix, cfg.clone(), now());
        decide += t.elapsed();
        passes += 1;
        let done = Instant::now();
        for k in &p.placed {
            if let Some(a) = arrived.get(k) {
                lat.push(done - *a);
            }
        }
        placed += p.placed.len();
        write_back(&mut ix, &p);
        if p.placed.is_empty() && i == VMS {
            break;
        }
    }
    report(
        &format!(
            "stream/{}",
            if strategy == Strategy::Spread {
                "s"
            } else {
                "b"
            }
        ),
        placed,
        passes,
        decide,
        start.elapsed(),
        lat,
    );
}

fn main() {
    println!(
        "{VMS} VMs over {HOSTS} hosts, {TENANTS} tenants with quotas, 10% anti-affinity, 14% nodeSelector"
    );
    for s in [Strategy::Spread, Strategy::BinPack] {
        burst(s);
        stream(s, 100);
    }
}
