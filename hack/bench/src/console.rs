//! The console path for a benchmark run, as a cluster runs it: the local control plane with
//! users (tests' [`System`]), the operator (console CA, certificates), one agent on
//! `qemu:///system` with its console port (`--console-address`), and the console server
//! (`ironvisor-console`, its ServiceAccount's token) registered with the API server's
//! aggregation: APIService `v1.subresources.ironvisor.io` from `manifests/console/`, a
//! Service and an EndpointSlice pointing at the server's loopback port.
//!
//! Synchronous (kubectl, as the tests drive the system); the measurements are async.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use ironvisor_tests::system::{Agent, Proc as SysProc, System, free_port, wait_for};
use serde_json::Value;

use crate::procs::Proc;

/// The system's namespace (the operator's, the console server's).
pub const SYSTEM_NS: &str = "ironvisor-system";

/// How long the set-up may take for each of its waits (TCG boots are slow).
pub const SETUP: Duration = Duration::from_secs(240);

/// Everything of the console path, stopped when dropped.
pub struct ConsoleStack {
    /// The console server (dropped first: it holds connections to the agent).
    pub server: Proc,
    /// The agent with its console port.
    pub agent: Agent,
    /// The operator.
    pub operator: SysProc,
    /// The control plane.
    pub sys: System,
    /// The tiny guest's kernel and initrd.
    pub images: PathBuf,
}

impl ConsoleStack {
    /// Start it all for `users` (each with a static token) and wait until the APIService is
    /// Available and the host's console certificate is issued.
    pub fn start(users: &[&str]) -> anyhow::Result<Self> {
        ironvisor_tests::system::require_libvirtd();
        let images = ironvisor_tests::system::tiny_guest(&ironvisor_tests::system::guest_cache());
        let sys = System::start_with_users(users);
        let (operator, _) = sys.operator();
        let node = format!("conbench-{}", std::process::id());
        let console_port = free_port();
        let agent = sys.agent_with_args(
            &node,
            "qemu:///system",
            &images,
            &[
                "--console-address".into(),
                format!("127.0.0.1:{console_port}"),
            ],
        );
        let server = start_server(&sys)?;
        let stack = Self {
            server: server.0,
            agent,
            operator,
            sys,
            images,
        };
        stack.register(server.1)?;
        stack.wait_host_certificate(&node);
        Ok(stack)
    }

    /// The host's name.
    pub fn node(&self) -> &str {
        &self.agent.node
    }

    /// A kube client acting as `user` (through the API server's TLS port and its token).
    pub async fn user_client(&self, user: &str) -> anyhow::Result<kube::Client> {
        crate::api::client(&self.sys.user_kubeconfig(user)).await
    }

    /// The Service and EndpointSlice of the server at `port`, the APIService; waits until the
    /// aggregator calls it Available (the operator has set its caBundle and the server serves).
    fn register(&self, port: u16) -> anyhow::Result<()> {
        self.sys.apply(&format!(
            "apiVersion: v1\nkind: Service\n\
             metadata: {{name: ironvisor-console, namespace: {SYSTEM_NS}}}\n\
             spec: {{ports: [{{name: https, port: 443, targetPort: {port}}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: ironvisor-console-bench, namespace: {SYSTEM_NS},\n  \
             labels: {{kubernetes.io/service-name: ironvisor-console}}}}\n\
             addressType: IPv4\nports: [{{name: https, port: {port}}}]\n\
             endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n"
        ));
        let apiservice = ironvisor_tests::repo_root().join("manifests/console/apiservice.yaml");
        self.sys.kubectl_ok(&["apply", "-f", path(&apiservice)?]);
        wait_for(
            "APIService v1.subresources.ironvisor.io Available",
            SETUP,
            || {
                let a = self
                    .sys
                    .get("apiservice", None, "v1.subresources.ironvisor.io")
                    .ok_or("no APIService")?;
                let available = a["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Available" && c["status"] == "True");
                if available {
                    Ok(())
                } else {
                    Err(a["status"].to_string())
                }
            },
        );
        Ok(())
    }

