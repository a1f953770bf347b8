//! Consoles end to end: the console server (`ironvisor-console`) as a process beside a
//! [`System`], registered as the aggregated API `v1.subresources.ironvisor.io` with the
//! shipped manifests (Service, APIService) and an EndpointSlice pointing at it on loopback,
//! as the devcluster resolves them; agents with their mutual-TLS console port, certified by
//! the real operator's console PKI; a VM of the tiny guest with a display, a marker on its
//! screen and a shell on its serial console; and `ivctl console` driven through pipes.
//!
//! Nothing here talks to the console server or the agents directly: tests go through the
//! devcluster (as kubectl and ivctl do) or the page the console server serves.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::repo_root;
use crate::system::{
    Agent, Proc, System, bin, console, free_port, guest_cache, path, require_libvirtd, tiny_guest,
    tiny_vm_manifest_with_flags, uid, wait_for,
};

/// How long a tiny guest may take to boot under TCG on a loaded machine.
pub const BOOT: Duration = Duration::from_secs(240);
/// How long the control-plane side (certificates, registration) may take.
pub const SETTLE: Duration = Duration::from_secs(90);
/// What the tiny guest prints on its screen with `ironvisor.shell` (hack/build-guest.sh).
pub const SCREEN_MARKER: &str = "IRONVISOR SCREEN READY";
/// The operator's namespace, where the console server and its objects live.
const NS: &str = "ironvisor-system";

/// The console server process and where it serves.
pub struct ConsoleServer {
    /// The process.
    pub proc: Proc,
    /// Its TLS port on 127.0.0.1 (the aggregated API and the browser page).
    pub port: u16,
}

impl ConsoleServer {
    /// The browser page's address (`localhost`: a name of the operator-issued certificate).
    pub fn page_url(&self) -> String {
        format!("https://localhost:{}/", self.port)
    }
}

impl System {
    /// Starts `ironvisor-console` as its ServiceAccount and registers it as the aggregated API:
    /// `manifests/console/service.yaml` and `apiservice.yaml` as shipped, plus an EndpointSlice
    /// for 127.0.0.1:port. Waits until the APIService is Available, which needs the operator
    /// (it issues the server's certificate and sets the APIService's caBundle).
    pub fn console_server(&self) -> ConsoleServer {
        let port = free_port();
        let metrics = free_port();
        let mut proc = Proc::spawn(
            "ironvisor-console",
            Command::new(bin("ironvisor-console"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--metrics-listen")
                .arg(format!("127.0.0.1:{metrics}"))
                .env(
                    "KUBECONFIG",
                    self.service_account_kubeconfig("ironvisor-console", None),
                )
                .env("POD_NAMESPACE", NS)
                .env("POD_NAME", "e2e-console")
                .env("RUST_LOG", "info"),
            self.dir.path().join("console.log"),
        );
        let manifests = repo_root().join("manifests/console");
        for file in ["service.yaml", "apiservice.yaml"] {
            self.kubectl_ok(&["apply", "-f", path(&manifests.join(file))]);
        }
        self.apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: ironvisor-console-e2e\n  namespace: {NS}\n  \
             labels: {{kubernetes.io/service-name: ironvisor-console}}\n\
             addressType: IPv4\nports: [{{name: https, port: {port}, protocol: TCP}}]\n\
             endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n"
        ));
        wait_for("the console APIService Available", SETTLE, || {
            proc.assert_alive();
            let api = self
                .get("apiservice", None, "v1.subresources.ironvisor.io")
                .ok_or("no APIService")?;
            let conditions = api["status"]["conditions"].as_array().cloned();
            let available = conditions
                .iter()
                .flatten()
                .any(|c| c["type"] == "Available" && c["status"] == "True");
            if available {
                Ok(())
            } else {
                Err(api["status"].to_string())
            }
        });
        ConsoleServer { proc, port }
    }

