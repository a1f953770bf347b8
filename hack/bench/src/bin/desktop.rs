//! `bench-desktop`: from a `DesktopClaim` created by a user to that user's serial console of
//! the desktop answering through the API path, with a started spare available
//! (`minSpare: 1`) and without (`minSpare: 0`: the claim makes the pool create and boot a
//! desktop). Not a test. Needs root, libvirtd (hack/start-libvirtd.sh) and the workspace's
//! binaries (`cargo build --bins`: devcluster, operator, agent, ironvisor-console).
//!
//! Each round: the system is quiet first (the warm pool's spare booted to its shell, no
//! other desktop left); the user's claim is created through the API (t0); the claim is
//! Bound to a desktop (polled every 20 ms); the user opens the desktop's console through
//! the API (`ivctl console`'s connection, retried every 50 ms while RBAC, the agent or the
//! guest are not there yet: the claim's console Role is made on binding); a command is
//! typed until the guest's shell answers it (t1, resent every 500 ms while the guest
//! boots). Then the claim is released and its desktop deleted (a Dedicated desktop would
//! otherwise come back to the same user, already running). The two pools' rounds alternate.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use ironvisor_bench::console::{ConsoleStack, shell_vm_spec};
use ironvisor_bench::keys::ApiSession;
use ironvisor_bench::{report, stats};
use ironvisor_crds::desktop::{CLAIM_LABEL, ClaimPhase, DesktopClaim, POOL_LABEL};
use ironvisor_crds::vm::VirtualMachine;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// Claim → console connected, with and without spares.
#[derive(Parser, Debug)]
struct Args {
    /// Claims timed in each pool.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const USER: &str = "bench";
const NS: &str = "deskbench";
/// The pool with a started spare, and the one without.
const WARM: &str = "warm";
const COLD: &str = "cold";
/// How long one claim may take to answer (a TCG boot on a loaded machine).
const ROUND: Duration = Duration::from_secs(300);

/// One claim's milestones since its creation.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Sample {
    bound_ms: f64,
    open_ms: f64,
    answer_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pool_yaml(name: &str, min_spare: u32, images: &std::path::Path) -> String {
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: DesktopPool\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  size: 3\n  minSpare: {min_spare}\n  assignment: Dedicated\n  \
         template:\n    spec:\n{}",
        shell_vm_spec(images, 6)
    )
}

/// The desktops of `pool`.
async fn desktops(admin: &kube::Client, pool: &str) -> anyhow::Result<Vec<VirtualMachine>> {
    let lp = ListParams::default().labels(&format!("{POOL_LABEL}={pool}"));
    Ok(Api::<VirtualMachine>::namespaced(admin.clone(), NS)
        .list(&lp)
        .await?
        .items)
}

