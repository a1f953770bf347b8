//! `--wait`: watch one VM until it reaches a [`Target`], showing its phase as it goes: a
//! spinner on a terminal, one line per change otherwise (logs and CI keep the history).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use ironvisor_crds::vm::VirtualMachine;
use kube::Api;
use kube::runtime::watcher;

use super::power::{Target, reached};

/// Why a wait ended without the target.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed.
    #[error("timed out after {after:?} waiting for {key} to be {what} (now: {now})")]
    Timeout {
        /// How long it waited.
        after: Duration,
        /// `namespace/name`.
        key: String,
        /// The target, in words.
        what: &'static str,
        /// The VM's state when time ran out.
        now: String,
    },
    /// The VM can no longer reach the target.
    #[error("{key}: {reason}")]
    Failed {
        /// `namespace/name`.
        key: String,
        /// Why.
        reason: String,
    },
    /// The VM was deleted while waiting.
    #[error("{0} was deleted while waiting")]
    Deleted(String),
}

/// The target in words.
pub fn describe(target: &Target) -> &'static str {
    match target {
        Target::Running => "Running",
        Target::Stopped => "stopped",
        Target::Restarted(_) => "restarted and Running",
    }
}

/// What the progress line shows: printableStatus (or phase) and the host.
fn state_text(vm: &VirtualMachine) -> String {
    let s = vm.status.clone().unwrap_or_default();
    let what = s
        .printable_status
        .or(s.phase.map(|p| p.as_str().to_owned()))
        .unwrap_or_else(|| "no status yet".into());
    match s.node_name {
        Some(n) => format!("{what} on {n}"),
        None => what,
    }
}

/// Progress on stderr: a spinner on a terminal, else a line per change.
struct Progress {
    bar: Option<ProgressBar>,
    prefix: String,
    last: String,
    started: Instant,
}

impl Progress {
    fn new(prefix: String) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            prefix,
            last: String::new(),
            started: Instant::now(),
        }
    }

    fn show(&mut self, state: &str) {
        if state == self.last {
            return;
        }
        self.last = state.to_owned();
        let line = format!("{}: {state}", self.prefix);
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => eprintln!("{line} [{}s]", self.started.elapsed().as_secs()),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Watch `name` through `api` until it reaches `target` or `timeout` passes.
pub async fn wait_for(
    api: &Api<VirtualMachine>,
    key: &str,
    name: &str,
    target: &Target,
    timeout: Duration,
) -> Result<VirtualMachine, WaitError> {
    let what = describe(target);
    let mut progress = Progress::new(format!("waiting for {key} to be {what}"));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config).boxed();
    let watch = async {
        while let Some(ev) = stream.next().await {
            let vm = match ev {
                Ok(watcher::Event::Apply(vm) | watcher::Event::InitApply(vm)) => vm,
                Ok(watcher::Event::Delete(_)) => return Err(WaitError::Deleted(key.to_owned())),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                // The watcher retries by itself; show why it is stuck meanwhile.
                Err(e) => {
                    progress.show(&format!("watch interrupted ({e}); retrying"));
                    continue;
                }
            };
            progress.show(&state_text(&vm));
            match reached(target, &vm) {
                Ok(true) => return Ok(vm),
                Ok(false) => {}
                Err(reason) => {
                    return Err(WaitError::Failed {
                        key: key.to_owned(),
                        reason,
                    });
                }
            }
        }
        Err(WaitError::Deleted(key.to_owned()))
    };
    let result = tokio::time::timeout(timeout, watch).await;
    progress.finish();
    match result {
        Ok(r) => r,
        Err(_) => Err(WaitError::Timeout {
            after: timeout,
            key: key.to_owned(),
            what,
            now: if progress.last.is_empty() {
                "unknown".into()
            } else {
                progress.last.clone()
            },
        }),
    }
}
