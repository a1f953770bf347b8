//! Live-migration test support: two (or more) "hosts" on this machine, each a private
//! libvirtd in its own mount and network namespace on a test switch with its own agent
//! process, and a watcher that timestamps the tiny guest's counter lines as they arrive on
//! the hosts' serial logs (the guest's own clock stops while it is paused, so downtime is
//! measured here, on the host side).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::private_host::PrivateLibvirtd;
use crate::system::{Agent, Proc, System, guest_cache, tiny_guest, wait_for};

/// One host: its agent (dropped first: it removes its domains while libvirtd still runs)
/// and its private libvirtd.
pub struct Host {
    /// The agent process.
    pub agent: Agent,
    /// The libvirtd.
    pub libvirtd: PrivateLibvirtd,
    /// Its address on the test switch.
    pub address: String,
}

/// A control plane, the operator, hosts on one switch, a tenant.
pub struct Cluster {
    /// The hosts (agents dropped before the control plane).
    pub hosts: Vec<Host>,
    /// The operator.
    pub operator: Proc,
    /// The operator's metrics port.
    pub operator_port: u16,
    /// The control plane.
    pub sys: System,
    /// The tenant's namespace.
    pub ns: String,
    /// The tiny guest's directory.
    pub guest: PathBuf,
}

impl Cluster {
    /// `n` hosts named `<prefix>-h<i>-<pid>`, a tenant with quota `hard`.
    pub fn start(prefix: &str, n: usize, hard: &str) -> Self {
        Self::start_hosts(prefix, n, hard, PrivateLibvirtd::start_on_switch, Vec::new)
    }

    /// [`Self::start`] with hosts whose QEMUs may use userfaultfd (post-copy migration).
    pub fn start_with_userfaultfd(prefix: &str, n: usize, hard: &str) -> Self {
        Self::start_hosts(
            prefix,
            n,
            hard,
            PrivateLibvirtd::start_on_switch_with_userfaultfd,
            Vec::new,
        )
    }

    /// [`Cluster::start`] with more flags for each agent, from `agent_args` (called once per
    /// host, e.g. [`crate::console::console_agent_args`] for a port of its own).
    pub fn start_with(
        prefix: &str,
        n: usize,
        hard: &str,
        agent_args: impl Fn() -> Vec<String>,
    ) -> Self {
        Self::start_hosts(
            prefix,
            n,
            hard,
            PrivateLibvirtd::start_on_switch,
            agent_args,
        )
    }

    fn start_hosts(
        prefix: &str,
        n: usize,
        hard: &str,
        libvirtd: fn(&str, &str) -> PrivateLibvirtd,
        agent_args: impl Fn() -> Vec<String>,
    ) -> Self {
        let guest = tiny_guest(&guest_cache());
        let sys = System::start();
        let (operator, operator_port) = sys.operator();
        let pid = std::process::id();
        let switch = format!("ivsw-{prefix}-{pid}");
        let hosts = (1..=n)
            .map(|i| {
                let address = format!("198.18.0.{i}");
                let libvirtd = libvirtd(&switch, &format!("{address}/24"));
                let mut args = vec![
                    "--migration-uri".to_owned(),
                    libvirtd.uri().to_owned(),
                    "--migration-address".to_owned(),
                    address.clone(),
                ];
                args.extend(agent_args());
                let node = format!("{prefix}-h{i}-{pid}");
                let agent = sys.agent_with_args(&node, libvirtd.uri(), &guest, &args);
                Host {
                    agent,
                    libvirtd,
                    address,
                }
            })
            .collect();
        let ns = format!("{prefix}{pid}");
        sys.tenant(&ns, &ns, hard);
        Cluster {
            hosts,
            operator,
            operator_port,
            sys,
            ns,
            guest,
        }
    }

