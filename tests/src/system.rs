//! The whole system as processes: the local control plane (`ironvisor-devcluster`), the
//! operator and agents, driven with the real `kubectl`, as a user runs them.
//!
//! The binaries are the workspace's own, found next to the test executable
//! (`target/debug`); `cargo nextest run --workspace` (what `hack/test.sh` runs) builds them.
//! Every process writes its log into the system's temporary directory; a failing test prints
//! where. Everything a test starts is stopped when it is dropped, and each agent removes only
//! the domains of its own state directory.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::repo_root;

/// Where the workspace's binaries are: the directory above the test executable's `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe
        .parent()
        .expect("the test executable lives in target/<profile>/deps");
    // A test lives in target/<profile>/deps; a benchmark binary (hack/bench) beside the
    // binaries themselves.
    let dir = match deps.parent() {
        Some(p) if !deps.join(name).is_file() => p,
        _ => deps,
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first \
         (`cargo build --workspace --bins`, or run the suite with `cargo nextest run --workspace`)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Poll `f` until it gives a value, printing progress; panics with `what` and the last
/// observation after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut last: String;
    let mut reported = Instant::now();
    loop {
        match f() {
            Ok(v) => {
                eprintln!("[{:>5.1}s] {what}: done", start.elapsed().as_secs_f64());
                return v;
            }
            Err(seen) => last = seen,
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        if reported.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "[{:>5.1}s] waiting for {what}: {last}",
                start.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child process that is killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Self {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the process log");
        let err = out.try_clone().expect("clone the log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self {
            name: name.into(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics (naming the log) when the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let tail = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("{} exited ({status}); its log ends:\n{tail}", self.name);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent process and its directories.
pub struct Agent {
    /// The process.
    pub proc: Proc,
    /// Its node name.
    pub node: String,
    /// Its libvirt URI.
    pub uri: String,
    /// Its `--state-dir`.
    pub state_dir: PathBuf,
    /// Its `--images-dir`.
    pub images_dir: PathBuf,
    /// Its metrics port.
    pub metrics_port: u16,
    /// The command prefix it runs through (empty for none).
    pub wrapper: Vec<std::ffi::OsString>,
    /// More flags it runs with (kept across restarts).
    pub extra_args: Vec<String>,
}

impl Agent {
    /// The VM's directory under the state dir.
    pub fn vm_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join("vms").join(uid)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.proc.kill();
        // Domains outlive the agent (it adopts them on restart); a test's must not outlive
        // the test. Only domains whose disks or console live in this agent's state dir.
        if self.uri.starts_with("qemu") {
            remove_domains_under(&self.uri, &self.state_dir);
        }
    }
}

/// Destroy and undefine every domain whose definition mentions `dir`.
pub fn remove_domains_under(uri: &str, dir: &Path) {
    let Ok(out) = Command::new("virsh")
        .args(["-c", uri, "list", "--all", "--name"])
        .output()
    else {
        return;
    };
    let needle = dir.to_string_lossy().into_owned();
    for name in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let xml = Command::new("virsh")
            .args(["-c", uri, "dumpxml", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if xml.contains(&needle) {
            let _ = Command::new("virsh")
                .args(["-c", uri, "destroy", name])
                .output();
            let _ = Command::new("virsh")
                .args(["-c", uri, "undefine", name])
                .output();
        }
    }
}

/// The local control plane as a process, and the tools to drive it.
pub struct System {
    /// Everything of this system: kubeconfig, logs, agents' directories.
    pub dir: tempfile::TempDir,
    /// The cluster admin's kubeconfig (kubectl's, unless a test acts as someone else).
    pub kubeconfig: PathBuf,
    /// The admin kubeconfig for the TLS port: the server and CA of every other identity's.
    pub(crate) tls_kubeconfig: PathBuf,
    devcluster: Proc,
}

impl System {
    /// Start `ironvisor-devcluster` on a free loopback port and install the namespace, the
    /// CRDs, the RBAC and the admission policies from `manifests/`. The operator and agents
    /// run as their ServiceAccounts (agents with node-bound tokens), as in a cluster.
    pub fn start() -> Self {
        Self::start_with_users(&[])
    }

    /// [`System::start`] with people who can sign in: each user name gets a static token
    /// (see [`System::user_kubeconfig`]) and no groups beyond `system:authenticated`.
    pub fn start_with_users(users: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ironvisor-e2e-")
            .tempdir()
            .expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let tls_kubeconfig = dir.path().join("kubeconfig-tls");
        let tokens = dir.path().join("tokens.csv");
        let lines: String = users
            .iter()
            .map(|u| format!("{},{u},uid-{u}\n", crate::identities::user_token(u)))
            .collect();
        fs::write(&tokens, lines).expect("write the token file");
        let devcluster = Proc::spawn(
            "ironvisor-devcluster",
            Command::new(bin("ironvisor-devcluster"))
                .arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--tls-kubeconfig")
                .arg(&tls_kubeconfig)
                .arg("--token-auth-file")
                .arg(&tokens),
            dir.path().join("devcluster.log"),
        );
        let mut sys = Self {
            dir,
            kubeconfig,
            tls_kubeconfig,
            devcluster,
        };
        let kubeconfig = sys.kubeconfig.clone();
        wait_for("the control plane", Duration::from_secs(30), || {
            if !kubeconfig.exists() {
                return Err("no kubeconfig yet".into());
            }
            let out = sys.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        sys.devcluster.assert_alive();
        let root = repo_root();
        sys.kubectl_ok(&["apply", "-f", path(&root.join("manifests/namespace.yaml"))]);
        sys.kubectl_ok(&["apply", "-k", path(&root.join("manifests/crds"))]);
        sys.kubectl_ok(&["apply", "-k", path(&root.join("manifests/rbac"))]);
        sys.kubectl_ok(&["apply", "-k", path(&root.join("manifests/policies"))]);
        sys
    }

    /// A `kubectl` command against this system.
    pub fn kubectl_cmd(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Run kubectl with `args`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        crate::run(self.kubectl_cmd().args(args))
    }

    /// Run `ivctl -n NAMESPACE ARGS` as the cluster admin.
    pub fn ivctl(&self, namespace: &str, args: &[&str]) -> Output {
        crate::run(
            Command::new(bin("ivctl"))
                .env("KUBECONFIG", &self.kubeconfig)
                .args(["-n", namespace])
                .args(args),
        )
    }

    /// Run kubectl with `args`; panics with its stderr when it fails; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml`; returns stdout.
    pub fn apply(&self, yaml: &str) -> String {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write manifest");
        let out = child.wait_with_output().expect("kubectl apply");
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tenant owning `namespace` with a quota (`hard` as YAML flow mapping, e.g.
    /// `{virtualMachines: 4, vcpus: 8}`).
    pub fn tenant(&self, name: &str, namespace: &str, hard: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n---\n\
             apiVersion: ironvisor.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\n\
             spec: {{namespaces: [{namespace}]}}\n---\n\
             apiVersion: ironvisor.io/v1alpha1\nkind: Quota\nmetadata: {{name: {name}-quota}}\n\
             spec: {{tenant: {name}, hard: {hard}}}\n"
        ));
    }

    /// The object as JSON (`None` when it does not exist).
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let mut args = vec!["get", kind, name, "-o", "json"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let out = self.kubectl(&args);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("NotFound") || err.contains("not found"),
                "{err}"
            );
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("kubectl -o json"))
    }

    /// The VM (panics when it does not exist).
    pub fn vm(&self, namespace: &str, name: &str) -> Value {
        self.get("vm", Some(namespace), name)
            .unwrap_or_else(|| panic!("VirtualMachine {namespace}/{name} does not exist"))
    }

    /// Wait until the VM's phase is `phase`.
    pub fn wait_phase(&self, namespace: &str, name: &str, phase: &str, timeout: Duration) -> Value {
        wait_for(
            &format!("{namespace}/{name} to be {phase}"),
            timeout,
            || {
                let vm = self.vm(namespace, name);
                if vm["status"]["phase"] == phase {
                    Ok(vm)
                } else {
                    Err(describe(&vm))
                }
            },
        )
    }

    /// Start the operator (metrics on a free port, returned).
    pub fn operator(&self) -> (Proc, u16) {
        self.operator_with_args(&[])
    }

    /// [`System::operator`] with more flags (e.g. `--rightsizing-window`).
    pub fn operator_with_args(&self, args: &[&str]) -> (Proc, u16) {
        let port = free_port();
        let proc = Proc::spawn(
            "ironvisor-operator",
            Command::new(bin("ironvisor-operator"))
                .arg("--kubeconfig")
                .arg(self.service_account_kubeconfig("ironvisor-operator", None))
                .arg("--metrics-addr")
                .arg(format!("127.0.0.1:{port}"))
                .args(args)
                .env("POD_NAME", "e2e-operator")
                .env("RUST_LOG", "info"),
            self.dir.path().join("operator.log"),
        );
        (proc, port)
    }

    /// Start an agent for host `node` on `uri`, with its own state dir and `images_dir`.
    pub fn agent(&self, node: &str, uri: &str, images_dir: &Path) -> Agent {
        self.agent_wrapped(node, uri, images_dir, &[])
    }

    /// [`System::agent`] run through `wrapper` (a command prefix, e.g. one that enters a
    /// private host's mount namespace; empty for none).
    pub fn agent_wrapped(
        &self,
        node: &str,
        uri: &str,
        images_dir: &Path,
        wrapper: &[std::ffi::OsString],
    ) -> Agent {
        self.agent_full(node, uri, images_dir, wrapper, &[])
    }

    /// [`System::agent`] with more flags (e.g. `--migration-uri`).
    pub fn agent_with_args(
        &self,
        node: &str,
        uri: &str,
        images_dir: &Path,
        args: &[String],
    ) -> Agent {
        self.agent_full(node, uri, images_dir, &[], args)
    }

    /// [`System::agent`] run through `wrapper` (see [`System::agent_wrapped`]) with more
    /// flags (see [`System::agent_with_args`]).
    pub fn agent_full(
        &self,
        node: &str,
        uri: &str,
        images_dir: &Path,
        wrapper: &[std::ffi::OsString],
        extra_args: &[String],
    ) -> Agent {
        let state_dir = self.dir.path().join(format!("agent-{node}"));
        fs::create_dir_all(&state_dir).expect("agent state dir");
        let port = free_port();
        let proc = self.spawn_agent(
            node,
            uri,
            (&state_dir, images_dir),
            port,
            (wrapper, extra_args),
        );
        Agent {
            proc,
            node: node.into(),
            uri: uri.into(),
            state_dir,
            images_dir: images_dir.into(),
            metrics_port: port,
            wrapper: wrapper.to_vec(),
            extra_args: extra_args.to_vec(),
        }
    }

    /// Kill the agent with SIGKILL and start it again on the same directories.
    pub fn restart_agent(&self, agent: &mut Agent) {
        agent.proc.kill();
        agent.proc = self.spawn_agent(
            &agent.node,
            &agent.uri,
            (&agent.state_dir, &agent.images_dir),
            agent.metrics_port,
            (&agent.wrapper, &agent.extra_args),
        );
    }

    fn spawn_agent(
        &self,
        node: &str,
        uri: &str,
        (state_dir, images_dir): (&Path, &Path),
        port: u16,
        (wrapper, extra_args): (&[std::ffi::OsString], &[String]),
    ) -> Proc {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("ironvisor-agent"));
                c
            }
            None => Command::new(bin("ironvisor-agent")),
        };
        Proc::spawn(
            &format!("ironvisor-agent ({node})"),
            cmd.args(["--node-name", node, "--libvirt-uri", uri])
                .arg("--kubeconfig")
                .arg(self.service_account_kubeconfig("ironvisor-agent", Some(node)))
                .arg("--state-dir")
                .arg(state_dir)
                .arg("--images-dir")
                .arg(images_dir)
                .arg("--metrics-addr")
                .arg(format!("127.0.0.1:{port}"))
                .args(["--accel", "tcg", "--resync-interval", "10s"])
                .args(extra_args)
                .env("RUST_LOG", "info"),
            self.dir.path().join(format!("agent-{node}.log")),
        )
    }

    /// Panics naming the log when the control plane has exited.
    pub fn assert_alive(&mut self) {
        self.devcluster.assert_alive();
    }
}

/// A VM's phase and conditions in one line, for progress and failure messages.
pub fn describe(vm: &Value) -> String {
    let conditions: Vec<String> = vm["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{}={} {}: {}",
                        c["type"].as_str().unwrap_or("?"),
                        c["status"].as_str().unwrap_or("?"),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "phase {} on {} [{}]",
        vm["status"]["phase"].as_str().unwrap_or("-"),
        vm["status"]["nodeName"].as_str().unwrap_or("-"),
        conditions.join("; ")
    )
}

/// A VM booting the tiny guest in `images`, which stays up (`ironvisor.stay`); `spec_extra`
/// is more of its spec, as YAML lines indented by two spaces (cloudInit, networks, ...).
pub fn tiny_vm_manifest(ns: &str, name: &str, images: &Path, spec_extra: &str) -> String {
    tiny_vm_manifest_with_flags(ns, name, images, "", spec_extra)
}

/// [`tiny_vm_manifest`] with more of the guest's flags on its kernel command line (e.g.
/// `ironvisor.shell`, see hack/build-guest.sh).
pub fn tiny_vm_manifest_with_flags(
    ns: &str,
    name: &str,
    images: &Path,
    flags: &str,
    spec_extra: &str,
) -> String {
    let images = images.display();
    format!(
        r##"apiVersion: ironvisor.io/v1alpha1
kind: VirtualMachine
metadata:
  name: {name}
  namespace: {ns}
spec:
  runStrategy: Always
  cpu: {{cores: 1}}
  memory: {{size: 128Mi}}
  terminationGracePeriodSeconds: 2
  kernelBoot:
    kernel: {{hostPath: {{path: {images}/vmlinuz}}}}
    initrd: {{hostPath: {{path: {images}/initrd.gz}}}}
    cmdline: console=ttyS0 panic=-1 ironvisor.stay {flags}
{spec_extra}"##
    )
}

/// The tiny guest from `hack/build-guest.sh` (built once, cached) in `dir`.
pub fn tiny_guest(dir: &Path) -> PathBuf {
    let out = crate::run(Command::new(repo_root().join("hack/build-guest.sh")).arg(dir));
    assert!(
        out.status.success(),
        "hack/build-guest.sh {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.canonicalize().expect("guest dir")
}

/// The default cache of the tiny guest, shared with the agent's boot tests.
pub fn guest_cache() -> PathBuf {
    PathBuf::from(
        std::env::var("IRONVISOR_GUEST_DIR").unwrap_or_else(|_| "/var/tmp/ironvisor-guest".into()),
    )
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Fails the test unless libvirtd answers on `qemu:///system` (CI starts it with
/// `hack/start-libvirtd.sh`).
pub fn require_libvirtd() {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .output();
    let ok = out.as_ref().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "libvirtd does not answer on qemu:///system: run hack/start-libvirtd.sh as root ({:?})",
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    );
}

/// Lines of a guest's serial console log (empty when it does not exist yet).
pub fn console(agent: &Agent, uid: &str) -> String {
    fs::read(agent.vm_dir(uid).join("console.log"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The VM's uid.
pub fn uid(vm: &Value) -> String {
    vm["metadata"]["uid"]
        .as_str()
        .expect("metadata.uid")
        .to_owned()
}

/// `virsh domid` of a running domain (changes when the guest is rebooted by destroy/start).
pub fn domain_id(uri: &str, domain: &str) -> Option<String> {
    let out = Command::new("virsh")
        .args(["-c", uri, "domid", domain])
        .output()
        .ok()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !id.is_empty() && id != "-").then_some(id)
}
