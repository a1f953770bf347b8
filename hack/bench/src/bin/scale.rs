//! `bench-scale`: N VMs (default 10,000) over H simulated hosts (default 100) plus a few real
//! agents on `test:///default`. The operator is the real binary; simulated hosts are
//! Hypervisor objects and heartbeat Leases the bench writes, and the bench plays their
//! agents' status write (phase Running) for the VMs placed on them. Measures operator
//! decisions per second, creation → placement p50/p99, time until all are Running, and the
//! RSS of the devcluster, the operator and the agents. Baselines in the same run: creating
//! the N objects alone (the API's own cost), and defining + starting the same domains
//! straight into libvirt's test driver. Not a test.

use clap::Parser;
use futures::StreamExt as _;
use ironvisor_bench::{api, raw, report, rss, sim, stack, stats, tracker};
use ironvisor_crds::VirtualMachineSpec;
use serde_json::json;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Scale: N VMs over simulated hosts and a few real agents.
#[derive(Parser, Debug)]
struct Args {
    /// How many VMs.
    #[arg(long, default_value_t = 10_000)]
    vms: usize,
    /// Simulated hosts.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Real agent processes on test:///default, in addition to the simulated hosts.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Creates in flight.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Directory of ironvisor-devcluster, -operator, -agent (default: this program's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Give up after this many seconds of waiting for Running.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
}

const NS: &str = "ivbench-scale";

