//! `bench-migration`: live migration of the same idle and busy guest between the same two
//! hosts (private libvirtds in network namespaces, as tests/migration.rs: the devcluster, the
//! operator and an agent per host) through Ironvisor against a raw
//! `virsh migrate --live --p2p --copy-storage-all`, in one run. Not a test. Needs root and
//! libvirt (hack/install-deps.sh) and the workspace's debug binaries (`cargo build --bins`).
//!
//! Measured per migration, alternating directions:
//! - migrate call → completion: for Ironvisor the source agent's own measure around
//!   `virDomainMigrateToURI3` (`status.source.elapsedMilliseconds`), for raw the wall time of
//!   the `virsh migrate` process;
//! - downtime: QEMU's (the completed incoming job on the target: `status.target.
//!   downtimeMilliseconds` / `virsh domjobinfo --completed`) and the host-side gap between
//!   the guest's last counter line on the source and its first on the target;
//! - Ironvisor only, end to end: from `kubectl apply` of the migration to `Completed` seen
//!   through a watch (one connection: a `kubectl get` every 50 ms would start a process per
//!   poll on our side only and slow the QEMU it times).
//! - Ironvisor only, a drain: `--drain-vms` idle diskless guests on one host, the host put in
//!   maintenance (`spec.maintenance: true`), timed until `status.maintenance` shows every VM
//!   moved; printed as the total and per VM (the default policy moves 2 at once per host).
//!
//! The raw guest is defined from our guest's migratable XML (our metadata removed, its
//! directory moved) and both run side by side; the rounds are interleaved (ours, virsh,
//! ours, virsh, …) so a change of the machine's load hits both sides of each pair alike. The
//! summary prints each pair's ratio (ours / virsh, migrate call) and their median, besides
//! the percentiles of each side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use ironvisor_bench::stats;
use ironvisor_bench::watch::ApiWait;
use ironvisor_crds::{Hypervisor, VirtualMachineMigration};
use ironvisor_tests::migration::{Cluster, TickWatch, switch_over};
use ironvisor_tests::system::uid;

/// Live migration: Ironvisor against raw virsh.
#[derive(Parser, Debug)]
struct Args {
    /// Migrations of each guest, each way counted (alternating directions).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Idle VMs on the drained host (0: no drain).
    #[arg(long, default_value_t = 4)]
    drain_vms: usize,
    /// Pause before every migration, both sides, milliseconds. This machine returns freed
    /// memory to its own host about 2 s after it is freed (free page reporting,
    /// `page_reporting.page_reporting_order` on the kernel command line); a target QEMU that
    /// touches memory returned so takes it back page by page, several times slower than
    /// memory freed just before. Our side takes longer from one migration's end to the next
    /// one's call (apply, scheduling, target preparation) than raw virsh, so without a pause
    /// ours always started on returned memory and virsh mostly on memory the previous round
    /// had just freed: unequal conditions, not overhead. With the pause longer than the
    /// reporting delay both start alike.
    #[arg(long, default_value_t = 3000)]
    settle_ms: u64,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One migration's figures, milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Sample {
    call_ms: f64,
    qemu_downtime_ms: f64,
    /// The job's own time as QEMU/libvirt report it on the target (`Time elapsed`).
    job_ms: Option<f64>,
    gap_ms: f64,
    e2e_ms: Option<f64>,
}

const LONG: Duration = Duration::from_secs(300);

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn virsh(uri: &str, args: &[&str]) -> anyhow::Result<String> {
    sh(Command::new("virsh").arg("-c").arg(uri).args(args))
}

fn domain_of(uri: &str, vm: &str) -> Option<String> {
    let list = virsh(uri, &["list", "--name"]).ok()?;
    let wanted = format!("-{vm}-");
    list.lines()
        .find(|n| n.starts_with("iv-") && n.contains(&wanted))
        .map(str::to_owned)
}

/// QEMU's downtime and the job's elapsed time of the last incoming job on `uri`.
fn completed_job(uri: &str, dom: &str) -> anyhow::Result<(f64, Option<f64>)> {
    let text = virsh(uri, &["domjobinfo", "--completed", dom])?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("ms").trim().parse::<f64>().ok())
    };
    let downtime =
        field("Total downtime:").ok_or_else(|| anyhow::anyhow!("no downtime in {text}"))?;
    Ok((downtime, field("Time elapsed:")))
}

