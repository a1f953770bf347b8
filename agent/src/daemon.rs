//! The agent as a whole: connect to libvirt, collect leftovers, then run the VM controller,
//! the heartbeat and the metrics endpoint until `shutdown` resolves. `main.rs` calls it with
//! the flags it parsed; the integration tests call it in-process against a devcluster.

use crate::domain_xml::DomainType;
use crate::health::{Monitor, MonitorConfig, Report};
use crate::host::{AccelChoice, HostFacts, accel_str, choose_accel, kvm_usable};
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::{HvError, Hypervisor as _};
use crate::metrics::{self, Metrics};
use crate::reconcile::controller::{self, Context};
use crate::reconcile::engine::Engine;
use crate::reconcile::guard::VmObject;
use crate::reconcile::heartbeat::{self, Heartbeat};
use crate::reconcile::leftovers;
use crate::storage::cache::ImageCache;
use crate::storage::prepare::StorageRoots;
use ironvisor_crds::hypervisor::Acceleration;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the libvirt connection is checked.
const LIBVIRT_CHECK: Duration = Duration::from_secs(1);

/// What the agent needs besides an API client.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of this host (its Hypervisor object and the `ironvisor.io/node` label value).
    pub node_name: String,
    /// libvirt URI.
    pub libvirt_uri: String,
    /// Directory for VM directories and the image cache.
    pub state_dir: PathBuf,
    /// Directory that hostPath images must resolve under.
    pub images_dir: PathBuf,
    /// Address of the /metrics endpoint; `None` serves no metrics.
    pub metrics_addr: Option<SocketAddr>,
    /// Acceleration choice.
    pub accel: AccelChoice,
    /// Full resync period.
    pub resync_interval: Duration,
    /// Lease renewal and Hypervisor status period.
    pub heartbeat_period: Duration,
    /// At startup and every resync period, remove our domains (recorded for this node) and
    /// directories whose VM the API confirms gone, and stop guests of VMs placed elsewhere.
    pub collect_orphans: bool,
    /// The KVM device whose access the host check verifies (/dev/kvm).
    pub kvm_device: PathBuf,
    /// Where image downloads may go, and how large an image may be.
    pub image_policy: crate::storage::fetch_policy::FetchPolicy,
    /// Refuse connections QEMU opens to the host's own addresses ([`crate::host_guard`]);
    /// `false` only with `--allow-guest-host-access`.
    pub guard_host: bool,
    /// Most bytes the image cache may hold on disk (`--image-cache-max-bytes`).
    pub image_cache_max_bytes: u64,
    /// libvirt URI peers use for migrations to this host (`--migration-uri`).
    pub migration_uri: Option<String>,
    /// Address QEMU listens on for incoming migrations (`--migration-address`).
    pub migration_address: Option<String>,
    /// How often running guests' use is sampled (`--utilization-sample-period`).
    pub utilization_sample: Duration,
    /// How samples are aggregated into buckets (`--utilization-bucket`, `--utilization-buckets`).
    pub utilization: crate::utilization::window::Settings,
    /// The console port (`--console-address`); `None`: no port.
    pub console: Option<crate::console::Config>,
}

