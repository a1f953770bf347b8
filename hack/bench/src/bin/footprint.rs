//! `bench-footprint`: the agent's resident memory idle and with N VMs (default 1,000) on
//! `test:///default`, and its reconciles per second (during the burst of creates, and for a
//! cold full resync after a restart). The bench places the VMs itself (label + Scheduled,
//! as the operator would), so only the agent is measured. Baseline in the same run: this
//! process's own RSS growth from defining and starting the same domains straight through
//! libvirt's test driver, which lives inside whichever process opens it. Not a test.

use clap::Parser;
use futures::StreamExt as _;
use ironvisor_bench::{api, prom, raw, report, rss, stack, stats, tracker};
use ironvisor_crds::VirtualMachineSpec;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Footprint: agent RSS idle and with N VMs; reconciles per second.
#[derive(Parser, Debug)]
struct Args {
    /// How many VMs on the one agent.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Seconds to let the agent settle before reading its idle and loaded RSS.
    #[arg(long, default_value_t = 5)]
    settle_s: u64,
    /// Directory of ironvisor-devcluster and -agent (default: this program's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Give up after this many seconds of waiting.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
}

const NS: &str = "ivbench-footprint";
const NODE: &str = "bench-node";
const URI: &str = "test:///default";
const RECONCILES: &str = "ironvisor_agent_reconciles_total";

