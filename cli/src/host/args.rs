//! Command-line options of `ivctl host`.

use std::path::PathBuf;

/// `ivctl host` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum HostCommand {
    /// Qualify this host for running Ironvisor (exit 0: qualifies, 1: does not, 2: usage).
    Check(CheckArgs),
    /// Put a host in maintenance: nothing new is placed there and its running VMs are moved
    /// away by live migration (per their drainStrategy); --wait follows it until drained.
    Drain(crate::drain::DrainArgs),
    /// Take a host out of maintenance: it is schedulable again.
    Undrain(crate::drain::UndrainArgs),
}

/// What the host is qualified for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Hosts that run real workloads: KVM usable, IOMMU, cgroup v2, supported versions.
    Production,
    /// Laptops, CI and nested hosts: software emulation (TCG) is accepted with warnings.
    Development,
}

impl Profile {
    /// The name as the flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Development => "development",
        }
    }
}

/// Output of `host check`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckOutput {
    /// A table for people.
    #[default]
    Table,
    /// One JSON document for tools.
    Json,
}

/// Options of `ivctl host check`.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// The profile to qualify for.
    #[arg(long, value_enum, default_value_t = Profile::Production)]
    pub profile: Profile,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = CheckOutput::Table)]
    pub output: CheckOutput,
    /// libvirt URI the agent will use.
    #[arg(long, env = "LIBVIRT_DEFAULT_URI", default_value = "qemu:///system")]
    pub libvirt_uri: String,
    /// The agent's --state-dir.
    #[arg(long, default_value = "/var/lib/ironvisor", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The agent's --images-dir.
    #[arg(long, default_value = "/var/lib/ironvisor/images", value_name = "DIR")]
    pub images_dir: PathBuf,
    /// libvirt's QEMU driver configuration (its `user` and `group` say who QEMU runs as).
    #[arg(long, default_value = "/etc/libvirt/qemu.conf", value_name = "FILE")]
    pub qemu_conf: PathBuf,
    /// Do not define and start the tiny test domain (its check then warns: not run).
    #[arg(long)]
    pub skip_domain_test: bool,
}
