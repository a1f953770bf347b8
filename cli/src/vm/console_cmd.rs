//! `ivctl console`: find the VM, decide with [`super::console::plan`], then hand the
//! terminal to `virsh console` or print (and follow) the serial log.

use std::fs::File;
use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironvisor_crds::vm::VirtualMachine;
use kube::Api;

use super::args::ConsoleArgs;
use super::cmd::{VmError, get_vm};
use super::console::{self, ConsolePlan, Here};
use crate::cluster::ClusterArgs;

/// How often `--follow` looks for new output.
const FOLLOW_PERIOD: Duration = Duration::from_millis(200);

/// Why the console could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Finding the VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Nothing to show from this host.
    #[error("{0}")]
    Unavailable(String),
    /// The log could not be read.
    #[error("cannot read the serial log {0}")]
    Log(String, #[source] std::io::Error),
    /// virsh could not be run.
    #[error("cannot run virsh (install libvirt-clients)")]
    Virsh(#[source] std::io::Error),
    /// The console through the Kubernetes API failed.
    #[error(transparent)]
    Remote(#[from] super::remote_cmd::RemoteCmdError),
}

/// This host's name: `/proc/sys/kernel/hostname` (the kernel's, as `hostname` prints).
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Look the VM up (async, on a short-lived runtime) and decide.
fn decide(
    cluster: &ClusterArgs,
    a: &ConsoleArgs,
) -> Result<(VirtualMachine, ConsolePlan), VmError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(VmError::Runtime)?;
    let vm = rt.block_on(async {
        let namespace = cluster.namespace().await;
        let api = Api::<VirtualMachine>::namespaced(cluster.client().await?, &namespace);
        get_vm(&api, &namespace, &a.name).await
    })?;
    let node = a.node_name.clone().unwrap_or_else(local_hostname);
    let log_exists = vm
        .metadata
        .uid
        .as_deref()
        .and_then(|u| console::log_path(&a.state_dir, u))
        .is_some_and(|p| p.is_file());
    let here = Here {
        node: &node,
        state_dir: &a.state_dir,
        log_exists,
        interactive: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
        want_log: a.log || a.follow,
        remote: a.remote,
    };
    let plan = console::plan(&vm, &here);
    Ok((vm, plan))
}

/// Copy the log to stdout; with `follow`, keep copying what is appended (from the start
/// again when the file is truncated or replaced) until interrupted.
fn print_log(path: &Path, follow: bool) -> Result<(), ConsoleError> {
    let err = |e| ConsoleError::Log(path.display().to_string(), e);
    let mut file = File::open(path).map_err(err)?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos: u64 = 0;
    loop {
        loop {
            let n = file.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            // A closed stdout (`| head`) ends the command quietly.
            if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_PERIOD);
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let replaced = File::open(path)
            .and_then(|f| f.metadata())
            .ok()
            .zip(file.metadata().ok())
            .is_some_and(|(now, ours)| {
                use std::os::unix::fs::MetadataExt as _;
                now.ino() != ours.ino()
            });
        if replaced {
            file = File::open(path).map_err(err)?;
            pos = 0;
        } else if len < pos {
            file.seek(SeekFrom::Start(0)).map_err(err)?;
            pos = 0;
        }
    }
}

fn run(cluster: &ClusterArgs, a: &ConsoleArgs) -> Result<(), ConsoleError> {
    let (vm, plan) = decide(cluster, a)?;
    match plan {
        ConsolePlan::Attach { domain } => {
            eprintln!(
                "Attaching to the serial console of {} (domain {domain}); detach with Ctrl+]",
                vm.key()
            );
            // exec: virsh gets this terminal and our process id; only a failure returns.
            let e = Command::new("virsh")
                .args(console::virsh_args(&a.libvirt_uri, &domain))
                .exec();
            Err(ConsoleError::Virsh(e))
        }
        ConsolePlan::Log { path, note } => {
            if let Some(n) = note {
                eprintln!("{n}");
            }
            print_log(&path, a.follow)
        }
        ConsolePlan::Remote => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ConsoleError::Vm(VmError::Runtime(e)))?;
            let ns = vm.metadata.namespace.clone().unwrap_or_default();
            let name = vm.metadata.name.clone().unwrap_or_default();
            rt.block_on(super::remote_cmd::serial(cluster, &ns, &name))?;
            Ok(())
        }
        ConsolePlan::Unavailable(m) => Err(ConsoleError::Unavailable(m)),
    }
}

/// `ivctl console`.
pub fn console(cluster: &ClusterArgs, a: &ConsoleArgs) -> std::process::ExitCode {
    match run(cluster, a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", super::cmd::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
