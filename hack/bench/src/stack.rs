//! The system under test, started for one benchmark run: `ironvisor-devcluster`, the
//! operator and agents as processes (their RSS is their own), or an agent in-process when
//! it must not collect orphans on a libvirt it shares with others (`qemu:///system`).
//! Everything lives in a temporary directory (kubeconfig, logs, agent state).

use crate::api;
use crate::procs::{self, Proc};
use anyhow::Context as _;
use ironvisor_agent::daemon::{self, Config};
use ironvisor_agent::host::AccelChoice;
use kube::Client;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the binaries are and where the run keeps its files.
pub struct Stack {
    /// Directory of the Ironvisor binaries.
    pub bin_dir: PathBuf,
    /// Temporary directory of this run (kept when `BENCH_KEEP` is set).
    pub dir: tempfile::TempDir,
    /// The devcluster's kubeconfig.
    pub kubeconfig: PathBuf,
    /// Client of the bench itself.
    pub client: Client,
    /// The API server.
    pub devcluster: Proc,
    /// The operator, once started.
    pub operator: Option<Proc>,
    /// Agents started as processes.
    pub agents: Vec<AgentProc>,
}

/// An agent process and its metrics URL.
pub struct AgentProc {
    /// Host name.
    pub node: String,
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
}

/// An agent running inside the bench process.
pub struct InProcessAgent {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl InProcessAgent {
    /// Stop it and wait (up to 30 s).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

impl Stack {
    /// Start the devcluster, install the CRDs and the system namespace.
    pub async fn start(bin_dir: PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ironvisor-bench-")
            .tempdir_in("/var/tmp")?;
        // QEMU runs unprivileged under qemu:///system: the agent's state below must be
        // traversable.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let kubeconfig = dir.path().join("kubeconfig");
        let port = procs::free_port()?;
        let devcluster = Proc::spawn(
            "ironvisor-devcluster",
            &procs::binary(&bin_dir, "ironvisor-devcluster")?,
            &[
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
            ],
            &dir.path().join("devcluster.log"),
        )?;
        let mut stack_dev = devcluster;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !kubeconfig.is_file() {
            stack_dev.check_alive()?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "the devcluster wrote no kubeconfig"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = api::client(&kubeconfig).await?;
        api::install(&client).await.context("installing the CRDs")?;
        Ok(Self {
            bin_dir,
            dir,
            kubeconfig,
            client,
            devcluster: stack_dev,
            operator: None,
            agents: Vec::new(),
        })
    }

    /// Path inside the run directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Start the operator binary (default timing, resync 30 s).
    pub fn start_operator(&mut self) -> anyhow::Result<()> {
        let port = procs::free_port()?;
        let p = Proc::spawn(
            "ironvisor-operator",
            &procs::binary(&self.bin_dir, "ironvisor-operator")?,
            &[
                "--kubeconfig".into(),
                self.kubeconfig.display().to_string(),
                "--metrics-addr".into(),
                format!("127.0.0.1:{port}"),
                "--identity".into(),
                "bench".into(),
            ],
            &self.path("operator.log"),
        )?;
        self.operator = Some(p);
        Ok(())
    }

    /// Start an agent binary for `node` on `uri` (TCG, resync `resync_s` seconds).
    pub fn start_agent(
        &mut self,
        node: &str,
        uri: &str,
        resync_s: u64,
    ) -> anyhow::Result<&AgentProc> {
        let port = procs::free_port()?;
        let state = self.path(&format!("agent-{node}"));
        let images = state.join("images");
        std::fs::create_dir_all(&images)?;
        let p = Proc::spawn(
            &format!("ironvisor-agent {node}"),
            &procs::binary(&self.bin_dir, "ironvisor-agent")?,
            &[
                "--node-name".into(),
                node.into(),
                "--libvirt-uri".into(),
                uri.into(),
                "--kubeconfig".into(),
                self.kubeconfig.display().to_string(),
                "--state-dir".into(),
                state.display().to_string(),
                "--images-dir".into(),
                images.display().to_string(),
                "--metrics-addr".into(),
                format!("127.0.0.1:{port}"),
                "--accel".into(),
                "tcg".into(),
                "--resync-interval".into(),
                format!("{resync_s}s"),
            ],
            &self.path(&format!("agent-{node}.log")),
        )?;
        self.agents.push(AgentProc {
            node: node.into(),
            proc: p,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        });
        Ok(self.agents.last().expect("just pushed"))
    }

    /// Run an agent inside this process, without orphan collection (a shared libvirt), its
    /// state under `state_root` (which libvirt's QEMU must be able to reach).
    pub fn start_agent_in_process(
        &self,
        node: &str,
        uri: &str,
        state_root: &Path,
    ) -> anyhow::Result<InProcessAgent> {
        let state = state_root.join(format!("agent-{node}"));
        let images = state.join("images");
        std::fs::create_dir_all(&images)?;
        let mut cfg = Config::new(node, uri, state, images);
        cfg.accel = AccelChoice::Tcg;
        cfg.collect_orphans = false;
        let client = self.client.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = daemon::run(cfg, client, shutdown).await {
                tracing::error!(error = %e, "the in-process agent stopped");
            }
        });
        Ok(InProcessAgent {
            stop: Some(tx),
            task,
        })
    }

