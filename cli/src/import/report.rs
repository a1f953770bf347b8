//! The import report: what was found, what will be (or was) done, and what is left to a
//! person, as text for people or JSON for pipelines.
//!
//! The "steps automated" share counts the migration steps the tool performs (parsing,
//! checksums, integrity checks, mapping, each disk's conversion and verification, each NIC,
//! the manifest) against those it leaves to a person (each advisor finding marked as a
//! manual step, copying images to the hosts, applying the manifest).

use std::fmt::Write as _;

use serde::Serialize;

use super::advisor::{Finding, Severity};
use super::convert::JobTiming;
use super::ovf::{DeploymentChoice, VappProperty};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// `--dry-run`: nothing written.
    DryRun,
    /// Stopped on a blocker (no `--force`): nothing written.
    Blocked,
    /// Disks converted and verified, manifest written.
    Imported,
}

/// The VM in one glance.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSummary {
    /// Name of the VirtualMachine.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The VMware display name.
    pub vmware_name: String,
    /// VMware guest OS id.
    pub guest_os: Option<String>,
    /// Virtual hardware version.
    pub hardware_version: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// Sockets × cores as mapped.
    pub topology: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// bios or uefi (+ secure boot).
    pub firmware: String,
}

/// One disk of the source.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskReport {
    /// VMware slot, e.g. `scsi0:0`.
    pub slot: String,
    /// VMDK file as named in the descriptor.
    pub file: String,
    /// VMDK subformat (createType).
    pub subformat: String,
    /// Virtual size in bytes.
    pub capacity_bytes: u64,
    /// The qcow2 image it becomes, or why it is left out.
    pub image: Option<String>,
    /// A new empty disk of the OVF: a blank disk of its capacity, made by the agent.
    pub blank: bool,
    /// Why it is not converted.
    pub skipped: Option<String>,
}

/// The steps and the automated share.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Steps {
    /// Steps the tool performs.
    pub automated: Vec<String>,
    /// Steps left to a person.
    pub manual: Vec<String>,
    /// automated / (automated + manual), in percent, rounded down.
    pub automated_percent: u32,
}

impl Steps {
    /// Fill in the percentage.
    pub fn finish(mut self) -> Self {
        let total = self.automated.len() + self.manual.len();
        let percent = (self.automated.len() * 100).checked_div(total).unwrap_or(0);
        self.automated_percent = u32::try_from(percent).unwrap_or(100);
        self
    }
}