/// Quiet: the warm pool has exactly one desktop, unclaimed, its guest at its shell; the
/// cold pool has none.
async fn quiesce(stack: &ConsoleStack, admin: &kube::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + ROUND;
    loop {
        let warm = desktops(admin, WARM).await?;
        let cold = desktops(admin, COLD).await?;
        let spare = match warm.as_slice() {
            [d] if !d.labels().contains_key(CLAIM_LABEL)
                && d.metadata.deletion_timestamp.is_none() =>
            {
                d.metadata.name.clone()
            }
            _ => None,
        };
        if let (Some(name), true) = (spare, cold.is_empty()) {
            tokio::task::block_in_place(|| stack.wait_guest_up(NS, &name));
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pools never became quiet: warm {} desktops, cold {}",
            warm.len(),
            cold.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Until the claim is Bound: its desktop's name.
async fn bound(admin: &kube::Client, claim: &str, deadline: Instant) -> anyhow::Result<String> {
    let api = Api::<DesktopClaim>::namespaced(admin.clone(), NS);
    loop {
        let c = api.get(claim).await?;
        if let Some(s) = &c.status
            && let (ClaimPhase::Bound, Some(vm)) = (&s.phase, &s.vm_name)
        {
            return Ok(vm.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "claim {claim} never Bound: {:?}",
            c.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Open the desktop's console as the user, retrying while it is refused or unreachable.
async fn open(user: &kube::Client, vm: &str, deadline: Instant) -> anyhow::Result<ApiSession> {
    loop {
        match ApiSession::open(user, NS, vm).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "console not open yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("the desktop's console never opened"),
        }
    }
}

/// One claim on `pool`, timed; released and its desktop deleted afterwards.
async fn round(
    admin: &kube::Client,
    user: &kube::Client,
    pool: &str,
    i: usize,
) -> anyhow::Result<Sample> {
    let name = format!("{pool}-{i}");
    let claim: DesktopClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"poolName": pool, "user": USER},
    }))?;
    let claims = Api::<DesktopClaim>::namespaced(user.clone(), NS);
    let t0 = Instant::now();
    let deadline = t0 + ROUND;
    claims.create(&PostParams::default(), &claim).await?;
    let vm = bound(admin, &name, deadline).await?;
    let t_bound = t0.elapsed();
    let mut s = open(user, &vm, deadline).await?;
    let t_open = t0.elapsed();
    s.probe(deadline).await?;
    let sample = Sample {
        bound_ms: ms(t_bound),
        open_ms: ms(t_open),
        answer_ms: ms(t0.elapsed()),
    };
    eprintln!("{pool} round {i} ({vm}): {sample:?}");
    s.close().await;
    claims.delete(&name, &DeleteParams::default()).await?;
    Api::<VirtualMachine>::namespaced(admin.clone(), NS)
        .delete(&vm, &DeleteParams::default())
        .await?;
    Ok(sample)
}

fn summary(s: &[Sample], f: impl Fn(&Sample) -> f64) -> Option<stats::Summary> {
    let v: Vec<Duration> = s
        .iter()
        .map(|x| Duration::from_secs_f64(f(x) / 1000.0))
        .collect();
    stats::summarize(&v)
}

fn print(args: &Args, warm: &[Sample], cold: &[Sample]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (label, s) in [
        ("spare available (minSpare 1)", warm),
        ("no spare (minSpare 0)", cold),
    ] {
        let total = summary(s, |x| x.answer_ms).context("no samples")?;
        let b = summary(s, |x| x.bound_ms).context("no samples")?;
        let o = summary(s, |x| x.open_ms).context("no samples")?;
        rows.push(vec![
            label.to_owned(),
            report::ms(total.p50_ms),
            report::ms(total.p95_ms),
            report::ms(total.max_ms),
            report::ms(b.p50_ms),
            report::ms(o.p50_ms),
        ]);
    }
    let text = format!(
        "{} claims per pool, alternating; tiny guest (TCG); console through the API path\n{}",
        warm.len(),
        report::table(
            &[
                "",
                "claim→answer p50",
                "p95",
                "max",
                "→Bound p50",
                "→console open p50"
            ],
            &rows
        )
    );
    let json = serde_json::json!({
        "bench": "desktop", "rounds": args.rounds,
        "spare": {"samples": warm, "answer": summary(warm, |x| x.answer_ms),
                  "bound": summary(warm, |x| x.bound_ms), "open": summary(warm, |x| x.open_ms)},
        "no_spare": {"samples": cold, "answer": summary(cold, |x| x.answer_ms),
                     "bound": summary(cold, |x| x.bound_ms), "open": summary(cold, |x| x.open_ms)},
    });
    report::emit(
        "desktop claim → console connected",
        &text,
        &json,
        args.json.as_deref(),
    )
}

async fn measure(stack: &ConsoleStack, args: &Args) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    let admin = ironvisor_bench::api::client(&stack.sys.kubeconfig).await?;
    let user = stack.user_client(USER).await?;
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for i in 0..args.rounds {
        quiesce(stack, &admin).await?;
        warm.push(round(&admin, &user, WARM, i).await?);
        quiesce(stack, &admin).await?;
        cold.push(round(&admin, &user, COLD, i).await?);
    }
    Ok((warm, cold))
}

fn main() -> anyhow::Result<()> {
    ironvisor_bench::stack::init_logging();
    let args = Args::parse();
    anyhow::ensure!(args.rounds > 0, "--rounds must be > 0");
    let stack = ConsoleStack::start(&[USER])?;
    stack.sys.tenant(NS, NS, "{virtualMachines: 4}");
    stack.sys.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: desktop-users, namespace: {NS}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ironvisor-desktop-user}}\n\
         subjects: [{{kind: User, apiGroup: rbac.authorization.k8s.io, name: {USER}}}]\n"
    ));
    stack.sys.apply(&pool_yaml(WARM, 1, &stack.images));
    stack.sys.apply(&pool_yaml(COLD, 0, &stack.images));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (warm, cold) = rt.block_on(measure(&stack, &args))?;
    print(&args, &warm, &cold)
}