    /// An agent for host `node` on `uri` with its console port ([`console_agent_args`]);
    /// waits until the operator signed the host's console certificate.
    pub fn console_agent(&self, node: &str, uri: &str, images: &Path) -> Agent {
        let agent = self.agent_with_args(node, uri, images, &console_agent_args());
        self.wait_console_certificate(node);
        agent
    }

    /// Waits until the operator signed host `node`'s console certificate.
    pub fn wait_console_certificate(&self, node: &str) {
        wait_for(
            &format!("host {node}'s console certificate"),
            SETTLE,
            || {
                let h = self.get("hypervisor", None, node).ok_or("no Hypervisor")?;
                let cert = &h["status"]["consoleCertificate"]["certificate"];
                if cert
                    .as_str()
                    .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
                {
                    Ok(())
                } else {
                    Err(h["status"]["conditions"].to_string())
                }
            },
        );
    }

    /// `user` may read VMs in `ns` (ClusterRole ironvisor-view) and open the `subresources`
    /// (`console`, `vnc`) of the VMs `names` there, and nothing more.
    pub fn console_user(&self, ns: &str, user: &str, subresources: &[&str], names: &[&str]) {
        let resources: Vec<String> = subresources
            .iter()
            .map(|s| format!("virtualmachines/{s}"))
            .collect();
        let subject = format!("{{kind: User, apiGroup: rbac.authorization.k8s.io, name: {user}}}");
        self.apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: view-{user}, namespace: {ns}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ironvisor-view}}\n\
             subjects: [{subject}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
             metadata: {{name: console-{user}, namespace: {ns}}}\n\
             rules: [{{apiGroups: [subresources.ironvisor.io], resources: {resources:?}, \
             resourceNames: {names:?}, verbs: [get]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: console-{user}, namespace: {ns}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: console-{user}}}\n\
             subjects: [{subject}]\n"
        ));
    }
}

/// An agent's flags for its console port on a free loopback port.
pub fn console_agent_args() -> Vec<String> {
    vec![
        "--console-address".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    ]
}

/// A VM of the tiny guest with a VNC display (`graphics: vnc`, set explicitly), its screen
/// marker and a shell on its serial console (`ironvisor.shell`), and a screen that never
/// blanks.
pub fn console_vm_manifest(ns: &str, name: &str, images: &Path) -> String {
    tiny_vm_manifest_with_flags(
        ns,
        name,
        images,
        "ironvisor.shell consoleblank=0",
        "  graphics: vnc\n",
    )
}

/// Everything a console test needs, dropped in order: the console server, the agent (which
/// removes its domains), the operator, then the control plane.
pub struct ConsoleStack {
    /// The console server.
    pub server: ConsoleServer,
    /// The one host's agent (`qemu:///system`).
    pub agent: Agent,
    /// The operator.
    pub operator: Proc,
    /// The control plane, with `users` who sign in with their own tokens.
    pub sys: System,
    /// The tenant namespace the test's VMs live in.
    pub ns: String,
    /// The tiny guest's directory.
    pub images: PathBuf,
}

impl ConsoleStack {
    /// The control plane with `users`, the operator, one agent with a console port on
    /// libvirtd's `qemu:///system`, the console server registered, and a tenant namespace
    /// `<prefix><pid>`. `prefix` keeps node names short: the display's socket path in the
    /// agent's state directory must fit a UNIX socket address.
    pub fn start(prefix: &str, users: &[&str]) -> Self {
        require_libvirtd();
        let images = tiny_guest(&guest_cache());
        let sys = System::start_with_users(users);
        // QEMU (as libvirt-qemu) binds the display's socket under the agent's state dir.
        make_traversable(sys.dir.path());
        let (operator, _) = sys.operator();
        let pid = std::process::id();
        let agent = sys.console_agent(&format!("{prefix}-{pid}"), "qemu:///system", &images);
        let server = sys.console_server();
        let ns = format!("{prefix}{pid}");
        sys.tenant(&ns, &ns, "{virtualMachines: 4}");
        Self {
            server,
            agent,
            operator,
            sys,
            ns,
            images,
        }
    }