/// The host-side gap of the switch-over of the migration started at `since` (the ticks
/// before it hold the earlier rounds' switch-overs).
fn gap_ms(watch: &TickWatch, since: Instant, from: usize, to: usize) -> anyhow::Result<f64> {
    let last = watch.ticks().iter().map(|t| t.value).max().unwrap_or(0);
    watch.wait_tick_on(to, last, LONG);
    let ticks: Vec<_> = watch
        .ticks()
        .into_iter()
        .filter(|t| t.at >= since)
        .collect();
    let sw = switch_over(&ticks, from, to).ok_or_else(|| anyhow::anyhow!("no switch-over seen"))?;
    Ok(sw.gap.as_secs_f64() * 1000.0)
}

/// Ironvisor's guest between rounds: its VM, its serial logs' watch, the host it is on.
struct Ours {
    name: String,
    watch: TickWatch,
    at: usize,
}

impl Ours {
    /// Watch the running VM `name`.
    fn start(c: &Cluster, name: &str) -> Self {
        let vm = c.sys.wait_phase(&c.ns, name, "Running", LONG);
        let vm_uid = uid(&vm);
        let node = vm["status"]["nodeName"].as_str().unwrap_or_default();
        let at = c
            .hosts
            .iter()
            .position(|h| h.agent.node == node)
            .unwrap_or(0);
        let logs = c
            .hosts
            .iter()
            .map(|h| h.agent.vm_dir(&vm_uid).join("console.log"))
            .collect();
        let watch = TickWatch::start(logs);
        watch.wait_tick_on(at, 20, LONG);
        Ours {
            name: name.to_owned(),
            watch,
            at,
        }
    }

    /// Round `i`: a migration to the other host through `kubectl apply`.
    fn round(&mut self, c: &Cluster, api: &ApiWait, i: usize) -> anyhow::Result<Sample> {
        let (at, to, name) = (self.at, 1 - self.at, &self.name);
        let m = format!("{name}-{i}");
        let t = Instant::now();
        c.apply_migration(&m, name, Some(&c.hosts[to].agent.node), "");
        let migrations = || api.namespaced::<VirtualMachineMigration>(&c.ns);
        let done = api.until(migrations(), &m, LONG, |v| {
            matches!(v["status"]["phase"].as_str(), Some("Completed" | "Failed"))
        })?;
        let e2e = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(
            done["status"]["phase"] == "Completed",
            "migration failed: {}",
            done["status"]
        );
        let done = api.until(migrations(), &m, LONG, |v| {
            v["status"]["target"]["downtimeMilliseconds"].is_number()
        })?;
        let downtime = done["status"]["target"]["downtimeMilliseconds"]
            .as_f64()
            .unwrap_or_default();
        let sample = Sample {
            call_ms: done["status"]["source"]["elapsedMilliseconds"]
                .as_f64()
                .unwrap_or(0.0),
            qemu_downtime_ms: downtime,
            job_ms: done["status"]["target"]["jobMilliseconds"].as_f64(),
            gap_ms: gap_ms(&self.watch, t, at, to)?,
            e2e_ms: Some(e2e),
        };
        eprintln!("ironvisor {name} round {i}: {sample:?}");
        self.at = to;
        Ok(sample)
    }
}

/// The raw guest: our VM's migratable XML with our metadata removed, renamed, its directory
/// moved to `dir` (disk copied), defined and started on host 0.
fn raw_domain(c: &Cluster, ours_xml: &str, vm_dir: &str, dir: &Path) -> anyhow::Result<String> {
    let name = format!("raw-bench-{}", std::process::id());
    let mut xml = ours_xml.to_owned();
    if let (Some(a), Some(b)) = (xml.find("<metadata>"), xml.find("</metadata>")) {
        xml.replace_range(a..b + "</metadata>".len(), "");
    }
    if let (Some(a), Some(b)) = (xml.find("<uuid>"), xml.find("</uuid>")) {
        xml.replace_range(a..b + "</uuid>".len(), "");
    }
    let start = xml.find("<name>").unwrap_or(0);
    let end = xml.find("</name>").unwrap_or(0);
    xml.replace_range(
        start..end + "</name>".len(),
        &format!("<name>{name}</name>"),
    );
    let src = dir.join("a");
    let xml = xml.replace(vm_dir, &src.to_string_lossy());
    std::fs::write(dir.join("raw.xml"), &xml)?;
    virsh(
        c.hosts[0].libvirtd.uri(),
        &["define", &dir.join("raw.xml").to_string_lossy()],
    )?;
    virsh(c.hosts[0].libvirtd.uri(), &["start", &name])?;
    Ok(name)
}