impl Config {
    /// A configuration with the defaults of the command line for everything but the node,
    /// the libvirt URI and the directories.
    pub fn new(
        node_name: &str,
        libvirt_uri: &str,
        state_dir: PathBuf,
        images_dir: PathBuf,
    ) -> Self {
        Self {
            node_name: node_name.to_owned(),
            libvirt_uri: libvirt_uri.to_owned(),
            state_dir,
            images_dir,
            metrics_addr: None,
            accel: AccelChoice::Auto,
            resync_interval: Duration::from_secs(60),
            heartbeat_period: heartbeat::PERIOD,
            collect_orphans: true,
            kvm_device: PathBuf::from("/dev/kvm"),
            image_policy: Default::default(),
            guard_host: true,
            image_cache_max_bytes: crate::storage::cache_gc::DEFAULT_CACHE_MAX_BYTES,
            migration_uri: None,
            migration_address: None,
            utilization_sample: Duration::from_secs(60),
            utilization: Default::default(),
            console: None,
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory could not be created.
    #[error("creating the state directory {0}")]
    StateDir(PathBuf, #[source] std::io::Error),
    /// The host's seed key could not be loaded or made.
    #[error(transparent)]
    SeedKey(#[from] crate::seed_key::SeedKeyError),
    /// libvirt refused the connection or the host info.
    #[error("talking to libvirt at {0}")]
    Libvirt(String, #[source] HvError),
    /// The firewall rule that keeps guests off the host's own services could not be set.
    #[error(
        "cannot keep guests away from the host's services (or start with --allow-guest-host-access)"
    )]
    HostGuard(#[source] crate::host_guard::GuardError),
    /// The console port could not start.
    #[error(transparent)]
    Console(#[from] crate::console::StartError),
    /// A metric could not be registered (a duplicate name: a bug).
    #[error("cannot register the backup metrics")]
    Metrics(#[source] prometheus::Error),
}

/// Select rustls' process-wide crypto provider (aws-lc-rs, the workspace's only one). Should a
/// second provider ever be linked in (a dependency asking for ring), rustls would refuse to
/// pick one and building a kube client would panic; installing it explicitly prevents that.
/// Call it before building a client; calling it again is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The host check at start: one probe, and a second at once when the first was slow (a
/// single slow probe right after libvirtd started is normal; two in a row are a finding).
/// Says what it found in one log line.
async fn initial_health_check(heartbeat: &mut Heartbeat) -> Report {
    let mut report = heartbeat.check_health(None).await;
    if heartbeat
        .monitor
        .last_probe()
        .is_some_and(|d| d >= crate::health::probe::SLOW)
    {
        report = heartbeat.check_health(None).await;
    }
    let probe_ms = heartbeat.monitor.last_probe().map(|d| d.as_millis());
    if report.kvm.ok && report.schedulable() {
        tracing::info!(probe_ms, "host check passed: {}", report.log_line());
    } else {
        tracing::warn!(
            probe_ms,
            health = report.summary(),
            "host check: {}",
            report.log_line()
        );
    }
    report
}

/// Remove what deleted VMs left behind (only what the API confirms gone); never fatal.
async fn collect_leftovers(ctx: &Context) {
    match leftovers::sweep(ctx).await {
        Ok(s) if !s.removed.is_empty() || !s.stopped.is_empty() => {
            tracing::info!(removed = ?s.removed, stopped = ?s.stopped, "leftovers swept")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not look for leftovers; will not remove anything")
        }
    }
}

/// Mark the agent synced once the VM watch has listed. Polled again and again: the store's
/// ready signal keeps one waker only, and the controller waits on it too, so a single wait
/// here could sleep forever.
async fn mark_synced(
    store: kube::runtime::reflector::Store<VmObject>,
    health: Arc<metrics::Health>,
) {
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(Ok(())) => {
                health.set_synced();
                return;
            }
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
}

/// Watch the libvirt connection: reopen it (with backoff) when libvirtd went away, and
/// report it in the metrics and the readiness probe.
async fn watch_libvirt(libvirt: Libvirt, metrics: Arc<Metrics>, health: Arc<metrics::Health>) {
    let mut tick = tokio::time::interval(LIBVIRT_CHECK);
    loop {
        tick.tick().await;
        let up = libvirt.ensure_connected().await;
        health.set_libvirt(up);
        metrics.observe_libvirt(up, libvirt.reconnects());
    }
}

/// How often the host guard is checked again (a firewall reloaded by someone else loses it).
const GUARD_CHECK: Duration = Duration::from_secs(60);

/// Install the host guard for QEMU's user, when QEMU runs as a user of its own (libvirt's DAC
/// label; none with the test driver or a QEMU running as root, where there is no user to
/// match). Returns the uid guarded.
fn guard_host(config: &Config, qemu_label: Option<(u32, u32)>) -> Result<Option<u32>, StartError> {
    let Some((uid, _)) = qemu_label.filter(|(uid, _)| config.guard_host && *uid != 0) else {
        if !config.guard_host {
            tracing::warn!("--allow-guest-host-access: guests can reach the host's own services");
        }
        return Ok(None);
    };
    // A few short iptables runs, once at start: not worth a blocking thread.
    crate::host_guard::Firewall::default()
        .ensure(uid)
        .map_err(StartError::HostGuard)?;
    tracing::info!(
        uid,
        "guests cannot open connections to the host's own addresses"
    );
    Ok(Some(uid))
}

/// Level-triggered: put back whatever part of the guard has gone missing since the start.
async fn keep_guard(uid: u32) {
    let mut tick = tokio::time::interval(GUARD_CHECK);
    tick.tick().await;
    loop {
        tick.tick().await;
        let r =
            tokio::task::spawn_blocking(move || crate::host_guard::Firewall::default().ensure(uid))
                .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the host guard could not be restored"),
            Err(e) => tracing::error!(error = %e, "the host guard check did not finish"),
        }
    }
}

/// Run the agent until `shutdown` resolves.
pub async fn run(
    config: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), StartError> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| StartError::StateDir(config.state_dir.clone(), e))?;
    let libvirt = Libvirt::new(&config.libvirt_uri);
    let lv_err = |e| StartError::Libvirt(config.libvirt_uri.clone(), e);
    libvirt.connect().await.map_err(lv_err)?;
    let host_info = libvirt.host_info().await.map_err(lv_err)?;
    let guarded = guard_host(&config, host_info.qemu_label)?;
    let facts = HostFacts::read(&host_info);
    let accel = choose_accel(config.accel, kvm_usable(), &facts.cpu.flags);
    let domain_type = match accel {
        Acceleration::Kvm => DomainType::Kvm,
        Acceleration::Tcg => DomainType::Qemu,
    };
    tracing::info!(
        node = config.node_name,
        uri = config.libvirt_uri,
        accel = accel_str(accel),
        libvirt = facts.libvirt_version,
        qemu = facts.qemu_version,
        "ironvisor-agent starting"
    );

    let metrics = Arc::new(Metrics::new());
    let console_registry = metrics.clone();
    let storage = StorageRoots {
        cache: ImageCache::with_policy(&config.state_dir, config.image_policy.clone())
            .with_max_bytes(config.image_cache_max_bytes),
        state_dir: config.state_dir.clone(),
        images_dir: config.images_dir.clone(),
    };
    let mut engine = Engine::new(
        Arc::new(libvirt.clone()),
        storage,
        domain_type,
        metrics.clone(),
    );
    engine.node = config.node_name.clone();
    let seed_key = crate::seed_key::SeedKey::load_or_create(&config.state_dir)?;
    let seed_public = seed_key.public_b64().to_owned();
    let backup_metrics =
        crate::backup::metrics::BackupMetrics::register(&metrics).map_err(StartError::Metrics)?;
    let snapshot_metrics = crate::snapshot::metrics::SnapshotMetrics::register(&metrics)
        .map_err(StartError::Metrics)?;
    let mut vm_ctx = Context::new(
        client.clone(),
        &config.node_name,
        engine,
        config.resync_interval,
        seed_key,
    );
    vm_ctx.backup_metrics = Some(backup_metrics.clone());
    let ctx = Arc::new(vm_ctx);

    if config.collect_orphans {
        collect_leftovers(&ctx).await;
    }

    let health = Arc::new(metrics::Health::default());
    // Connected a moment ago; the connection watch keeps it current from here on.
    health.set_libvirt(true);
    let metrics_task = config
        .metrics_addr
        .map(|addr| tokio::spawn(metrics::serve(metrics.clone(), health.clone(), addr)));
    let ctrl = controller::controller(&ctx);
    let store = ctrl.store();
    let sync_task = tokio::spawn(mark_synced(store, health.clone()));
    let guard_task = guarded.map(|uid| tokio::spawn(keep_guard(uid)));
    let libvirt_task = tokio::spawn(watch_libvirt(
        libvirt.clone(),
        metrics.clone(),
        health.clone(),
    ));
    let mut heartbeat = Heartbeat {
        client,
        node: config.node_name.clone(),
        monitor: Monitor::new(MonitorConfig {
            kvm_device: config.kvm_device.clone(),
            state_dir: config.state_dir.clone(),
            images_dir: config.images_dir.clone(),
            cpu_flags: facts.cpu.flags.clone(),
            qemu_label: host_info.qemu_label,
        }),
        facts,
        accel,
        metrics,
        period: config.heartbeat_period,
        libvirt: libvirt.clone(),
        health: health.clone(),
        seed_key: seed_public,
        last_sample: None,
    };
    let first = initial_health_check(&mut heartbeat).await;
    let heartbeat_task = tokio::spawn(heartbeat.run(ctrl.store(), first));
    let snap_ctx = Arc::new(crate::snapshot::controller::Context {
        client: ctx.client.clone(),
        node: config.node_name.clone(),
        libvirt: libvirt.clone(),
        state_dir: config.state_dir.clone(),
        metrics: snapshot_metrics,
        layers: Default::default(),
    });
    let snapshot_task = tokio::spawn(crate::snapshot::controller::run(
        snap_ctx.clone(),
        std::future::pending(),
    ));
    let restore_task = tokio::spawn(crate::snapshot::restore_controller::run(
        snap_ctx.clone(),
        std::future::pending(),
    ));
    let backup_task = tokio::spawn(crate::backup::controller::run(Arc::new(
        crate::backup::controller::Context::new(snap_ctx, backup_metrics),
    )));
    let location_task = tokio::spawn(crate::backup::location::run(Arc::new(
        crate::backup::location::Context {
            client: ctx.client.clone(),
            node: config.node_name.clone(),
        },
    )));
    let sweep_task = config
        .collect_orphans
        .then(|| tokio::spawn(leftovers::sweep_periodically(ctx.clone())));
    let migration_task = tokio::spawn(crate::migration::run(
        ctx.clone(),
        crate::migration::Config {
            libvirt_uri: config.libvirt_uri.clone(),
            migration_uri: config.migration_uri.clone(),
            migration_address: config.migration_address.clone(),
        },
    ));
    let sampler_task = tokio::spawn(
        crate::utilization::Sampler {
            client: ctx.client.clone(),
            node: config.node_name.clone(),
            hv: Arc::new(libvirt.clone()),
            every: config.utilization_sample,
            settings: config.utilization,
        }
        .run(),
    );
    let console_tasks = match &config.console {
        Some(c) => {
            crate::console::start(
                c,
                ctx.client.clone(),
                &config.node_name,
                libvirt.clone(),
                &config.libvirt_uri,
                config.state_dir.clone(),
                console_registry.registry(),
            )
            .await?
        }
        None => Vec::new(),
    };
    controller::run(ctx, ctrl, shutdown).await;
    for t in console_tasks {
        t.abort();
    }
    sampler_task.abort();
    migration_task.abort();
    if let Some(t) = sweep_task {
        t.abort();
    }
    snapshot_task.abort();
    restore_task.abort();
    backup_task.abort();
    location_task.abort();
    heartbeat_task.abort();
    sync_task.abort();
    libvirt_task.abort();
    if let Some(t) = guard_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    libvirt.close();
    tracing::info!(node = config.node_name, "ironvisor-agent stopped");
    Ok(())
}