    /// The host named `node`.
    pub fn host(&self, node: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.agent.node == node)
            .unwrap_or_else(|| panic!("no host {node}"))
    }

    /// A VM of the tiny guest printing its counter, with a 64 MiB blank disk the guest
    /// writes a token to at boot.
    pub fn apply_counter_vm(&self, name: &str) {
        let initrd = self.guest.join("initrd.gz");
        let cmdline = "console=ttyS0 panic=-1 quiet ironvisor.counter ironvisor.diskwrite";
        self.apply_vm_with(name, "{}", &initrd, cmdline);
    }

    /// A VM of the busy guest ([`crate::busy_guest`]): the counter, and memory dirtied
    /// faster than a capped migration sends it. `labels` is a YAML flow mapping.
    pub fn apply_busy_vm(&self, name: &str, labels: &str) {
        let initrd = crate::busy_guest::busy_initrd(&self.guest);
        self.apply_vm_with(name, labels, &initrd, crate::busy_guest::BUSY_CMDLINE);
    }

    /// A diskless VM of the tiny guest with `memory` (e.g. `96Mi`), the guest's `flags` on
    /// its kernel command line (e.g. `ironvisor.counter`) and `spec_extra` spec lines.
    pub fn apply_diskless_vm(&self, name: &str, memory: &str, flags: &str, spec_extra: &str) {
        let g = self.guest.display();
        let ns = &self.ns;
        self.sys.apply(&format!(
            r#"apiVersion: ironvisor.io/v1alpha1
kind: VirtualMachine
metadata: {{name: {name}, namespace: {ns}}}
spec:
  runStrategy: Always
  cpu: {{cores: 1}}
  memory: {{size: {memory}}}
  terminationGracePeriodSeconds: 2
  kernelBoot:
    kernel: {{hostPath: {{path: {g}/vmlinuz}}}}
    initrd: {{hostPath: {{path: {g}/initrd.gz}}}}
    cmdline: console=ttyS0 panic=-1 quiet {flags}
{spec_extra}"#
        ));
    }

    fn apply_vm_with(&self, name: &str, labels: &str, initrd: &Path, cmdline: &str) {
        let g = self.guest.display();
        let initrd = initrd.display();
        let ns = &self.ns;
        self.sys.apply(&format!(
            r#"apiVersion: ironvisor.io/v1alpha1
kind: VirtualMachine
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec:
  runStrategy: Always
  cpu: {{cores: 1}}
  memory: {{size: 128Mi}}
  terminationGracePeriodSeconds: 2
  kernelBoot:
    kernel: {{hostPath: {{path: {g}/vmlinuz}}}}
    initrd: {{hostPath: {{path: {initrd}}}}}
    cmdline: {cmdline}
  disks:
    - name: data
      bus: virtio
      size: 64Mi
      source: {{blank: {{}}}}
"#
        ));
    }

    /// Apply a migration of `vm` (to `to`, when given, with `extra` spec lines).
    pub fn apply_migration(&self, name: &str, vm: &str, to: Option<&str>, extra: &str) {
        let target = to
            .map(|t| format!("  targetNode: {t}\n"))
            .unwrap_or_default();
        self.sys.apply(&format!(
            "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineMigration\n\
             metadata: {{name: {name}, namespace: {}}}\nspec:\n  vmName: {vm}\n{target}{extra}",
            self.ns
        ));
    }

    /// `ivctl ARGS` as the cluster admin in the test's namespace.
    pub fn ivctl(&self, args: &[&str]) -> std::process::Output {
        self.sys.ivctl(&self.ns, args)
    }

    /// The migration as JSON (`None` when gone).
    pub fn migration(&self, name: &str) -> Option<Value> {
        self.sys.get("vmim", Some(&self.ns), name)
    }

    /// Wait until the migration's phase is `phase`; panics early on another terminal phase.
    pub fn wait_migration(&self, name: &str, phase: &str, timeout: Duration) -> Value {
        wait_for(&format!("migration {name} to be {phase}"), timeout, || {
            let m = self.migration(name).ok_or("gone")?;
            let now = m["status"]["phase"].as_str().unwrap_or("").to_owned();
            if now == phase {
                return Ok(m);
            }
            if ["Completed", "Failed", "Cancelled"].contains(&now.as_str()) {
                panic!("migration {name} ended {now}, not {phase}: {}", m["status"]);
            }
            Err(format!("{now}: {}", m["status"]))
        })
    }
}

/// A domain's id on `uri` (changes when the guest is restarted).
pub fn domid(uri: &str, domain: &str) -> Option<String> {
    crate::system::domain_id(uri, domain)
}

/// The token the guest wrote at the start of its disk, read from the image file (shared
/// read, QEMU holds it open): `None` when the image does not hold it.
pub fn disk_token(image: &Path) -> Option<String> {
    let raw = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(image)
        .arg(raw.path())
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "qemu-img convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut head = fs::read(raw.path()).expect("raw image");
    head.truncate(4096);
    let text = String::from_utf8_lossy(&head).into_owned();
    text.lines()
        .find(|l| l.starts_with("IRONVISOR-DISK-TOKEN-"))
        .map(str::to_owned)
}

/// One counter line as it arrived: when, from which log, which value.
#[derive(Clone, Debug)]
pub struct Tick {
    /// Arrival on the host.
    pub at: Instant,
    /// Index of the log in the watch list.
    pub log: usize,
    /// The guest's counter.
    pub value: u64,
}

