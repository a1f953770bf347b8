//! The command tree. `ivctl` and `kubectl ironvisor` are the same program.
//!
//! Verbs are subcommands of the root; each cluster-facing verb reads the global
//! [`ClusterArgs`] (`-n`, `--kubeconfig`, `--context`), so VM verbs (`start`, `stop`,
//! `restart`, `status`, `console`) slot in as siblings of `import`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cluster::ClusterArgs;
use crate::import::args::VmwareArgs;

/// Ironvisor's command line: manage VMs and import them from other platforms.
#[derive(Debug, Parser)]
#[command(name = "ivctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Cluster options shared by every verb.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import a virtual machine from another platform.
    Import {
        /// The platform.
        #[command(subcommand)]
        from: ImportFrom,
    },
}

/// Platforms `import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// A VMware VM: .ovf, .ova or .vmx with VMDK disks.
    Vmware(VmwareArgs),
}

/// Exit status when the advisor stopped the import on a blocker.
pub const EXIT_BLOCKED: u8 = 3;

/// Parse the arguments and run the verb.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Import {
            from: ImportFrom::Vmware(a),
        } => crate::import_cmd::run(&cli.cluster, &a),
    }
}