    /// The one-host set-up of density and overhead: a tenant with room for `vms` VMs in
    /// `ns`, the Hypervisor `node`, the operator, an agent on `uri` (in this process on a
    /// libvirt shared with others, without orphan collection), the host Ready, and one warm-up
    /// VM through the whole path (leader elected, watches synced), deleted again.
    pub async fn single_host(
        &mut self,
        ns: &str,
        node: &str,
        uri: &str,
        vms: usize,
        spec: &serde_json::Value,
    ) -> anyhow::Result<Option<InProcessAgent>> {
        api::tenant_with_quota(&self.client, "ivbench", ns, vms + 1).await?;
        // 1 vCPU per VM on a 2-core host needs the top overcommit ratio (64) above 128 VMs it
        // would not fit; the benches stay below.
        api::hypervisor(&self.client, node, 64.0, 4.0).await?;
        self.start_operator()?;
        let in_process = if uri.starts_with("test:") {
            self.start_agent(node, uri, 60)?;
            None
        } else {
            Some(self.start_agent_in_process(node, uri, self.dir.path())?)
        };
        api::wait_host_ready(&self.client, node, Duration::from_secs(30)).await?;
        self.check_alive()?;
        let tr = crate::tracker::Tracker::start(&self.client, ns, None);
        tr.created(ns, "warmup");
        api::create_vm(&self.client, ns, "warmup", spec, None).await?;
        anyhow::ensure!(
            tr.wait_running(1, Duration::from_secs(60), |_, _| {}).await,
            "the warm-up VM never ran"
        );
        api::delete_all_vms(&self.client, ns, Duration::from_secs(60)).await?;
        Ok(in_process)
    }

    /// Fails when any process of the stack has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.devcluster.check_alive()?;
        if let Some(o) = &mut self.operator {
            o.check_alive()?;
        }
        for a in &mut self.agents {
            a.proc.check_alive()?;
        }
        Ok(())
    }

    /// Stop agents, then the operator, then the API server. Keeps the directory when
    /// `BENCH_KEEP` is set (and says where).
    pub fn stop(self) {
        for a in self.agents {
            a.proc.stop(Duration::from_secs(10));
        }
        if let Some(o) = self.operator {
            o.stop(Duration::from_secs(5));
        }
        self.devcluster.stop(Duration::from_secs(5));
        if std::env::var_os("BENCH_KEEP").is_some() {
            let kept = self.dir.keep();
            println!("run directory kept: {}", kept.display());
        }
    }
}

/// Log to stderr at `BENCH_LOG` (default warn).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