/// The raw guest between rounds: its domain, its two directories (one per host), its serial
/// logs' watch, the host it is on.
struct Raw {
    dom: String,
    dir: PathBuf,
    dirs: [PathBuf; 2],
    watch: TickWatch,
    at: usize,
}

impl Raw {
    /// Watch the raw domain `dom`, started on host 0 from `dir/a`.
    fn start(dom: String, dir: &Path) -> Self {
        let dirs = [dir.join("a"), dir.join("b")];
        let watch = TickWatch::start(dirs.iter().map(|d| d.join("console.log")).collect());
        watch.wait_tick_on(0, 20, LONG);
        Raw {
            dom,
            dir: dir.to_owned(),
            dirs,
            watch,
            at: 0,
        }
    }

    /// Round `i`: the target's disk created first (as our target agent does), the
    /// definition's directory rewritten for it, `virsh migrate` timed.
    fn round(&mut self, c: &Cluster, i: usize) -> anyhow::Result<Sample> {
        let (at, to, dom, dirs) = (self.at, 1 - self.at, &self.dom, &self.dirs);
        let (from_uri, to_uri) = (c.hosts[at].libvirtd.uri(), c.hosts[to].libvirtd.uri());
        let live = virsh(from_uri, &["dumpxml", "--migratable", dom])?;
        let dest = live.replace(&*dirs[at].to_string_lossy(), &dirs[to].to_string_lossy());
        let _ = std::fs::remove_dir_all(&dirs[to]);
        std::fs::create_dir_all(&dirs[to])?;
        for disk in std::fs::read_dir(&dirs[at])? {
            let p = disk?.path();
            if p.extension().is_some_and(|e| e == "qcow2") {
                let size = sh(Command::new("qemu-img")
                    .args(["info", "-U", "--output=json"])
                    .arg(&p))?;
                let v: serde_json::Value = serde_json::from_str(&size)?;
                let bytes = v["virtual-size"].as_u64().unwrap_or(0);
                sh(Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(dirs[to].join(p.file_name().unwrap_or_default()))
                    .arg(bytes.to_string()))?;
            }
        }
        let xml_file = self.dir.join(format!("dest-{i}.xml"));
        std::fs::write(&xml_file, &dest)?;
        let addr = &c.hosts[to].address;
        let xf = xml_file.to_string_lossy();
        let migrate_uri = format!("tcp://{addr}");
        let t = Instant::now();
        virsh(
            from_uri,
            &[
                "migrate",
                "--live",
                "--p2p",
                "--persistent",
                "--undefinesource",
                "--copy-storage-all",
                "--xml",
                &xf,
                "--persistent-xml",
                &xf,
                dom,
                to_uri,
                &migrate_uri,
                "--listen-address",
                addr,
            ],
        )?;
        let call = t.elapsed().as_secs_f64() * 1000.0;
        let (downtime, job) = completed_job(to_uri, dom)?;
        let sample = Sample {
            call_ms: call,
            qemu_downtime_ms: downtime,
            job_ms: job,
            gap_ms: gap_ms(&self.watch, t, at, to)?,
            e2e_ms: None,
        };
        eprintln!("raw round {i}: {sample:?}");
        self.at = to;
        Ok(sample)
    }

    /// Destroy and undefine the domain wherever it is.
    fn remove(&self, c: &Cluster) {
        let uri = c.hosts[self.at].libvirtd.uri();
        let _ = virsh(uri, &["destroy", &self.dom]);
        let _ = virsh(uri, &["undefine", &self.dom]);
    }
}

