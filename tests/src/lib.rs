//! Helpers shared by Ironvisor's integration and end-to-end tests: where things are, and how
//! to run the real tools (kubectl, validators) with errors that say what to install.
#![forbid(unsafe_code)]

pub mod attack;
pub mod backup_hosts;
pub mod busy_guest;
pub mod console;
pub mod console_port;
pub mod guest_disk;
pub mod identities;
pub mod image;
pub mod migration;
pub mod private_host;
pub mod system;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where `hack/install-deps.sh` puts kubernetes-validate.
pub const KUBERNETES_VALIDATE: &str = "/opt/ironvisor-venv/bin/kubernetes-validate";

/// Run a command and return its output; panics with the command line and how to get the tool
/// when it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (run hack/install-deps.sh to install the test tools)")
    })
}

/// Parse every document of a multi-document YAML stream into JSON values.
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(text)
        .unwrap_or_else(|e| panic!("invalid YAML: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}