/// Where the storage quota figure came from.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaReport {
    /// `option`, `cluster`, or `unknown`.
    pub source: String,
    /// Remaining bytes, when limited and known.
    pub remaining_bytes: Option<u64>,
    /// Why it is unknown, when it is.
    pub note: Option<String>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The SOURCE argument.
    pub source: String,
    /// ovf, ova or vmx.
    pub format: String,
    /// The VM.
    pub vm: VmSummary,
    /// Its disks.
    pub disks: Vec<DiskReport>,
    /// Mapping decisions.
    pub mappings: Vec<String>,
    /// Storage quota used by the advisor.
    pub quota: QuotaReport,
    /// Advisor findings, blockers first.
    pub findings: Vec<Finding>,
    /// Whether a blocker was found.
    pub blocked: bool,
    /// Whether `--force` overrode blockers.
    pub forced: bool,
    /// Steps and the automated share.
    pub steps: Steps,
    /// What happened.
    pub status: Status,
    /// The directory with the manifest and images (after import).
    pub output_dir: Option<String>,
    /// The manifest file (after import).
    pub manifest_file: Option<String>,
    /// The manifest itself (also on a dry run).
    pub manifest: serde_json::Value,
    /// Per-disk conversion timings (after import).
    pub timings: Vec<JobTiming>,
    /// How the import was confined, when it is weaker than usual (e.g. qemu-img kept root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The OVF deployment option imported, when the OVF offers several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentChoice>,
    /// The OVF's vApp properties (secrets without their value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vapp_properties: Vec<VappProperty>,
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Report {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let vm = &self.vm;
        let _ = writeln!(
            s,
            "VMware import of {:?} ({}, {}, guest {})",
            vm.vmware_name,
            self.format,
            vm.hardware_version
                .as_deref()
                .unwrap_or("unknown hardware version"),
            vm.guest_os.as_deref().unwrap_or("unknown"),
        );
        let _ = writeln!(
            s,
            "  → VirtualMachine {}/{}: {} vCPUs ({}), {} MiB, {}",
            vm.namespace, vm.name, vm.vcpus, vm.topology, vm.memory_mib, vm.firmware
        );
        if let Some(d) = &self.deployment {
            let _ = writeln!(
                s,
                "  deployment option {} (default {}; offered: {})",
                d.chosen,
                d.default,
                d.options.join(", ")
            );
        }
        let _ = writeln!(s, "\nDisks:");
        for d in &self.disks {
            let target = match (&d.image, &d.skipped) {
                (_, Some(why)) => format!("skipped: {why}"),
                (Some(img), None) => format!("→ {img}"),
                (None, None) if d.blank => "→ blank disk (the agent creates it)".into(),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                s,
                "  {:<8} {:<28} {:<22} {:>10}  {target}",
                d.slot,
                d.file,
                d.subformat,
                human_bytes(d.capacity_bytes)
            );
        }
        if !self.vapp_properties.is_empty() {
            let _ = writeln!(s, "\nvApp properties:");
            for p in &self.vapp_properties {
                let value = match (&p.value, p.password) {
                    (_, true) => "(secret, not shown)".to_owned(),
                    (Some(v), false) => format!("{v:?}"),
                    (None, false) => "(no value)".to_owned(),
                };
                let _ = writeln!(s, "  {} = {value}", p.key);
            }
        }
        let _ = writeln!(s, "\nMapping:");
        for m in &self.mappings {
            let _ = writeln!(s, "  {m}");
        }
        let q = &self.quota;
        let _ = writeln!(
            s,
            "  storage quota: {}",
            match (q.remaining_bytes, &q.note) {
                (Some(b), _) => format!("{} remaining ({})", human_bytes(b), q.source),
                (None, Some(n)) => format!("{} ({n})", q.source),
                (None, None) => q.source.clone(),
            }
        );
        let count = |sev| self.findings.iter().filter(|f| f.severity == sev).count();
        let _ = writeln!(
            s,
            "\nAdvisor: {} blocker(s), {} warning(s), {} info",
            count(Severity::Blocker),
            count(Severity::Warning),
            count(Severity::Info)
        );
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Blocker => "BLOCKER",
                Severity::Warning => "WARNING",
                Severity::Info => "INFO",
            };
            let detail = if f.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.detail)
            };
            let _ = writeln!(s, "  [{sev}] {}: {}{detail}", f.id, f.title);
            let _ = writeln!(s, "      what to do: {}", f.remedy);
        }
        let st = &self.steps;
        let _ = writeln!(
            s,
            "\nSteps automated: {} of {} ({}%)",
            st.automated.len(),
            st.automated.len() + st.manual.len(),
            st.automated_percent
        );
        for m in &st.manual {
            let _ = writeln!(s, "  left to you: {m}");
        }
        let _ = writeln!(
            s,
            "\nStatus: {}",
            match self.status {
                Status::DryRun => "dry run, nothing written".to_owned(),
                Status::Blocked =>
                    "stopped on a blocker, nothing written (use --force to import anyway)"
                        .to_owned(),
                Status::Imported => format!(
                    "imported into {}{}",
                    self.output_dir.as_deref().unwrap_or("?"),
                    if self.forced && self.blocked {
                        " (blockers overridden with --force)"
                    } else {
                        ""
                    }
                ),
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automated_share_is_rounded_down() {
        let s = Steps {
            automated: vec!["a".into(); 2],
            manual: vec!["m".into()],
            automated_percent: 0,
        }
        .finish();
        assert_eq!(s.automated_percent, 66);
        assert_eq!(Steps::default().finish().automated_percent, 0);
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(6 << 20), "6.0 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