/// Watches serial logs (files that may not exist yet, or be recreated) and records every
/// `IRONVISOR-TICK N` line with its arrival time, polling every millisecond.
pub struct TickWatch {
    ticks: Arc<Mutex<Vec<Tick>>>,
    boots: Arc<Mutex<BTreeMap<usize, usize>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TickWatch {
    /// Start watching `logs`.
    pub fn start(logs: Vec<PathBuf>) -> Self {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let boots = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, b, s) = (ticks.clone(), boots.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut offsets = vec![0usize; logs.len()];
            let mut partial = vec![String::new(); logs.len()];
            while !s.load(Ordering::Relaxed) {
                for (i, path) in logs.iter().enumerate() {
                    let Some(bytes) = read_from(path, &mut offsets[i], &mut partial[i]) else {
                        continue;
                    };
                    let now = Instant::now();
                    partial[i].push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(nl) = partial[i].find('\n') {
                        let line: String = partial[i].drain(..=nl).collect();
                        if line.contains("IRONVISOR-GUEST-BOOTED") {
                            *b.lock().unwrap().entry(i).or_default() += 1;
                        }
                        if let Some(v) = line.trim().strip_prefix("IRONVISOR-TICK ")
                            && let Ok(value) = v.trim().parse()
                        {
                            t.lock().unwrap().push(Tick {
                                at: now,
                                log: i,
                                value,
                            });
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        TickWatch {
            ticks,
            boots,
            stop,
            thread: Some(thread),
        }
    }

    /// Every tick so far.
    pub fn ticks(&self) -> Vec<Tick> {
        self.ticks.lock().unwrap().clone()
    }

    /// Boot banners seen per log.
    pub fn boots(&self) -> BTreeMap<usize, usize> {
        self.boots.lock().unwrap().clone()
    }

    /// Wait until log `log` has shown a tick above `above`.
    pub fn wait_tick_on(&self, log: usize, above: u64, timeout: Duration) -> u64 {
        wait_for(
            &format!("a counter line above {above} on log {log}"),
            timeout,
            || {
                self.ticks()
                    .iter()
                    .filter(|t| t.log == log && t.value > above)
                    .map(|t| t.value)
                    .max()
                    .ok_or_else(|| "not yet".to_owned())
            },
        )
    }
}

/// What `path` holds past `offset` (moved on); `None` when nothing new. A file shorter than
/// the offset was recreated: read from its start.
fn read_from(path: &Path, offset: &mut usize, partial: &mut String) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(path).ok()?;
    let len = usize::try_from(f.metadata().ok()?.len()).ok()?;
    if len < *offset {
        *offset = 0;
        partial.clear();
    }
    if len == *offset {
        return None;
    }
    f.seek(SeekFrom::Start(*offset as u64)).ok()?;
    let mut buf = Vec::with_capacity(len - *offset);
    f.take((len - *offset) as u64).read_to_end(&mut buf).ok()?;
    *offset += buf.len();
    Some(buf)
}

impl Drop for TickWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The switch-over seen in the ticks: the last tick of log `from` before the first of log
/// `to`, and the gap between their arrivals.
#[derive(Debug)]
pub struct Switch {
    /// Last counter value on the source.
    pub last_source: u64,
    /// First counter value on the target.
    pub first_target: u64,
    /// Host-side gap between them.
    pub gap: Duration,
}

/// Find the switch-over from `from` to `to`: the first tick on `to` that follows a tick on
/// `from`, and the last tick on `from` before it.
pub fn switch_over(ticks: &[Tick], from: usize, to: usize) -> Option<Switch> {
    let first_from = ticks.iter().position(|t| t.log == from)?;
    let j = first_from + ticks[first_from..].iter().position(|t| t.log == to)?;
    let first_to = &ticks[j];
    let last_from = ticks[..j].iter().rfind(|t| t.log == from)?;
    Some(Switch {
        last_source: last_from.value,
        first_target: first_to.value,
        gap: first_to.at.duration_since(last_from.at),
    })
}

impl Drop for Cluster {
    /// On a failing test, the last lines of every component's log: the directory goes with
    /// the control plane.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs = vec![self.operator.log().to_path_buf()];
        logs.extend(self.hosts.iter().map(|h| h.agent.proc.log().to_path_buf()));
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- {} (last lines)", log.display());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// What the host sees of the guest of VM `vm` on `uri` whose serial output stopped, for a
/// test's failure message: the domain's state and reason, its CPU time a second apart,
/// QEMU's view of its CPU, interrupt controller and character devices, and the size of its
/// console log. A hung guest and a stalled UART look alike from the log alone.
pub fn guest_diagnostics(uri: &str, vm: &str, log: &Path) -> String {
    let virsh = |args: &[&str]| -> String {
        let out = Command::new("virsh").arg("-c").arg(uri).args(args).output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("virsh: {e}"),
        }
    };
    let wanted = format!("-{vm}-");
    let list = virsh(&["list", "--all", "--name"]);
    let Some(dom) = list
        .lines()
        .find(|n| n.contains(&wanted))
        .map(str::to_owned)
    else {
        return format!("no domain of {vm} on {uri}: {list}");
    };
    let mut out = format!("domain {dom} on {uri}\n");
    let log_len = fs::metadata(log).map(|m| m.len());
    out += &format!("console log {}: {log_len:?} bytes\n", log.display());
    out += &format!("state: {}\n", virsh(&["domstate", "--reason", &dom]));
    for _ in 0..2 {
        out += &format!("{}\n", virsh(&["domstats", "--cpu-total", &dom]));
        std::thread::sleep(Duration::from_secs(1));
    }
    for hmp in [
        "info status",
        "info registers",
        "info pic",
        "info irq",
        "info chardev",
    ] {
        let text = virsh(&["qemu-monitor-command", "--hmp", &dom, hmp]);
        let head: Vec<&str> = text.lines().take(24).collect();
        out += &format!("--- {hmp}\n{}\n", head.join("\n"));
    }
    out
}