/// Both guests of one kind, then their rounds interleaved (ours, virsh, ours, virsh, …): a
/// change of the machine's load hits both sides of a pair alike. Both guests run for the
/// whole run, so each side migrates while the other's idle twin runs beside it.
fn guest(
    c: &Cluster,
    (api, settle): (&ApiWait, Duration),
    kind: &str,
    rounds: usize,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    let name = format!("bench-{kind}");
    match kind {
        "busy" => c.apply_busy_vm(&name, "{}"),
        _ => c.apply_counter_vm(&name),
    }
    let mut ours = Ours::start(c, &name);
    let vm = c.sys.vm(&c.ns, &name);
    let vm_uid = uid(&vm);
    let host = &c.hosts[ours.at];
    let dom = domain_of(host.libvirtd.uri(), &name)
        .ok_or_else(|| anyhow::anyhow!("no domain of {name}"))?;
    let xml = virsh(host.libvirtd.uri(), &["dumpxml", "--migratable", &dom])?;
    let vm_dir = host.agent.vm_dir(&vm_uid);
    let tmp = tempfile::Builder::new()
        .prefix("ironvisor-bench-mig-")
        .tempdir_in("/var/tmp")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::create_dir_all(tmp.path().join("a"))?;
    for f in std::fs::read_dir(&vm_dir)? {
        let p = f?.path();
        if p.extension().is_some_and(|e| e == "qcow2") {
            sh(Command::new("qemu-img")
                .args(["convert", "-U", "-O", "qcow2"])
                .arg(&p)
                .arg(tmp.path().join("a").join(p.file_name().unwrap_or_default())))?;
        }
    }
    let raw_dom = raw_domain(c, &xml, &vm_dir.to_string_lossy(), tmp.path())?;
    let mut raw = Raw::start(raw_dom, tmp.path());
    let (mut o, mut r) = (Vec::new(), Vec::new());
    let run = interleave(
        (c, api, settle),
        (&mut ours, &mut raw),
        rounds,
        (&mut o, &mut r),
    );
    raw.remove(c);
    c.sys
        .kubectl_ok(&["delete", "vm", &name, "-n", &c.ns, "--wait=true"]);
    run?;
    Ok((o, r))
}

/// The rounds, ours then virsh in each pair.
fn interleave(
    (c, api, settle): (&Cluster, &ApiWait, Duration),
    (ours, raw): (&mut Ours, &mut Raw),
    rounds: usize,
    (o, r): (&mut Vec<Sample>, &mut Vec<Sample>),
) -> anyhow::Result<()> {
    for i in 0..rounds {
        std::thread::sleep(settle);
        o.push(ours.round(c, api, i)?);
        std::thread::sleep(settle);
        r.push(raw.round(c, i)?);
    }
    Ok(())
}

/// `ours / virsh` of each pair's migrate call.
fn pair_ratios(o: &[Sample], r: &[Sample]) -> Vec<Option<f64>> {
    o.iter()
        .zip(r)
        .map(|(a, b)| stats::ratio(a.call_ms, b.call_ms))
        .collect()
}

fn col(s: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<stats::Summary> {
    let v: Vec<Duration> = s
        .iter()
        .filter_map(&f)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    stats::summarize(&v)
}

fn set_spec(c: &Cluster, host: usize, field: &str, on: bool) {
    c.sys.kubectl_ok(&[
        "patch",
        "hypervisor",
        &c.hosts[host].agent.node,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"{field}":{on}}}}}"#),
    ]);
}

