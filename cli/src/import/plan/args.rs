//! Command-line options of `ivctl import plan` and `ivctl import wave`.

use std::path::PathBuf;

use crate::import::manifest::{NetworkTarget, ScsiBus, parse_network_map};

use super::waves::Order;

fn network_map(s: &str) -> Result<(String, NetworkTarget), String> {
    parse_network_map(s)
}

/// `4h`, `90m`, `2h30m`, `3600s`, or plain seconds.
pub fn parse_window(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: give a duration such as 4h, 90m or 2h30m");
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        total = num
            .parse::<u64>()
            .ok()
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(bad());
    }
    Ok(total)
}

fn mib_per_s(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .trim_end_matches("MiB/s")
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: give MiB per second, e.g. 200"))?;
    if v == 0 {
        return Err("the throughput must be above zero".into());
    }
    v.checked_mul(1 << 20)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `ivctl import plan`: plan the migration of an estate.
#[derive(Clone, Debug, clap::Args)]
pub struct PlanArgs {
    /// RVTools export: .xlsx, a directory of CSV files (vInfo.csv ...), or one vInfo CSV.
    #[arg(long, value_name = "PATH")]
    pub inventory: Option<PathBuf>,
    /// Directory of exports (.ovf, .ova, .vmx), analysed with the importer in dry-run mode.
    #[arg(long, value_name = "DIR")]
    pub exports: Option<PathBuf>,
    /// Tenant rules: vSphere folder/pool/cluster/annotation/attribute patterns → tenants.
    #[arg(long, value_name = "FILE")]
    pub tenant_rules: Option<PathBuf>,
    /// Application groups and their dependencies.
    #[arg(long, value_name = "FILE")]
    pub groups: Option<PathBuf>,
    /// YAML with Tenant objects (instead of the cluster's). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub tenants: Vec<PathBuf>,
    /// YAML with Quota objects (instead of the cluster's). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub quotas: Vec<PathBuf>,
    /// YAML with Hypervisor objects (instead of the cluster's). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub hypervisors: Vec<PathBuf>,
    /// Do not ask the cluster (use only the files given).
    #[arg(long)]
    pub offline: bool,
    /// Maintenance window per wave (4h, 90m, 2h30m).
    #[arg(long, default_value = "4h", value_parser = parse_window)]
    pub window: u64,
    /// Most VMs in one wave.
    #[arg(long, value_name = "N")]
    pub max_vms_per_wave: Option<usize>,
    /// Order: size (smallest first), folder, or attribute:NAME (a custom attribute/tag).
    #[arg(long, default_value = "size")]
    pub order: Order,
    /// Conversion rate in MiB/s instead of measuring it on this host.
    #[arg(long, value_name = "MIB_PER_S", value_parser = mib_per_s)]
    pub throughput: Option<u64>,
    /// Size of the scratch file the measurement converts, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub sample_mib: u64,
    /// Right-size memory from the inventory's usage (vMemory Active × 1.5).
    #[arg(long)]
    pub right_size: bool,
    /// Advisor rules file instead of the built-in knowledge base.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Planner rules file instead of the built-in one.
    #[arg(long, value_name = "FILE")]
    pub plan_rules: Option<PathBuf>,
    /// Print the built-in advisor and planner rules (to start a file of your own) and exit.
    #[arg(long)]
    pub print_rules: bool,
    /// Map a VMware port group: VMNET=NAME, VMNET=bridge:BR, VMNET=user. Repeatable.
    #[arg(long = "network-map", value_name = "VMNET=TARGET", value_parser = network_map)]
    pub network_map: Vec<(String, NetworkTarget)>,
    /// Bus for disks on VMware SCSI controllers.
    #[arg(long, value_enum, default_value_t = ScsiBus::Scsi)]
    pub scsi_bus: ScsiBus,
    /// The hosts' images root; manifests point there.
    #[arg(long, default_value = "/var/lib/ironvisor/images")]
    pub images_dir: PathBuf,
    /// Leave source vTPMs out (listed as dropped). Without it they become `spec.tpm`, unless
    /// the target hosts are known and none reports a TPM emulator.
    #[arg(long)]
    pub no_tpm: bool,
    /// Directory for plan.json, plan.md, plan.html and wave-NN/.
    #[arg(long, default_value = "plan")]
    pub out: PathBuf,
}

/// `ivctl import wave PLAN.json --wave N`: import one wave of a plan.
#[derive(Clone, Debug, clap::Args)]
pub struct WaveArgs {
    /// The plan.json `ivctl import plan` wrote.
    pub plan: PathBuf,
    /// The wave to import.
    #[arg(long)]
    pub wave: u32,
    /// VMs imported at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Directory that receives one NAME/ per VM.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Check every VM of the wave; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip `qemu-img compare` after conversion.
    #[arg(long)]
    pub no_verify: bool,
    /// Leave source vTPMs out (listed as dropped) instead of carrying them as `spec.tpm`.
    #[arg(long)]
    pub no_tpm: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_people_write_them() {
        assert_eq!(parse_window("4h"), Ok(14400));
        assert_eq!(parse_window("2h30m"), Ok(9000));
        assert_eq!(parse_window("90"), Ok(90));
        assert!(parse_window("0h").is_err());
        assert!(parse_window("-1h").is_err());
        assert!(parse_window("4 days").is_err());
        assert!(parse_window("99999999999999999999h").is_err());
        assert!(parse_window(&format!("{}h", u64::MAX / 100)).is_err());
    }
}