fn rss_json(r: Option<rss::Rss>) -> serde_json::Value {
    json!(r)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stack::init_logging();
    let args = Args::parse();
    let mut st =
        stack::Stack::start(ironvisor_bench::procs::bin_dir(args.bin_dir.clone())?).await?;
    api::tenant_with_quota(&st.client, "ivbench", NS, args.vms).await?;
    let sim_names: Vec<String> = (0..args.hosts).map(sim::host_name).collect();
    let keepalive = sim::hosts(&st.client, &sim_names, 320, "640Gi").await?;
    for i in 0..args.agents {
        let node = format!("agent-{i}");
        api::hypervisor(&st.client, &node, 64.0, 4.0).await?;
        st.start_agent(&node, "test:///default", 60)?;
    }
    for i in 0..args.agents {
        api::wait_host_ready(&st.client, &format!("agent-{i}"), Duration::from_secs(60)).await?;
    }
    st.start_operator()?;

    let (placed_tx, placed_rx) = tokio::sync::mpsc::unbounded_channel();
    let tr = tracker::Tracker::start(&st.client, NS, Some(placed_tx));
    let simulated: HashSet<String> = sim_names.iter().cloned().collect();
    let (reporter, reported) =
        sim::reporter(&st.client, placed_rx, move |n| simulated.contains(n), 16);

    println!(
        "scale: {} VMs over {} simulated hosts + {} agents ...",
        args.vms, args.hosts, args.agents
    );
    let spec = api::tiny_spec();
    let client = st.client.clone();
    let start = Instant::now();
    futures::stream::iter((0..args.vms).map(|i| format!("vm-{i:05}")))
        .map(|name| {
            tr.created(NS, &name);
            let client = client.clone();
            let spec = spec.clone();
            async move { api::create_vm(&client, NS, &name, &spec, None).await }
        })
        .buffer_unordered(args.inflight)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let created = start.elapsed();
    println!(
        "  {} VMs created in {:.1} s",
        args.vms,
        created.as_secs_f64()
    );
    let mut peak_op = 0u64;
    let all = tr
        .wait_running(args.vms, Duration::from_secs(args.timeout_s), |p, r| {
            eprintln!(
                "  {:>5.0} s: placed {p}, running {r} / {}",
                start.elapsed().as_secs_f64(),
                args.vms
            )
        })
        .await;
    let all_running = start.elapsed();
    st.check_alive()?;
    let times = tr.times();
    drop(tr);
    keepalive.abort();
    reporter.abort();
    let dev = st.devcluster.rss();
    let op = st.operator.as_ref().and_then(|o| o.rss());
    if let Some(o) = op {
        peak_op = o.peak_bytes;
    }
    let agents: Vec<Option<rss::Rss>> = st.agents.iter().map(|a| a.proc.rss()).collect();
    let vm_api: kube::Api<ironvisor_crds::VirtualMachine> =
        kube::Api::namespaced(st.client.clone(), NS);
    let mut on_agent = Vec::new();
    for a in &st.agents {
        let lp = kube::api::ListParams::default().labels(&format!(
            "{}={}",
            ironvisor_crds::labels::NODE,
            a.node
        ));
        on_agent.push(vm_api.list(&lp).await.map(|l| l.items.len()).unwrap_or(0));
    }
    let bench_rss = rss::own();
    st.stop();

    // Baseline: the same domains straight into the test driver.
    let vm_spec: VirtualMachineSpec = serde_json::from_value(spec)?;
    let raw_dir = tempfile::tempdir()?;
    let domains = (0..args.vms)
        .map(|i| raw::domain(&vm_spec, &format!("vm-{i:05}"), raw_dir.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let raw_run =
        tokio::task::spawn_blocking(move || raw::run("test:///default", &domains, Duration::ZERO))
            .await??;

    let c2p = stats::summarize(&tracker::intervals(&times, |t| t.created, |t| t.placed));
    let c2r = stats::summarize(&tracker::intervals(&times, |t| t.created, |t| t.running));
    let placed_span = tracker::span(&times, |t| t.placed);
    let placed_n = times.iter().filter(|t| t.placed.is_some()).count();
    let decisions =
        placed_span.and_then(|(a, b)| stats::rate(placed_n as u64, b.saturating_duration_since(a)));
    let secs = |d: Duration| d.as_secs_f64();
    let cell = |s: Option<stats::Summary>, f: fn(&stats::Summary) -> f64| {
        s.map(|s| report::ms(f(&s))).unwrap_or_else(|| "n/a".into())
    };
    let mib = |r: Option<rss::Rss>| {
        r.map(|r| {
            format!(
                "{} (peak {})",
                report::mib(r.rss_mib()),
                report::mib(r.peak_mib())
            )
        })
        .unwrap_or_else(|| "n/a".into())
    };
    let mut rows = vec![
        vec![
            "VMs created (API only, baseline)".into(),
            format!("{:.1} s", secs(created)),
            format!("{:.0} creates/s", args.vms as f64 / secs(created)),
        ],
        vec![
            "operator decisions/s".into(),
            decisions
                .map(|d| format!("{d:.0}"))
                .unwrap_or_else(|| "n/a".into()),
            format!("{placed_n} placed between first and last placement"),
        ],
        vec![
            "creation → placement p50 / p99".into(),
            format!("{} / {}", cell(c2p, |s| s.p50_ms), cell(c2p, |s| s.p99_ms)),
            format!("max {}", cell(c2p, |s| s.max_ms)),
        ],
        vec![
            "creation → Running p50 / p99".into(),
            format!("{} / {}", cell(c2r, |s| s.p50_ms), cell(c2r, |s| s.p99_ms)),
            format!("max {}", cell(c2r, |s| s.max_ms)),
        ],
        vec![
            "time until all Running".into(),
            format!("{:.1} s", secs(all_running)),
            format!(
                "{}/{} Running; {} the API-only create time",
                times.iter().filter(|t| t.running.is_some()).count(),
                args.vms,
                report::times(stats::ratio(secs(all_running), secs(created)))
            ),
        ],
        vec![
            "raw define+start, test driver (baseline)".into(),
            format!("{:.1} s", secs(raw_run.wall)),
            format!(
                "ours/raw: {}",
                report::times(stats::ratio(secs(all_running), secs(raw_run.wall)))
            ),
        ],
        vec![
            "simulated agents' status writes".into(),
            reported.load(Ordering::Relaxed).to_string(),
            String::new(),
        ],
        vec![
            "RSS devcluster (control plane)".into(),
            mib(dev),
            String::new(),
        ],
        vec!["RSS operator".into(), mib(op), String::new()],
    ];
    for (i, a) in agents.iter().enumerate() {
        let note = format!("real agent on test:///default, {} VMs", on_agent[i]);
        rows.push(vec![format!("RSS agent-{i}"), mib(*a), note]);
    }
    rows.push(vec![
        "RSS bench (watch + simulated agents)".into(),
        mib(bench_rss),
        String::new(),
    ]);
    let text = report::table(&["", "value", "note"], &rows);
    let value = json!({
        "bench": "scale", "vms": args.vms, "simulated_hosts": args.hosts, "agents": args.agents,
        "all_running": all, "create_s": secs(created), "all_running_s": secs(all_running),
        "decisions_per_s": decisions, "creation_to_placement": c2p, "creation_to_running": c2r,
        "raw_define_start_s": secs(raw_run.wall),
        "rss_devcluster": rss_json(dev), "rss_operator": rss_json(op), "operator_peak_bytes": peak_op,
        "rss_agents": agents, "vms_on_agents": on_agent, "rss_bench": rss_json(bench_rss),
    });
    report::emit("scale", &text, &value, args.json.as_deref())?;
    anyhow::ensure!(
        all,
        "not every VM reached Running within {} s",
        args.timeout_s
    );
    Ok(())
}