    /// Applies [`console_vm_manifest`] `name` and waits until it runs and its guest's shell
    /// is up (the serial log shows IRONVISOR-GUEST-UP, printed after the screen marker);
    /// returns the VM.
    pub fn running_console_vm(&self, name: &str) -> Value {
        self.sys
            .apply(&console_vm_manifest(&self.ns, name, &self.images));
        let vm = self.sys.wait_phase(&self.ns, name, "Running", BOOT);
        let vm_uid = uid(&vm);
        wait_for(&format!("{name}'s guest up"), BOOT, || {
            let log = console(&self.agent, &vm_uid);
            if log.contains("IRONVISOR-GUEST-UP") {
                Ok(())
            } else {
                Err(format!("serial log so far: {:?}", tail(&log)))
            }
        });
        vm
    }
}

fn make_traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .expect("open the system's directory to QEMU's user");
}

fn tail(text: &str) -> String {
    let start = text.len().saturating_sub(300);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// `ivctl console --remote` of a VM as whoever `kubeconfig` authenticates, with its stdin
/// and stdout on pipes: what is written goes to the guest's serial port, what the guest
/// prints is collected. Ends (closing stdin, as a script's end does) when dropped.
pub struct SerialSession {
    child: Child,
    stdin: Option<ChildStdin>,
    seen: Arc<Mutex<Vec<u8>>>,
    stderr: PathBuf,
}

impl SerialSession {
    /// Starts `ivctl console NAME -n NS --remote` with `kubeconfig`; `log_dir` keeps its stderr.
    pub fn open(kubeconfig: &Path, ns: &str, name: &str, log_dir: &Path) -> Self {
        let stderr = log_dir.join(format!("ivctl-console-{name}.log"));
        let mut child = Command::new(bin("ivctl"))
            .env("KUBECONFIG", kubeconfig)
            .args(["console", name, "-n", ns, "--remote"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("ivctl's stderr file"))
            .spawn()
            .expect("start ivctl");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("ivctl's stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("output lock")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            stdin,
            seen,
            stderr,
        }
    }

    /// Types `line` and Enter (a carriage return, as a terminal sends it).
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the session is open");
        stdin
            .write_all(format!("{line}\r").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("ivctl console took no input ({e}): {}", self.errors()));
    }

    /// Everything the guest printed so far, lossily as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("output lock")).into_owned()
    }

    /// Types `line` until `answer` appears in the output (a line typed before the guest's
    /// shell listens is lost, so it is typed again every few seconds); panics after `timeout`
    /// with what ivctl printed and said.
    pub fn round_trip(&mut self, line: &str, answer: &str, timeout: Duration) {
        let mut typed: Option<std::time::Instant> = None;
        wait_for(
            &format!("the guest's answer {answer:?} to {line:?} through ivctl console"),
            timeout,
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("ivctl console ended ({status}): {}", self.errors());
                }
                if self.output().contains(answer) {
                    return Ok(());
                }
                if typed.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    self.type_line(line);
                    typed = Some(std::time::Instant::now());
                }
                Err(format!("output so far: {:?}", tail(&self.output())))
            },
        );
    }

    /// Closes stdin, as the end of a script does, and waits for ivctl to end.
    pub fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        wait_for("ivctl console to end", SETTLE, || {
            self.child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_owned())
        })
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for SerialSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ivctl console --remote` of `ns/name` as whoever `kubeconfig` authenticates, with nothing
/// on stdin: for refusals, which come before any input is read.
pub fn ivctl_console_once(kubeconfig: &Path, ns: &str, name: &str) -> Output {
    crate::run(
        Command::new(bin("ivctl"))
            .env("KUBECONFIG", kubeconfig)
            .args(["console", name, "-n", ns, "--remote"])
            .stdin(Stdio::null()),
    )
}