async fn reconciles(http: &reqwest::Client, url: &str) -> f64 {
    prom::scrape(http, url, RECONCILES).await.unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stack::init_logging();
    let args = Args::parse();
    let settle = Duration::from_secs(args.settle_s);
    let timeout = Duration::from_secs(args.timeout_s);
    let http = reqwest::Client::new();
    let mut st =
        stack::Stack::start(ironvisor_bench::procs::bin_dir(args.bin_dir.clone())?).await?;
    api::namespace(&st.client, NS).await?;
    api::hypervisor(&st.client, NODE, 64.0, 4.0).await?;
    st.start_agent(NODE, URI, 60)?;
    api::wait_host_ready(&st.client, NODE, Duration::from_secs(30)).await?;
    tokio::time::sleep(settle).await;
    st.check_alive()?;
    let idle = st.agents[0]
        .proc
        .rss()
        .ok_or_else(|| anyhow::anyhow!("no agent RSS"))?;
    let url = st.agents[0].metrics_url.clone();
    let api_idle = st.devcluster.rss();

    println!(
        "footprint: {} VMs placed on one agent on {URI} ...",
        args.count
    );
    let tr = tracker::Tracker::start(&st.client, NS, None);
    let before = reconciles(&http, &url).await;
    let start = Instant::now();
    let spec = api::tiny_spec();
    let client = st.client.clone();
    let names: Vec<String> = (0..args.count).map(|i| format!("vm-{i:05}")).collect();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            tr.created(NS, &name);
            let client = client.clone();
            let spec = spec.clone();
            async move {
                api::create_vm(&client, NS, &name, &spec, Some(NODE)).await?;
                api::confirm_placement(&client, NS, &name, NODE).await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let all = tr
        .wait_running(args.count, timeout, |p, r| {
            eprintln!("  placed {p}, running {r} / {}", args.count)
        })
        .await;
    let burst = start.elapsed();
    let burst_reconciles = reconciles(&http, &url).await - before;
    st.check_alive()?;
    let times = tr.times();
    drop(tr);
    tokio::time::sleep(settle).await;
    let loaded = st.agents[0]
        .proc
        .rss()
        .ok_or_else(|| anyhow::anyhow!("no agent RSS"))?;
    let api_loaded = st.devcluster.rss();

    // A cold full resync: a new agent process finds every VM and (the test driver's state
    // died with the old process) defines and starts each domain again.
    println!(
        "footprint: restarting the agent for a full resync of {} VMs ...",
        args.count
    );
    let old = st.agents.remove(0);
    old.proc.stop(Duration::from_secs(10));
    let restart = Instant::now();
    st.start_agent(NODE, URI, 60)?;
    let url = st.agents[0].metrics_url.clone();
    let deadline = Instant::now() + timeout;
    let resync_done = loop {
        st.check_alive()?;
        if reconciles(&http, &url).await >= args.count as f64 {
            break Some(restart.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(settle).await;
    let after_resync = st.agents[0].proc.rss();
    st.stop();

    // Baseline: the same domains straight into the test driver, in this process.
    let vm_spec: VirtualMachineSpec = serde_json::from_value(spec)?;
    let raw_dir = tempfile::tempdir()?;
    let domains = names
        .iter()
        .map(|n| raw::domain(&vm_spec, n, raw_dir.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (raw_before, raw_after, raw_run) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let conn = virt::connect::Connect::open(Some(URI))?;
            let before = rss::own();
            let run = raw::define_and_start(&conn, &domains, Duration::ZERO)?;
            let after = rss::own();
            let names: Vec<String> = domains.iter().map(|d| d.name.clone()).collect();
            raw::remove(&conn, &names);
            drop(conn);
            Ok((before, after, run))
        })
        .await??;
    let raw_growth = raw_before
        .zip(raw_after)
        .map(|(b, a)| a.rss_bytes.saturating_sub(b.rss_bytes) as f64 / (1024.0 * 1024.0));
    let agent_growth = (loaded.rss_bytes.saturating_sub(idle.rss_bytes)) as f64 / (1024.0 * 1024.0);
    let n = args.count as f64;
    let burst_rate = stats::rate(burst_reconciles as u64, burst);
    let resync_rate = resync_done.and_then(|d| stats::rate(args.count as u64, d));
    let raw_rate = stats::rate(args.count as u64, raw_run.wall);
    let c2r = stats::summarize(&tracker::intervals(&times, |t| t.created, |t| t.running));
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "n/a".into());
    let rows = vec![
        vec![
            "agent RSS idle".into(),
            report::mib(idle.rss_mib()),
            String::new(),
        ],
        vec![
            format!("agent RSS with {} VMs", args.count),
            report::mib(loaded.rss_mib()),
            format!("peak {}", report::mib(loaded.peak_mib())),
        ],
        vec![
            "agent RSS growth per VM".into(),
            format!("{:.1} KiB", agent_growth * 1024.0 / n),
            format!(
                "raw test driver: {} KiB",
                opt(raw_growth.map(|g| g * 1024.0 / n), |v| format!("{v:.1}"))
            ),
        ],
        vec![
            "agent RSS after a cold resync".into(),
            opt(after_resync.map(|r| r.rss_mib()), report::mib),
            String::new(),
        ],
        vec![
            "reconciles/s, burst of creates".into(),
            opt(burst_rate, |r| format!("{r:.0}")),
            format!(
                "{burst_reconciles:.0} reconciles in {:.1} s",
                burst.as_secs_f64()
            ),
        ],
        vec![
            "reconciles/s, cold full resync".into(),
            opt(resync_rate, |r| format!("{r:.0}")),
            resync_done
                .map(|d| {
                    format!(
                        "{} VMs in {:.1} s (incl. process start)",
                        args.count,
                        d.as_secs_f64()
                    )
                })
                .unwrap_or_else(|| "n/a".into()),
        ],
        vec![
            "raw define+start/s (same domains)".into(),
            opt(raw_rate, |r| format!("{r:.0}")),
            format!(
                "ours/raw time: {}",
                report::times(
                    resync_done
                        .and_then(|d| stats::ratio(d.as_secs_f64(), raw_run.wall.as_secs_f64()))
                )
            ),
        ],
        vec![
            "creation → Running p50 / p99".into(),
            c2r.map(|s| format!("{} / {}", report::ms(s.p50_ms), report::ms(s.p99_ms)))
                .unwrap_or_else(|| "n/a".into()),
            String::new(),
        ],
        vec![
            "devcluster RSS idle → loaded".into(),
            format!(
                "{} → {}",
                opt(api_idle.map(|r| r.rss_mib()), report::mib),
                opt(api_loaded.map(|r| r.rss_mib()), report::mib)
            ),
            String::new(),
        ],
    ];
    let kubevirt_mib = 20.0 + 290.0 * n;
    let text = format!(
        "{}\nThe test driver's domains live inside the agent process, so the agent's figures include libvirt's own state.\nKubeVirt for context: virt-handler 15-25 MB, plus a ~290 MiB virt-launcher per VM (≈ {:.0} GiB for {} VMs).\n",
        report::table(&["", "value", "note"], &rows),
        kubevirt_mib / 1024.0,
        args.count,
    );
    let value = json!({
        "bench": "footprint", "uri": URI, "count": args.count, "all_running": all,
        "agent_idle": idle, "agent_loaded": loaded, "agent_after_resync": after_resync,
        "agent_growth_per_vm_kib": agent_growth * 1024.0 / n,
        "raw_growth_per_vm_kib": raw_growth.map(|g| g * 1024.0 / n),
        "burst_s": burst.as_secs_f64(), "burst_reconciles": burst_reconciles,
        "reconciles_per_s_burst": burst_rate, "resync_s": resync_done.map(|d| d.as_secs_f64()),
        "reconciles_per_s_resync": resync_rate, "raw_define_start_per_s": raw_rate,
        "creation_to_running": c2r, "devcluster_idle": api_idle, "devcluster_loaded": api_loaded,
        "kubevirt_virt_handler_mb": "15-25", "kubevirt_launcher_mib_per_vm": 290,
    });
    report::emit("footprint", &text, &value, args.json.as_deref())?;
    anyhow::ensure!(all, "not every VM reached Running");
    Ok(())
}
