//! `ivctl console`: where the VM's serial console is and how to reach it from here. Pure:
//! the caller passes this host's name, what it found on disk, and whether it has a terminal.
//!
//! The agent (`agent/src/domain_xml/devices.rs`, `agent/src/storage/layout.rs`) gives every
//! domain a pty serial console (port 0) whose output libvirt also appends to
//! `<state-dir>/vms/<uid>/console.log`, and records the domain's UUID in
//! `status.domainUUID`. On the VM's host the console is attached with
//! `virsh -c URI console UUID` (virsh accepts a UUID wherever it takes a domain, so ivctl
//! does not repeat the agent's naming rule); elsewhere, or without a terminal, the log is
//! read instead. Away from the VM's host (or with `--remote`) the live console is reached
//! through the Kubernetes API (the console subresource, see [`super::remote`]).

use ironvisor_crds::labels::NODE;
use ironvisor_crds::vm::{Phase, VirtualMachine};
use std::path::{Path, PathBuf};

/// What this host knows, as the caller found it.
#[derive(Clone, Debug)]
pub struct Here<'a> {
    /// This host's name (the agent's `--node-name`).
    pub node: &'a str,
    /// The agent's state directory on this host.
    pub state_dir: &'a Path,
    /// Whether the VM's log file exists here.
    pub log_exists: bool,
    /// Whether stdin and stdout are terminals.
    pub interactive: bool,
    /// The user asked for the log (`--log` or `--follow`).
    pub want_log: bool,
    /// The user asked for the console through the Kubernetes API (`--remote`).
    pub remote: bool,
}

/// What `ivctl console` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsolePlan {
    /// Attach to the live console: `virsh -c URI console <domain>`.
    Attach {
        /// Domain UUID.
        domain: String,
    },
    /// Print the serial log (read-only); `note` says why it is not the live console.
    Log {
        /// The log file.
        path: PathBuf,
        /// Why the log and not the console (printed on stderr), if the user did not ask.
        note: Option<String>,
    },
    /// The live console through the Kubernetes API (the console server bridges to the
    /// VM's host).
    Remote,
    /// Nothing to show from here: the message says where the console is.
    Unavailable(String),
}

/// The host the VM is placed on: `status.nodeName`, else the operator's label.
pub fn placed_on(vm: &VirtualMachine) -> Option<String> {
    vm.status
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .or_else(|| {
            vm.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NODE))
                .cloned()
        })
        .filter(|n| !n.is_empty())
}

/// The serial log of the VM with `uid` under `state_dir`, or `None` when the uid is not a
/// plain file name (the agent's rule; a hostile uid never points elsewhere).
pub fn log_path(state_dir: &Path, uid: &str) -> Option<PathBuf> {
    let safe = !uid.is_empty()
        && uid.len() <= 128
        && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !uid.starts_with('-');
    safe.then(|| state_dir.join("vms").join(uid).join("console.log"))
}

/// Decide how to show the console of `vm` (`key` is its `namespace/name` for messages).
pub fn plan(vm: &VirtualMachine, here: &Here<'_>) -> ConsolePlan {
    let key = vm.key();
    let status = vm.status.clone().unwrap_or_default();
    let Some(node) = placed_on(vm) else {
        return ConsolePlan::Unavailable(format!(
            "{key} is not placed on a host yet ({}); it has no console",
            status
                .printable_status
                .as_deref()
                .unwrap_or("no status yet")
        ));
    };
    let Some(path) = vm
        .metadata
        .uid
        .as_deref()
        .and_then(|u| log_path(here.state_dir, u))
    else {
        return ConsolePlan::Unavailable(format!("{key} has no usable uid"));
    };
    let log = |note: Option<String>| ConsolePlan::Log {
        path: path.clone(),
        note,
    };
    if here.remote && !here.want_log {
        return ConsolePlan::Remote;
    }
    if node != here.node {
        if here.want_log && here.log_exists {
            return log(None);
        }
        if here.want_log {
            return ConsolePlan::Unavailable(format!(
                "the serial log of {key} is on host {node} (this host is {}) at {}; without \
                 --log, ivctl opens the live console through the Kubernetes API",
                here.node,
                path.display()
            ));
        }
        return ConsolePlan::Remote;
    }
    let running = status.phase == Some(Phase::Running);
    let domain = status.domain_uuid.clone().filter(|u| !u.is_empty());
    let why_not = if here.want_log {
        None
    } else if !running {
        Some(format!(
            "{key} is not running ({}); showing its serial log read-only",
            status.phase.map_or("no status yet", Phase::as_str)
        ))
    } else if domain.is_none() {
        Some(format!(
            "{key} has no domain UUID in its status yet; showing its serial log read-only"
        ))
    } else if !here.interactive {
        Some(
            "not a terminal: showing the serial log read-only (use --follow to keep reading)"
                .into(),
        )
    } else {
        None
    };
    match (here.want_log, why_not, domain) {
        (false, None, Some(domain)) => ConsolePlan::Attach { domain },
        (_, note, _) if here.log_exists => log(note),
        _ => ConsolePlan::Unavailable(format!(
            "{key} has no serial log at {} yet (libvirt writes it once the guest has started)",
            path.display()
        )),
    }
}

/// The command that attaches the console: `virsh -c URI console DOMAIN`.
pub fn virsh_args(uri: &str, domain: &str) -> Vec<String> {
    vec!["-c".into(), uri.into(), "console".into(), domain.into()]
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
