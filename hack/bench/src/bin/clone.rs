//! `bench-clone`: clones of a 1 GiB base (fully written), the agent's way
//! (`snapshot::clone::make`: pin, then a qcow2 overlay; or a full `qemu-img convert` with
//! progress) against raw `qemu-img create -b` and `qemu-img convert` in the same run,
//! alternating. Reports the linked-clone latency and the full-copy throughput. Not a test.
//! Needs only qemu-img (no libvirtd).

use clap::Parser;
use ironvisor_agent::snapshot::clone::{Source, make};
use ironvisor_agent::storage::layout;
use ironvisor_bench::stats;
use ironvisor_crds::vm::CloneMode;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Clone time: ours against raw qemu-img.
#[derive(Parser, Debug)]
struct Args {
    /// Linked clones of each kind.
    #[arg(long, default_value_t = 20)]
    linked_rounds: usize,
    /// Full copies of each kind.
    #[arg(long, default_value_t = 3)]
    full_rounds: usize,
    /// Size of the base, MiB (all of it written).
    #[arg(long, default_value_t = 1024)]
    base_mib: u64,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn drop_caches() {
    // Both sides read the base from the page cache after the first copy; flushing dirty
    // pages keeps a previous copy's writeback out of the next measurement.
    let _ = Command::new("sync").status();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::Builder::new()
        .prefix("ironvisor-bench-clone-")
        .tempdir_in("/var/tmp")?;
    let state = tmp.path();
    let base_dir = layout::vm_dir(state, "base").ok_or_else(|| anyhow::anyhow!("vm dir"))?;
    std::fs::create_dir_all(&base_dir)?;
    let base = layout::disk_file(&base_dir, "data");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg(format!("{}M", args.base_mib)))?;
    run(Command::new("qemu-io")
        .args(["-c", &format!("write -P 0x5a 0 {}M", args.base_mib)])
        .arg(&base))?;
    let size = args.base_mib << 20;
    let src = |mode| Source {
        disk: "data".into(),
        base_dir: base_dir.clone(),
        layer: "base".into(),
        file: base.clone(),
        mode,
        size,
    };
    let (tx, _rx) = tokio::sync::watch::channel(0u8);
    let (mut ours_l, mut raw_l, mut ours_f, mut raw_f) = (vec![], vec![], vec![], vec![]);
    for i in 0..args.linked_rounds {
        let dir = state.join(format!("vms/l{i}"));
        let t = Instant::now();
        make(&dir, &format!("l{i}"), &src(CloneMode::Linked), &tx).await?;
        ours_l.push(t.elapsed());
        let out = state.join(format!("raw-l{i}.qcow2"));
        let t = Instant::now();
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b"])
            .arg(&base)
            .arg(&out)
            .arg(size.to_string()))?;
        raw_l.push(t.elapsed());
    }
    for i in 0..args.full_rounds {
        let dir = state.join(format!("vms/f{i}"));
        drop_caches();
        let t = Instant::now();
        make(&dir, &format!("f{i}"), &src(CloneMode::Full), &tx).await?;
        ours_f.push(t.elapsed());
        std::fs::remove_dir_all(&dir)?;
        let out = state.join(format!("raw-f{i}.qcow2"));
        drop_caches();
        let t = Instant::now();
        run(Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "qcow2"])
            .arg(&base)
            .arg(&out))?;
        raw_f.push(t.elapsed());
        std::fs::remove_file(&out)?;
    }
    report(&args, &base, [&ours_l, &raw_l, &ours_f, &raw_f])
}

fn report(args: &Args, base: &Path, s: [&Vec<Duration>; 4]) -> anyhow::Result<()> {
    let sum = |v: &Vec<Duration>| stats::summarize(v).ok_or_else(|| anyhow::anyhow!("no samples"));
    let (ol, rl, of, rf) = (sum(s[0])?, sum(s[1])?, sum(s[2])?, sum(s[3])?);
    let mib_s = |ms: f64| args.base_mib as f64 / (ms / 1000.0);
    let allocated = std::fs::metadata(base).map(|m| m.len() >> 20).unwrap_or(0);
    println!(
        "clones of a {} MiB base ({allocated} MiB file), {} linked and {} full rounds each",
        args.base_mib, args.linked_rounds, args.full_rounds
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "linked clone", "p50 ms", "p95 ms", "max ms"
    );
    for (label, x) in [
        ("ironvisor (clone::make Linked: pin + overlay)", &ol),
        ("qemu-img create -b", &rl),
    ] {
        println!(
            "{label:<44} {:>9.1} {:>9.1} {:>9.1}",
            x.p50_ms, x.p95_ms, x.max_ms
        );
    }
    println!("{:<44} {:>9} {:>9}", "full copy", "p50 ms", "MiB/s");
    for (label, x) in [
        ("ironvisor (clone::make Full: convert -p)", &of),
        ("qemu-img convert", &rf),
    ] {
        println!("{label:<44} {:>9.1} {:>9.1}", x.p50_ms, mib_s(x.p50_ms));
    }
    println!(
        "BENCH_JSON {}",
        serde_json::json!({
            "bench": "clone", "base_mib": args.base_mib,
            "linked": {"ours": ol, "qemu_img": rl, "ratio_p50": ol.p50_ms / rl.p50_ms},
            "full": {"ours": of, "qemu_img": rf,
                     "ours_mib_s": mib_s(of.p50_ms), "qemu_img_mib_s": mib_s(rf.p50_ms)},
        })
    );
    Ok(())
}