/// `n` idle diskless guests placed on host 0 (host 1 cordoned meanwhile), then host 0 put
/// in maintenance: milliseconds until the drain reports every VM moved, and per VM.
fn drain(c: &Cluster, api: &ApiWait, n: usize) -> anyhow::Result<(f64, f64)> {
    set_spec(c, 1, "unschedulable", true);
    let names: Vec<String> = (1..=n).map(|i| format!("drain{i}")).collect();
    for name in &names {
        c.apply_diskless_vm(name, "96Mi", "ironvisor.counter", "");
    }
    for name in &names {
        let vm = c.sys.wait_phase(&c.ns, name, "Running", LONG);
        anyhow::ensure!(
            vm["status"]["nodeName"] == c.hosts[0].agent.node.as_str(),
            "{name} was not placed on the host to drain"
        );
    }
    set_spec(c, 1, "unschedulable", false);
    let host = &c.hosts[0].agent.node;
    let t = Instant::now();
    set_spec(c, 0, "maintenance", true);
    api.until(api.all::<Hypervisor>(), host, LONG, move |hv| {
        let m = &hv["status"]["maintenance"];
        m["vmsMoved"].as_u64() == Some(n as u64) && m["vmsRemaining"] == 0
    })?;
    let total = t.elapsed().as_secs_f64() * 1000.0;
    set_spec(c, 0, "maintenance", false);
    Ok((total, total / n as f64))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let c = Cluster::start("bmig", 2, "{virtualMachines: 8, vcpus: 8, memory: 1Gi}");
    let api = ApiWait::connect(&c.sys.kubeconfig)?;
    let settle = Duration::from_millis(args.settle_ms);
    let mut results = serde_json::Map::new();
    println!(
        "live migration, 128 MiB guest with a 64 MiB disk copied, {} rounds each, interleaved \
         (ours, virsh, …), directions alternating, {} ms pause before each",
        args.rounds, args.settle_ms
    );
    println!(
        "{:<10} {:<10} {:>12} {:>12} {:>12} {:>14} {:>12} {:>10}",
        "guest",
        "via",
        "call p50 ms",
        "call max ms",
        "job p50 ms",
        "QEMU down p50",
        "gap p50 ms",
        "e2e p50 ms"
    );
    for kind in ["idle", "busy"] {
        let (o, r) = guest(&c, (&api, settle), kind, args.rounds)?;
        for (via, s) in [("ironvisor", &o), ("virsh", &r)] {
            let call = col(s, |x| Some(x.call_ms));
            let job = col(s, |x| x.job_ms);
            let down = col(s, |x| Some(x.qemu_downtime_ms));
            let gap = col(s, |x| Some(x.gap_ms));
            let e2e = col(s, |x| x.e2e_ms);
            println!(
                "{kind:<10} {via:<10} {:>12.0} {:>12.0} {:>12} {:>14.0} {:>12.0} {:>10}",
                call.map_or(0.0, |x| x.p50_ms),
                call.map_or(0.0, |x| x.max_ms),
                job.map_or("-".into(), |x| format!("{:.0}", x.p50_ms)),
                down.map_or(0.0, |x| x.p50_ms),
                gap.map_or(0.0, |x| x.p50_ms),
                e2e.map_or("-".into(), |x| format!("{:.0}", x.p50_ms)),
            );
        }
        let p50 = |s: &[Sample]| col(s, |x| Some(x.call_ms)).map_or(0.0, |x| x.p50_ms);
        let ratio = stats::ratio(p50(&o), p50(&r));
        let pairs = pair_ratios(&o, &r);
        let shown: Vec<String> = pairs
            .iter()
            .map(|p| p.map_or("-".into(), |x| format!("{x:.2}")))
            .collect();
        let median = stats::median(&pairs.iter().flatten().copied().collect::<Vec<_>>());
        println!(
            "{kind}: call ours / virsh per pair [{}], median {}; ratio of the p50s {ratio:.2?}",
            shown.join(", "),
            median.map_or("-".into(), |m| format!("{m:.2}"))
        );
        results.insert(
            kind.into(),
            serde_json::json!({"ironvisor": o, "virsh": r, "ratio_call_p50": ratio,
                "pair_ratios_call": pairs, "median_pair_ratio_call": median}),
        );
    }
    if args.drain_vms > 0 {
        let (total, per_vm) = drain(&c, &api, args.drain_vms)?;
        println!(
            "drain of {} idle VMs: {total:.0} ms until all moved, {per_vm:.0} ms per VM",
            args.drain_vms
        );
        results.insert(
            "drain".into(),
            serde_json::json!({"vms": args.drain_vms, "total_ms": total, "per_vm_ms": per_vm}),
        );
    }
    let json = serde_json::json!({"bench": "migration", "rounds": args.rounds, "results": results});
    println!("BENCH_JSON {json}");
    if let Some(p) = args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&json)?)?;
    }
    Ok(())
}
