//! `bench-snapshot`: a snapshot of a running VM with a 1 GiB disk, the agent's way (new
//! layer with qemu-img, then libvirt's atomic external disk-only snapshot reusing it) against
//! a raw `virsh snapshot-create-as --disk-only --atomic` in the same run, alternating so both
//! see the same chain depth. Not a test. Needs libvirtd (hack/start-libvirtd.sh).

use clap::Parser;
use ironvisor_agent::hypervisor::libvirt::Libvirt;
use ironvisor_agent::snapshot::files::layer_file;
use ironvisor_agent::snapshot::take::{Request, take_online};
use ironvisor_bench::stats;
use ironvisor_crds::snapshot::FreezePolicy;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};
use virt::connect::Connect;

/// Snapshot latency: ours against raw virsh.
#[derive(Parser, Debug)]
struct Args {
    /// Snapshots of each kind.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Virtual size of the disk, MiB.
    #[arg(long, default_value_t = 1024)]
    disk_mib: u64,
    /// MiB of data written to the disk before the first snapshot.
    #[arg(long, default_value_t = 256)]
    data_mib: u64,
}

const URI: &str = "qemu:///system";

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::Builder::new()
        .prefix("ironvisor-bench-snap-")
        .tempdir_in("/var/tmp")?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let dir = tmp.path();
    let root = layer_file(dir, "data", "base");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&root)
        .arg(format!("{}M", args.disk_mib)))?;
    run(Command::new("qemu-io")
        .args(["-c", &format!("write -P 0x5a 0 {}M", args.data_mib)])
        .arg(&root))?;
    let name = format!("iv-bench-snap-{}", std::process::id());
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        root.display()
    );
    let conn = Connect::open(Some(URI))?;
    let dom = conn.create_domain_xml(&xml, 0)?;
    let lv = Libvirt::new(URI);
    let disks = vec!["data".to_owned()];
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut active = "base".to_owned();
    let result: anyhow::Result<()> = async {
        for i in 0..args.rounds {
            let new = format!("s-{i}");
            let req = Request {
                vm_dir: dir,
                disks: &disks,
                active: &active,
                new_layer: &new,
                freeze: FreezePolicy::Never,
            };
            let t = Instant::now();
            take_online(&lv, &name, &req).await?;
            ours.push(t.elapsed());
            active = new;

            let new = format!("v-{i}");
            let file = layer_file(dir, "data", &new);
            let t = Instant::now();
            run(Command::new("virsh")
                .args(["-c", URI, "snapshot-create-as", &name, &new])
                .args(["--disk-only", "--atomic", "--no-metadata", "--diskspec"])
                .arg(format!("vda,snapshot=external,file={}", file.display())))?;
            raw.push(t.elapsed());
            // Our next snapshot freezes the layer virsh made.
            active = new;
        }
        Ok(())
    }
    .await;
    let _ = dom.destroy();
    lv.close();
    result?;
    report(&args, &ours, &raw)
}

fn report(args: &Args, ours: &[Duration], raw: &[Duration]) -> anyhow::Result<()> {
    let o = stats::summarize(ours).ok_or_else(|| anyhow::anyhow!("no samples"))?;
    let r = stats::summarize(raw).ok_or_else(|| anyhow::anyhow!("no samples"))?;
    println!(
        "snapshot of a running VM, {} MiB disk ({} MiB written), {} rounds each",
        args.disk_mib, args.data_mib, args.rounds
    );
    println!("{:<28} {:>9} {:>9} {:>9}", "", "p50 ms", "p95 ms", "max ms");
    for (label, s) in [
        ("ironvisor (take_online)", &o),
        ("virsh snapshot-create-as", &r),
    ] {
        println!(
            "{label:<28} {:>9.1} {:>9.1} {:>9.1}",
            s.p50_ms, s.p95_ms, s.max_ms
        );
    }
    let ratio = o.p50_ms / r.p50_ms;
    println!("ratio (p50 ours / p50 virsh): {ratio:.2}");
    println!(
        "BENCH_JSON {}",
        serde_json::json!({"bench": "snapshot", "ours": o, "virsh": r, "ratio_p50": ratio})
    );
    Ok(())
}
