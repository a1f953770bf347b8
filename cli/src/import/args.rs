//! Command-line options of `ivctl import vmware`.

use std::path::PathBuf;

use ironvisor_crds::vm::RunStrategy;

use super::manifest::ScsiBus;
use super::netmap::{self, NetworkMapArg};

/// Report format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// For people.
    #[default]
    Text,
    /// For pipelines: one JSON document on stdout.
    Json,
}

/// Run strategy of the imported VM (the CRD's values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum RunStrategyArg {
    /// Keep running.
    Always,
    /// Restart after a crash only.
    RerunOnFailure,
    /// Start and stop on request.
    Manual,
    /// Stay stopped until changed.
    #[default]
    Halted,
    /// Run once.
    Once,
}

impl From<RunStrategyArg> for RunStrategy {
    fn from(a: RunStrategyArg) -> Self {
        match a {
            RunStrategyArg::Always => RunStrategy::Always,
            RunStrategyArg::RerunOnFailure => RunStrategy::RerunOnFailure,
            RunStrategyArg::Manual => RunStrategy::Manual,
            RunStrategyArg::Halted => RunStrategy::Halted,
            RunStrategyArg::Once => RunStrategy::Once,
        }
    }
}

fn network_map(s: &str) -> Result<NetworkMapArg, String> {
    netmap::parse_arg(s)
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn quantity(s: &str) -> Result<u64, String> {
    let b = ironvisor_crds::quantity::to_bytes(s).map_err(|e| e.to_string())?;
    u64::try_from(b).map_err(|_| format!("{s:?} must not be negative"))
}

/// `ivctl import vmware SOURCE`: convert a VMware VM into a VirtualMachine manifest and
/// qcow2 images.
#[derive(Clone, Debug, clap::Args)]
pub struct VmwareArgs {
    /// An .ovf (disks beside it), an .ova, or a .vmx (VMDKs beside it).
    pub source: PathBuf,
    /// Name of the VirtualMachine (default: the VMware name, made a DNS label).
    #[arg(long)]
    pub name: Option<String>,
    /// Directory that receives NAME/ with the manifest and the qcow2 images.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The hosts' images root as the agents see it; manifests point there (hostPath).
    #[arg(long, default_value = "/var/lib/ironvisor/images")]
    pub images_dir: PathBuf,
    /// Map a VMware network (port group): VMNET=NAME (libvirt network), VMNET=bridge:BR,
    /// VMNET=user; or a mapping FILE (YAML `portgroup: target`, or `portgroup=target` lines).
    /// Repeatable; later entries win.
    #[arg(long = "network-map", value_name = "VMNET=TARGET|FILE", value_parser = network_map)]
    pub network_map: Vec<NetworkMapArg>,
    /// Keep the closest emulated NIC model (e1000e, rtl8139) instead of virtio.
    #[arg(long)]
    pub keep_nic_model: bool,
    /// Keep the VMware MAC addresses.
    #[arg(long, visible_alias = "keep-macs")]
    pub keep_mac: bool,
    /// Leave a source vTPM out (listed as dropped) instead of giving the VM a new TPM 2.0
    /// (`spec.tpm`), e.g. for a cluster without swtpm on its hosts.
    #[arg(long)]
    pub no_tpm: bool,
    /// Bus for disks on VMware SCSI controllers (lsilogic, pvscsi, ...).
    #[arg(long, value_enum, default_value_t = ScsiBus::Scsi)]
    pub scsi_bus: ScsiBus,
    /// runStrategy of the new VM.
    #[arg(long, value_enum, default_value_t = RunStrategyArg::Halted)]
    pub run_strategy: RunStrategyArg,
    /// Remaining storage quota of the tenant (e.g. 100Gi); skips the cluster lookup.
    #[arg(long, value_name = "QUANTITY", value_parser = quantity)]
    pub storage_quota_remaining: Option<u64>,
    /// Do not ask the cluster for the tenant's quota.
    #[arg(long)]
    pub offline: bool,
    /// Import even when the advisor finds a blocker.
    #[arg(long)]
    pub force: bool,
    /// Check and report only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also have the cluster's API server validate the manifest (a server-side apply dry
    /// run: schema, rules and admission, nothing stored) before anything is written; an
    /// unreachable cluster or a refusal fails the import.
    #[arg(long)]
    pub dry_run_server: bool,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// Disks converted at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Skip `qemu-img compare` after conversion.
    #[arg(long)]
    pub no_verify: bool,
    /// The OVF deployment option (DeploymentOptionSection configuration) to import; default:
    /// the OVF's default option.
    #[arg(long, value_name = "NAME")]
    pub deployment_option: Option<String>,
    /// Set an OVF vApp property (ProductSection), as ovftool's --prop: KEY=VALUE. It decides
    /// `${KEY}` references (e.g. disk capacities) and the cloud-init data. Repeatable.
    #[arg(long = "vapp-property", value_name = "KEY=VALUE", value_parser = key_value)]
    pub vapp_property: Vec<(String, String)>,
    /// Carry the OVF's vApp properties into the guest as cloud-init data (the mapping is in
    /// docs/migration.md); without it they are only listed in the report.
    #[arg(long)]
    pub vapp_properties_as_cloud_init: bool,
    /// Largest file unpacked from an OVA (e.g. 500Gi); a file with a declared size or disk
    /// capacity is held to that (plus slack for VMDK metadata) as well.
    #[arg(long, value_name = "QUANTITY", value_parser = quantity, default_value = "1Ti")]
    pub max_ova_entry: u64,
}
