//! `bench-console`: serial console round trips (a keystroke until its echo) with the tiny
//! guest's shell (TCG), through the API path against a direct connection on the host, in
//! one run. Not a test. Needs root, libvirtd (hack/start-libvirtd.sh) and the workspace's
//! binaries (`cargo build --bins`: devcluster, operator, agent, ironvisor-console).
//!
//! - API path: `ivctl console`'s connection (kube-rs `Client::connect` with a user's token)
//!   to `/apis/subresources.ironvisor.io/v1/namespaces/{ns}/virtualmachines/{name}/console`
//!   on the devcluster's TLS port → its aggregation proxy (RBAC, front-proxy hop) → the
//!   console server (front-proxy authentication, SubjectAccessReview) → the agent's mTLS
//!   console port → libvirt's console stream.
//! - Direct: libvirt's console stream of the same domain, opened in this process
//!   (`virDomainOpenConsole`, what `virsh console` uses).
//!
//! A serial console takes one client at a time (the agent never forces one off), so the two
//! paths alternate in sessions: a session opens its path, types `#Z` (a comment line, so
//! Enter runs nothing) and waits for their echo, then types `--session-keys` letters, each
//! timed, presses Enter, waits for the prompt and closes; then the other path's session.
//! Each keystroke is timed from the send to the echo; the session's opening (WebSocket
//! upgrade / stream opened) and its first echo (`#Z`) are timed apart.

use std::time::{Duration, Instant};

use clap::Parser;
use ironvisor_bench::console::{ConsoleStack, shell_vm_manifest};
use ironvisor_bench::keys::{
    ApiSession, DirectSession, ECHO_TIMEOUT, PROBE, SYNC, answered, at_prompt, synced,
};
use ironvisor_bench::{report, stats};
use ivctl::vm::remote::RemoteError;