    /// Until the operator signed the host's console certificate (the agent then serves).
    fn wait_host_certificate(&self, node: &str) {
        wait_for(&format!("the console certificate of {node}"), SETUP, || {
            let h = self
                .sys
                .get("hypervisor", None, node)
                .ok_or("no Hypervisor")?;
            let cert = &h["status"]["consoleCertificate"]["certificate"];
            if cert
                .as_str()
                .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
            {
                Ok(())
            } else {
                Err(h["status"]["conditions"].to_string())
            }
        });
    }

    /// Until the VM `ns/name` is Running and its guest printed `IRONVISOR-GUEST-UP` on its
    /// serial log; returns the VM.
    pub fn wait_guest_up(&self, ns: &str, name: &str) -> Value {
        let vm = self.sys.wait_phase(ns, name, "Running", SETUP);
        let uid = ironvisor_tests::system::uid(&vm);
        wait_for(&format!("{ns}/{name}'s guest up"), SETUP, || {
            let log = ironvisor_tests::system::console(&self.agent, &uid);
            if log.contains("IRONVISOR-GUEST-UP") {
                Ok(())
            } else {
                Err(format!("{} bytes of serial log", log.len()))
            }
        });
        vm
    }

    /// The libvirt domain of VM `ns/name` on this host.
    pub fn domain(&self, ns: &str, name: &str) -> String {
        ironvisor_agent::domain_xml::name::domain_name(ns, name)
    }
}

impl Drop for ConsoleStack {
    /// With `BENCH_KEEP` set, copies every process's log (devcluster, operator, agent,
    /// console server) to `/var/tmp/ironvisor-bench-console-PID/` first and says where: the
    /// system's own directory goes with it.
    fn drop(&mut self) {
        if std::env::var_os("BENCH_KEEP").is_none() {
            return;
        }
        let kept = PathBuf::from(format!(
            "/var/tmp/ironvisor-bench-console-{}",
            std::process::id()
        ));
        let copied = std::fs::create_dir_all(&kept).and_then(|()| {
            for e in std::fs::read_dir(self.sys.dir.path())? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "log") {
                    std::fs::copy(&p, kept.join(p.file_name().unwrap_or_default()))?;
                }
            }
            Ok(())
        });
        match copied {
            Ok(()) => eprintln!("logs kept in {}", kept.display()),
            Err(e) => eprintln!("keeping the logs in {} failed: {e}", kept.display()),
        }
    }
}

/// The console server as its ServiceAccount, on a free loopback port (returned).
fn start_server(sys: &System) -> anyhow::Result<(Proc, u16)> {
    let port = free_port();
    let kubeconfig = sys.service_account_kubeconfig("ironvisor-console", None);
    let bin = ironvisor_tests::system::bin("ironvisor-console");
    let log = sys.dir.path().join("console.log");
    let env = [
        ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
        ("POD_NAME".to_owned(), "ironvisor-console-bench".to_owned()),
    ];
    let proc = Proc::spawn_with_env(
        "ironvisor-console",
        &bin,
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--namespace".into(),
            SYSTEM_NS.into(),
        ],
        &env,
        &log,
    )
    .context("starting the console server")?;
    Ok((proc, port))
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// A VM of the tiny guest with a shell on its serial console (`ironvisor.shell`), no display.
pub fn shell_vm_manifest(ns: &str, name: &str, images: &Path) -> String {
    let spec = shell_vm_spec(images, 2);
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  runStrategy: Always\n{spec}"
    )
}

/// The spec fields of the shell guest as YAML lines indented by `indent` spaces, shared by
/// VMs and pool templates.
pub fn shell_vm_spec(images: &Path, indent: usize) -> String {
    let images = images.display();
    let lines = [
        "cpu: {cores: 1}".to_owned(),
        "memory: {size: 128Mi}".to_owned(),
        "terminationGracePeriodSeconds: 2".to_owned(),
        "graphics: none".to_owned(),
        "kernelBoot:".to_owned(),
        format!("  kernel: {{hostPath: {{path: {images}/vmlinuz}}}}"),
        format!("  initrd: {{hostPath: {{path: {images}/initrd.gz}}}}"),
        "  cmdline: console=ttyS0 quiet panic=-1 ironvisor.shell ironvisor.stay".to_owned(),
    ];
    let pad = " ".repeat(indent);
    lines.iter().map(|l| format!("{pad}{l}\n")).collect()
}
