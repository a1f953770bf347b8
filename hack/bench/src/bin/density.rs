//! `bench-density`: KubeVirt's density test shape. N VMs are created through the API one
//! every `--interval-ms`; creation → Running p50/p95/max, with the devcluster, the operator
//! and one agent on `--libvirt-uri`. Baseline in the same run: the same domains defined
//! and started straight through libvirt at the same pace. Not a test: run in release.

use clap::Parser;
use ironvisor_bench::{api, raw, report, stack, stats, tracker};
use ironvisor_crds::VirtualMachineSpec;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Density: N VMs created one every interval, creation → Running.
#[derive(Parser, Debug)]
struct Args {
    /// How many VMs (KubeVirt's test uses 100).
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Milliseconds between two creates.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// libvirt URI of the agent and of the baseline.
    #[arg(long, default_value = "test:///default")]
    libvirt_uri: String,
    /// Directory of ironvisor-devcluster, -operator, -agent (default: this program's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Give up after this many seconds of waiting for Running.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

const NS: &str = "ivbench-density";
const NODE: &str = "bench-node";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stack::init_logging();
    let args = Args::parse();
    let spec_json = api::tiny_spec();
    let interval = Duration::from_millis(args.interval_ms);
    let shared = !args.libvirt_uri.starts_with("test:");

    let mut st =
        stack::Stack::start(ironvisor_bench::procs::bin_dir(args.bin_dir.clone())?).await?;
    let in_process = st
        .single_host(NS, NODE, &args.libvirt_uri, args.count, &spec_json)
        .await?;

    println!(
        "density: {} VMs, one every {} ms, on {} ...",
        args.count, args.interval_ms, args.libvirt_uri
    );
    let tr = tracker::Tracker::start(&st.client, NS, None);
    let start = Instant::now();
    let mut creates = Vec::new();
    for i in 0..args.count {
        let due = start + interval * u32::try_from(i)?;
        tokio::time::sleep_until(due.into()).await;
        let name = format!("vm-{i:04}");
        tr.created(NS, &name);
        let client = st.client.clone();
        let spec = spec_json.clone();
        creates.push(tokio::spawn(async move {
            api::create_vm(&client, NS, &name, &spec, None).await
        }));
    }
    for c in creates {
        c.await??;
    }
    let all = tr
        .wait_running(args.count, Duration::from_secs(args.timeout_s), |p, r| {
            eprintln!("  placed {p}, running {r} / {}", args.count)
        })
        .await;
    let wall = start.elapsed();
    st.check_alive()?;
    let times = tr.times();
    drop(tr);

    // Cleanup through the API (the agent destroys and undefines), before the baseline runs.
    if shared {
        api::delete_all_vms(&st.client, NS, Duration::from_secs(300)).await?;
    }
    if let Some(a) = in_process {
        a.stop().await;
    }

    // Baseline: the same domains, the same pace, straight through libvirt.
    let spec: VirtualMachineSpec = serde_json::from_value(spec_json)?;
    let raw_dir = st.path("raw");
    std::fs::create_dir_all(&raw_dir)?;
    let domains = (0..args.count)
        .map(|i| raw::domain(&spec, &format!("vm-{i:04}"), &raw_dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let uri = args.libvirt_uri.clone();
    let raw_run = tokio::task::spawn_blocking(move || raw::run(&uri, &domains, interval)).await??;
    st.stop();

    let c2r = stats::summarize(&tracker::intervals(&times, |t| t.created, |t| t.running));
    let c2p = stats::summarize(&tracker::intervals(&times, |t| t.created, |t| t.placed));
    let p2r = stats::summarize(&tracker::intervals(&times, |t| t.placed, |t| t.running));
    // From each domain's due time, as ours is from each VM's creation.
    let base = stats::summarize(&raw_run.since_due);
    let calls = stats::summarize(&raw_run.latencies);
    let fmt = |s: Option<stats::Summary>, f: fn(&stats::Summary) -> f64| {
        s.map(|s| report::ms(f(&s))).unwrap_or_else(|| "n/a".into())
    };
    let ratio = |f: fn(&stats::Summary) -> f64| {
        report::times(c2r.zip(base).and_then(|(a, b)| stats::ratio(f(&a), f(&b))))
    };
    let mut rows = Vec::new();
    for (label, f) in [
        (
            "p50",
            (|s: &stats::Summary| s.p50_ms) as fn(&stats::Summary) -> f64,
        ),
        ("p95", |s: &stats::Summary| s.p95_ms),
        ("max", |s: &stats::Summary| s.max_ms),
    ] {
        rows.push(vec![
            label.to_owned(),
            fmt(c2r, f),
            fmt(c2p, f),
            fmt(p2r, f),
            fmt(base, f),
            ratio(f),
        ]);
    }
    let text = format!(
        "{}\nraw = the same domains defined + started straight through libvirt at the same pace, one after the other, from each one's due time (the calls alone: p50 {}).\nVMs Running: {}/{} in {:.1} s (creates over {:.1} s); KubeVirt's published p50 for this test: ~15-19 s.\n",
        report::table(
            &[
                "",
                "creation→Running",
                "creation→placed",
                "placed→Running",
                "raw, due→started",
                "ours/raw"
            ],
            &rows
        ),
        fmt(calls, |s| s.p50_ms),
        times.iter().filter(|t| t.running.is_some()).count(),
        args.count,
        wall.as_secs_f64(),
        interval.as_secs_f64() * args.count.saturating_sub(1) as f64,
    );
    let value = json!({
        "bench": "density", "uri": args.libvirt_uri, "count": args.count,
        "interval_ms": args.interval_ms, "all_running": all, "wall_s": wall.as_secs_f64(),
        "creation_to_running": c2r, "creation_to_placed": c2p, "placed_to_running": p2r,
        "raw_due_to_started": base, "raw_define_start_calls": calls,
        "ratio_p50": c2r.zip(base).and_then(|(a, b)| stats::ratio(a.p50_ms, b.p50_ms)),
        "kubevirt_published_p50_s": "15-19",
        "timeline_ms": tracker::timeline(&times, start),
    });
    report::emit("density", &text, &value, args.json.as_deref())?;
    anyhow::ensure!(
        all,
        "not every VM reached Running within {} s",
        args.timeout_s
    );
    Ok(())
}