/// Console round trips: the API path against libvirt's console stream.
#[derive(Parser, Debug)]
struct Args {
    /// Keystrokes timed on each path.
    #[arg(long, default_value_t = 200)]
    keys: usize,
    /// Keystrokes per session (one line; the shell redraws lines longer than the terminal).
    #[arg(long, default_value_t = 20)]
    session_keys: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const USER: &str = "bench";
const NS: &str = "conbench";
const VM: &str = "shell";
const URI: &str = "qemu:///system";
/// How long a console may stay busy after the other path let it go.
const BUSY: Duration = Duration::from_secs(30);
/// Longest a direct session may take (its opening, up to 60 echoes and the prompt).
const SESSION: Duration = Duration::from_secs(120);

/// The timed keystrokes of a session: letters, never in the prompt (`/ # `), so output
/// left from before the session (a prompt) cannot pass for an echo.
fn line(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// What one path measured.
#[derive(Default)]
struct Side {
    /// Each timed keystroke until its echo.
    keys: Vec<Duration>,
    /// Each session's opening (WebSocket upgraded / libvirt stream opened).
    opens: Vec<Duration>,
    /// From the session's first keys ([`SYNC`]) to their echo: QEMU polls a serial pty
    /// whose reader went away about once a second, so a new session's first input waits.
    first_echo: Vec<Duration>,
    /// Sessions given up: an echo (or the prompt) did not come within [`ECHO_TIMEOUT`].
    lost: usize,
}

/// Most sessions a path may lose before the run is called failed.
const MAX_LOST: usize = 3;

/// Count a lost session (the run goes on with the next one) or fail the run.
fn lost(path: &str, side: &mut Side, r: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = r {
        side.lost += 1;
        eprintln!("lost session: {path} session {}: {e:#}", side.opens.len());
        anyhow::ensure!(
            side.lost <= MAX_LOST,
            "{path}: over {MAX_LOST} sessions lost"
        );
    }
    Ok(())
}

/// Says so when a keystroke took over a second (an outlier worth a look in the logs).
fn slow(path: &str, side: &Side, d: Duration) {
    if d > Duration::from_secs(1) {
        eprintln!(
            "slow echo: {path} session {}, keystroke {}: {d:?}",
            side.opens.len(),
            side.keys.len() + 1
        );
    }
}

/// Open through the API, retrying while the console is busy (the other path's session is
/// still being let go); the successful attempt is timed.
async fn open_api(client: &kube::Client) -> anyhow::Result<(ApiSession, Duration)> {
    let deadline = Instant::now() + BUSY;
    loop {
        let t = Instant::now();
        match ApiSession::open(client, NS, VM).await {
            Ok(s) => return Ok((s, t.elapsed())),
            Err(RemoteError::Refused { code: 409, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn api_session(client: &kube::Client, keys: &[u8], side: &mut Side) -> anyhow::Result<()> {
    let (mut s, open) = open_api(client).await?;
    side.opens.push(open);
    let t = Instant::now();
    s.send(SYNC).await?;
    s.read_until(ECHO_TIMEOUT, synced).await?;
    side.first_echo.push(t.elapsed());
    for &k in keys {
        let d = s.keystroke(k).await?;
        slow("API", side, d);
        side.keys.push(d);
    }
    s.send(b"\r").await?;
    s.read_until(ECHO_TIMEOUT, at_prompt).await?;
    s.close().await;
    Ok(())
}

/// Open libvirt's console, retrying while the agent still holds it.
fn open_direct(domain: &str) -> anyhow::Result<(DirectSession, Duration)> {
    let deadline = Instant::now() + BUSY;
    loop {
        let t = Instant::now();
        match DirectSession::open(URI, domain) {
            Ok(s) => return Ok((s, t.elapsed())),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e),
        }
    }
}

fn direct_session(domain: &str, keys: &[u8], side: &mut Side) -> anyhow::Result<()> {
    let (s, open) = open_direct(domain)?;
    side.opens.push(open);
    let t = Instant::now();
    s.send(SYNC)?;
    s.read_until(synced)?;
    side.first_echo.push(t.elapsed());
    for &k in keys {
        let d = s.keystroke(k)?;
        slow("direct", side, d);
        side.keys.push(d);
    }
    s.send(b"\r")?;
    s.read_until(at_prompt)?;
    Ok(())
}

/// Both paths reach the shell before anything is timed (the first connection also warms
/// the console server's and the agent's connections).
async fn warm_up(client: &kube::Client, domain: &str) -> anyhow::Result<()> {
    let (mut s, _) = open_api(client).await?;
    s.probe(Instant::now() + Duration::from_secs(120)).await?;
    s.close().await;
    let domain = domain.to_owned();
    let session = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let (s, _) = open_direct(&domain)?;
        s.send(PROBE)?;
        s.read_until(|b| answered(b) && at_prompt(b))?;
        Ok(())
    });
    tokio::time::timeout(SESSION, session)
        .await
        .map_err(|_| anyhow::anyhow!("the direct warm-up took over {SESSION:?}"))??
}

async fn measure(args: &Args, client: &kube::Client, domain: &str) -> anyhow::Result<(Side, Side)> {
    warm_up(client, domain).await?;
    let (mut api, mut direct) = (Side::default(), Side::default());
    while api.keys.len() < args.keys || direct.keys.len() < args.keys {
        let done = api.keys.len().min(direct.keys.len());
        let n = args.session_keys.min(args.keys.saturating_sub(done)).max(1);
        let r = api_session(client, &line(n), &mut api).await;
        lost("API", &mut api, r)?;
        let (keys, dom) = (line(n), domain.to_owned());
        // libvirt's stream reads block without a deadline: the session as a whole has one
        // (a hung session ends the run; the stack is torn down on the way out).
        let session = tokio::task::spawn_blocking(move || -> anyhow::Result<Side> {
            let r = direct_session(&dom, &keys, &mut direct);
            lost("direct", &mut direct, r)?;
            Ok(direct)
        });
        direct = tokio::time::timeout(SESSION, session)
            .await
            .map_err(|_| anyhow::anyhow!("a direct session took over {SESSION:?}"))???;
        eprintln!(
            "{} keystrokes each so far (last session: api {:?}, direct {:?})",
            api.keys.len(),
            api.keys.last(),
            direct.keys.last()
        );
    }
    Ok((api, direct))
}

fn summary(d: &[Duration]) -> anyhow::Result<stats::Summary> {
    stats::summarize(d).ok_or_else(|| anyhow::anyhow!("no samples"))
}

fn print(args: &Args, api: &Side, direct: &Side) -> anyhow::Result<()> {
    let (ak, dk) = (summary(&api.keys)?, summary(&direct.keys)?);
    let (ao, dopen) = (summary(&api.opens)?, summary(&direct.opens)?);
    let (af, df) = (summary(&api.first_echo)?, summary(&direct.first_echo)?);
    let row = |what: &str, a: f64, d: f64| {
        vec![
            what.to_owned(),
            report::ms(a),
            report::ms(d),
            report::times(stats::ratio(a, d)),
        ]
    };
    let rows = vec![
        row("keystroke→echo p50", ak.p50_ms, dk.p50_ms),
        row("keystroke→echo p95", ak.p95_ms, dk.p95_ms),
        row("keystroke→echo p99", ak.p99_ms, dk.p99_ms),
        row("keystroke→echo max", ak.max_ms, dk.max_ms),
        row("session open p50", ao.p50_ms, dopen.p50_ms),
        row("session open p95", ao.p95_ms, dopen.p95_ms),
        row("session's first echo p50", af.p50_ms, df.p50_ms),
        row("session's first echo p95", af.p95_ms, df.p95_ms),
        vec![
            "sessions lost (no echo in 30 s)".to_owned(),
            api.lost.to_string(),
            direct.lost.to_string(),
            String::new(),
        ],
    ];
    let text = format!(
        "{} keystrokes per path in {} alternating sessions each ({} keys a session), tiny guest's \
         shell under TCG\n{}",
        api.keys.len(),
        api.opens.len(),
        args.session_keys,
        report::table(&["", "API path", "direct (libvirt)", "API / direct"], &rows)
    );
    let json = serde_json::json!({
        "bench": "console", "keys": api.keys.len(), "sessions": api.opens.len(),
        "api": {"keystroke": ak, "open": ao, "first_echo": af, "lost_sessions": api.lost},
        "direct": {"keystroke": dk, "open": dopen, "first_echo": df, "lost_sessions": direct.lost},
        "ratio_p50": stats::ratio(ak.p50_ms, dk.p50_ms),
        "ratio_p95": stats::ratio(ak.p95_ms, dk.p95_ms),
        "ratio_p99": stats::ratio(ak.p99_ms, dk.p99_ms),
    });
    report::emit(
        "serial console round trip: API path vs direct",
        &text,
        &json,
        args.json.as_deref(),
    )
}

fn main() -> anyhow::Result<()> {
    ironvisor_bench::stack::init_logging();
    let args = Args::parse();
    anyhow::ensure!(
        args.keys > 0 && (1..=60).contains(&args.session_keys),
        "--keys must be > 0 and --session-keys 1..=60 (one line of the guest's terminal)"
    );
    let stack = ConsoleStack::start(&[USER])?;
    stack.sys.tenant(NS, NS, "{virtualMachines: 2}");
    stack.sys.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: console-bench, namespace: {NS}}}\n\
         rules: [{{apiGroups: [subresources.ironvisor.io], resources: [virtualmachines/console], \
         verbs: [get]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: console-bench, namespace: {NS}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: console-bench}}\n\
         subjects: [{{kind: User, apiGroup: rbac.authorization.k8s.io, name: {USER}}}]\n"
    ));
    stack.sys.apply(&shell_vm_manifest(NS, VM, &stack.images));
    stack.wait_guest_up(NS, VM);
    let domain = stack.domain(NS, VM);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let measured = rt.block_on(async {
        let client = stack.user_client(USER).await?;
        measure(&args, &client, &domain).await
    });
    // Dropping the runtime would wait for a direct session hung in libvirt.
    rt.shutdown_timeout(Duration::from_secs(1));
    let (api, direct) = measured?;
    print(&args, &api, &direct)
}
