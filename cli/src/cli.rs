//! The command tree. `ivctl` and `kubectl ironvisor` are the same program.
//!
//! Verbs are subcommands of the root; each cluster-facing verb reads the global
//! [`ClusterArgs`] (`-n`, `--kubeconfig`, `--context`): the VM verbs (`start`, `stop`,
//! `restart`, `status`, `console`, see [`crate::vm`]) and `import`. `host check`
//! (see [`crate::host`]) reads the local host only and needs no cluster.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cluster::ClusterArgs;
use crate::host::args::HostCommand;
use crate::import::args::VmwareArgs;
use crate::import::plan::args::{PlanArgs, WaveArgs};
use crate::vm::args::{ConsoleArgs, PowerArgs, StatusArgs, VncArgs};
use crate::vm::cmd::{block_on, power, status};
use crate::vm::power::Verb;

/// Ironvisor's command line: manage VMs and import them from other platforms.
#[derive(Debug, Parser)]
#[command(
    name = "ivctl",
    version = ironvisor_crds::BUILD_VERSION,
    about,
    propagate_version = true
)]
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
    /// Start a VM: Halted becomes Always; a Manual VM gets requestedState=Running.
    Start(PowerArgs),
    /// Stop a VM: its runStrategy becomes Halted; a Manual VM gets requestedState=Stopped.
    Stop(PowerArgs),
    /// Restart a running VM's guest (sets the ironvisor.io/restartedAt annotation).
    Restart(PowerArgs),
    /// Show a VM's phase, host, resources, interfaces, conditions and recent Events.
    Status(StatusArgs),
    /// Attach to a VM's serial console (on its host directly, from anywhere else through the
    /// Kubernetes API), or print its serial log.
    Console(ConsoleArgs),
    /// Open a VM's graphical display: a local port for a VNC client, bridged through the
    /// Kubernetes API (or, with --url, the browser console's address).
    Vnc(VncArgs),
    /// Usage and cost of a tenant (or every tenant) in a UTC month, as a table, JSON, CSV
    /// or an HTML page.
    Usage(crate::usage::args::UsageArgs),
    /// Snapshot a VM's disks (a VirtualMachineSnapshot); --wait follows it until taken.
    Snapshot(crate::snapshot_cmd::SnapshotArgs),
    /// Return a VM's disks to a snapshot (a VirtualMachineRestore); --stop-vm powers a
    /// running VM off for it. With --from-backup, create a new VM from a backup instead.
    Restore(crate::snapshot_cmd::RestoreArgs),
    /// Back a VM up into a BackupLocation (a VirtualMachineBackup); --wait shows the copy's
    /// progress until it is written.
    Backup(crate::backup_cmd::BackupArgs),
    /// Make a new VM from a template VM's disks or a snapshot's: linked (an overlay on the
    /// frozen source, instant) or --full (a copy, with a progress bar under --wait).
    Clone(crate::clone_cmd::CloneArgs),
    /// Move a running VM to another host without stopping it (a VirtualMachineMigration).
    Migrate(crate::migrate::MigrateArgs),
    /// Virtual desktops: claim one of a pool and wait for it (get), list your claims,
    /// release them.
    Desktop {
        /// The verb.
        #[command(subcommand)]
        verb: crate::desktop_cmd::DesktopCommand,
    },
    /// Qualify this host for running Ironvisor (no cluster needed), or put a host in
    /// maintenance and take it out again (drain, undrain).
    Host {
        /// The verb.
        #[command(subcommand)]
        verb: HostCommand,
    },
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
    /// Plan the migration of an estate (RVTools inventory and/or exports) into waves.
    Plan(Box<PlanArgs>),
    /// Import one wave of a plan, several VMs at a time.
    Wave(Box<WaveArgs>),
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
        Command::Import {
            from: ImportFrom::Plan(a),
        } => crate::import::plan::cmd::plan(&cli.cluster, &a),
        Command::Import {
            from: ImportFrom::Wave(a),
        } => crate::import::plan::cmd::wave(&a),
        Command::Start(a) => block_on(power(&cli.cluster, Verb::Start, &a)),
        Command::Stop(a) => block_on(power(&cli.cluster, Verb::Stop, &a)),
        Command::Restart(a) => block_on(power(&cli.cluster, Verb::Restart, &a)),
        Command::Status(a) => block_on(status(&cli.cluster, &a)),
        Command::Migrate(a) => block_on(crate::migrate::run(&cli.cluster, &a)),
        Command::Desktop { verb } => crate::desktop_cmd::run(&cli.cluster, &verb),
        Command::Console(a) => crate::vm::console_cmd::console(&cli.cluster, &a),
        Command::Vnc(a) => crate::vm::remote_cmd::vnc_command(&cli.cluster, &a),
        Command::Usage(a) => crate::usage::cmd::run(&cli.cluster, &a),
        Command::Snapshot(a) => crate::snapshot_cmd::run_snapshot(&cli.cluster, &a),
        Command::Restore(a) => crate::snapshot_cmd::run_restore(&cli.cluster, &a),
        Command::Backup(a) => crate::snapshot_cmd::run_backup(&cli.cluster, &a),
        Command::Clone(a) => crate::clone_cmd::run(&cli.cluster, &a),
        Command::Host {
            verb: HostCommand::Check(a),
        } => crate::host::cmd::check(&a),
        Command::Host {
            verb: HostCommand::Drain(a),
        } => crate::drain::drain(&cli.cluster, &a),
        Command::Host {
            verb: HostCommand::Undrain(a),
        } => crate::drain::undrain(&cli.cluster, &a),
    }
}
