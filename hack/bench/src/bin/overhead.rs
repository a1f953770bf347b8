//! `bench-overhead`: what the API, the operator and the agent add on top of libvirt. N VMs
//! are created at once; each VM's placement → Running (the agent's share) and the whole
//! batch's first placement → last Running are compared with defining and starting the same
//! domains back to back straight through libvirt in the same run. Not a test.

use clap::Parser;
use futures::StreamExt as _;
use ironvisor_bench::{api, raw, report, stack, stats, tracker};
use ironvisor_crds::VirtualMachineSpec;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Overhead: placement → Running against raw define + start.
#[derive(Parser, Debug)]
struct Args {
    /// How many VMs.
    #[arg(long, default_value_t = 100)]
    count: usize,
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

const NS: &str = "ivbench-overhead";
const NODE: &str = "bench-node";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stack::init_logging();
    let args = Args::parse();
    let spec_json = api::tiny_spec();
    let shared = !args.libvirt_uri.starts_with("test:");

    let mut st =
        stack::Stack::start(ironvisor_bench::procs::bin_dir(args.bin_dir.clone())?).await?;
    let in_process = st
        .single_host(NS, NODE, &args.libvirt_uri, args.count, &spec_json)
        .await?;

    println!(
        "overhead: {} VMs at once on {} ...",
        args.count, args.libvirt_uri
    );
    let tr = tracker::Tracker::start(&st.client, NS, None);
    let client = st.client.clone();
    let names: Vec<String> = (0..args.count).map(|i| format!("vm-{i:04}")).collect();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            tr.created(NS, &name);
            let client = client.clone();
            let spec = spec_json.clone();
            async move { api::create_vm(&client, NS, &name, &spec, None).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let all = tr
        .wait_running(args.count, Duration::from_secs(args.timeout_s), |p, r| {
            eprintln!("  placed {p}, running {r} / {}", args.count)
        })
        .await;
    st.check_alive()?;
    let times = tr.times();
    drop(tr);
    if shared {
        api::delete_all_vms(&st.client, NS, Duration::from_secs(300)).await?;
    }
    if let Some(a) = in_process {
        a.stop().await;
    }

    let spec: VirtualMachineSpec = serde_json::from_value(spec_json)?;
    let raw_dir = st.path("raw");
    std::fs::create_dir_all(&raw_dir)?;
    let domains = names
        .iter()
        .map(|n| raw::domain(&spec, n, &raw_dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let uri = args.libvirt_uri.clone();
    let raw_run =
        tokio::task::spawn_blocking(move || raw::run(&uri, &domains, Duration::ZERO)).await??;
    st.stop();

    let p2r = stats::summarize(&tracker::intervals(&times, |t| t.placed, |t| t.running));
    let c2r = stats::summarize(&tracker::intervals(&times, |t| t.created, |t| t.running));
    let base = stats::summarize(&raw_run.latencies);
    // Raw from the batch start: each domain's wait behind the ones before it included.
    let queued = stats::summarize(&raw_run.since_due);
    let batch = tracker::span(&times, |t| t.placed)
        .zip(tracker::span(&times, |t| t.running))
        .map(|((first_placed, _), (_, last_running))| {
            last_running.saturating_duration_since(first_placed)
        });
    let create_batch = tracker::span(&times, |t| t.created)
        .zip(tracker::span(&times, |t| t.running))
        .map(|((first, _), (_, last))| last.saturating_duration_since(first));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let r_p50 = p2r
        .zip(base)
        .and_then(|(a, b)| stats::ratio(a.p50_ms, b.p50_ms));
    let r_wall = batch.and_then(|b| stats::ratio(ms(b), ms(raw_run.wall)));
    let cell = |s: Option<stats::Summary>, f: fn(&stats::Summary) -> f64| {
        s.map(|s| report::ms(f(&s))).unwrap_or_else(|| "n/a".into())
    };
    let rows = vec![
        vec![
            "per VM p50".into(),
            cell(p2r, |s| s.p50_ms),
            cell(base, |s| s.p50_ms),
            report::times(r_p50),
            cell(queued, |s| s.p50_ms),
        ],
        vec![
            "per VM p95".into(),
            cell(p2r, |s| s.p95_ms),
            cell(base, |s| s.p95_ms),
            report::times(
                p2r.zip(base)
                    .and_then(|(a, b)| stats::ratio(a.p95_ms, b.p95_ms)),
            ),
            cell(queued, |s| s.p95_ms),
        ],
        vec![
            "per VM max".into(),
            cell(p2r, |s| s.max_ms),
            cell(base, |s| s.max_ms),
            report::times(
                p2r.zip(base)
                    .and_then(|(a, b)| stats::ratio(a.max_ms, b.max_ms)),
            ),
            cell(queued, |s| s.max_ms),
        ],
        vec![
            format!("all {} VMs", args.count),
            batch
                .map(|b| report::ms(ms(b)))
                .unwrap_or_else(|| "n/a".into()),
            report::ms(ms(raw_run.wall)),
            report::times(r_wall),
        ],
    ];
    let text = format!(
        "{}\nours = placement → Running (first placement → last Running for the batch); raw = define + start calls, back to back; 'raw from batch start' adds each domain's wait behind the ones before it.\ncreation → Running: p50 {}, whole batch {}.\n",
        report::table(
            &[
                "",
                "ours",
                "raw libvirt",
                "ours/raw",
                "raw from batch start"
            ],
            &rows
        ),
        cell(c2r, |s| s.p50_ms),
        create_batch
            .map(|b| report::ms(ms(b)))
            .unwrap_or_else(|| "n/a".into()),
    );
    let value = json!({
        "bench": "overhead", "uri": args.libvirt_uri, "count": args.count, "all_running": all,
        "placed_to_running": p2r, "creation_to_running": c2r, "raw_define_start": base, "raw_from_batch_start": queued,
        "batch_placed_to_running_ms": batch.map(ms), "raw_batch_ms": ms(raw_run.wall),
        "ratio_p50": r_p50, "ratio_batch": r_wall,
        "batch_creation_to_running_ms": create_batch.map(ms),
    });
    report::emit("overhead", &text, &value, args.json.as_deref())?;
    anyhow::ensure!(
        all,
        "not every VM reached Running within {} s",
        args.timeout_s
    );
    Ok(())
}
