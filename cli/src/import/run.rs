//! One import from start to end: load, advise, report, then (unless blocked or a dry run)
//! convert into a staging directory under `--out` and move it into place with one rename.
//!
//! Nothing half-done survives a failure: the OVA's files, the images and the manifest are
//! all written inside a `tempfile` staging directory that is removed on every error path
//! (its `Drop`), and the finished VM directory appears only through the final `rename`.

use std::path::{Path, PathBuf};

use super::advisor::{self, ExtraFacts, Severity};
use super::convert::{ConvertError, Converter, Job};
use super::load::{self, LoadError, Loaded};
use super::manifest::{self, Built, ManifestError, MappingOptions, PlannedDisk};
use super::ova::Limits;
use super::ovf::ParseOptions;
use super::qemu_view::{self, ViewError};
use super::report::{DiskReport, QuotaReport, Report, Status, Steps, VmSummary};
use super::sandbox::Sandbox;
use super::validate::{self, ServerCheck, ServerVerdict};
use super::vapp;

/// What the storage quota lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaInfo {
    /// This many bytes are left (from the option, or the cluster).
    Remaining {
        /// Bytes left.
        bytes: u64,
        /// `option` or `cluster`.
        source: &'static str,
    },
    /// No quota limits the tenant's storage.
    Unlimited,
    /// Not known, and why.
    Unknown(String),
}

/// Everything one import needs.
#[derive(Clone, Debug)]
pub struct Request {
    /// The .ovf, .ova or .vmx.
    pub source: PathBuf,
    /// `--name`, when given (else derived from the VMware name).
    pub name: Option<String>,
    /// Mapping choices (its `name` is replaced by the resolved name).
    pub mapping: MappingOptions,
    /// Where the VM's directory is created.
    pub out: PathBuf,
    /// Import despite blockers.
    pub force: bool,
    /// Report only.
    pub dry_run: bool,
    /// The storage quota figure.
    pub quota: QuotaInfo,
    /// How disks are converted (its sandbox is set per import).
    pub converter: Converter,
    /// Caps on what an OVA may make ivctl write.
    pub limits: Limits,
    /// The OVF deployer's choices (deployment option, property values).
    pub ovf: ParseOptions,
    /// Carry the OVF's vApp properties as cloud-init data.
    pub vapp_cloud_init: bool,
    /// The cluster's check of the manifest before anything is written (`--dry-run-server`).
    pub server_check: Option<ServerCheck>,
}

/// Why an import failed (nothing was left behind).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Loading or checking the source failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Converting or verifying a disk failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// QEMU would open a file outside the bundle.
    #[error(transparent)]
    View(#[from] ViewError),
    /// Writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest would fail the API's validation (schema or CEL rules).
    #[error(
        "the manifest would be rejected by the API, so nothing was written: {}; change the \
         source or the options (a blocker passed with --force may be the cause)",
        .0.join("; ")
    )]
    Invalid(Vec<String>),
    /// The cluster's API server refused the manifest in a server-side dry run.
    #[error(
        "the API server refuses the manifest (server-side dry run), so nothing was written: {0}"
    )]
    ServerRejected(String),
    /// `--dry-run-server` could not reach the cluster.
    #[error(
        "cannot ask the API server to check the manifest (--dry-run-server), so nothing was \
         written: {0}; fix the kubeconfig or leave --dry-run-server out to import offline"
    )]
    ServerUnreachable(String),
    /// The VM's output directory exists already.
    #[error("{0}: already exists; remove it or choose another --name or --out")]
    Exists(PathBuf),
    /// A file-system operation on the output failed.
    #[error("{file}: {action}")]
    Io {
        /// The path.
        file: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(file: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> ImportError {
    let file = file.to_owned();
    move |source| ImportError::Io {
        file,
        action,
        source,
    }
}

/// Run one import and return its report (also for dry runs and blocked imports).
///
/// A dry run writes nothing at all: no `--out`, no staging directory, no OVA entry.
pub fn run(req: &Request) -> Result<Report, ImportError> {
    let staging = if req.dry_run {
        None
    } else {
        std::fs::create_dir_all(&req.out)
            .map_err(io_err(&req.out, "cannot create the output directory"))?;
        let staging = tempfile::Builder::new()
            .prefix(".ivctl-import-")
            .tempdir_in(&req.out)
            .map_err(io_err(&req.out, "cannot create a staging directory"))?;
        let scratch = staging.path().join("source");
        std::fs::create_dir(&scratch).map_err(io_err(&scratch, "cannot create a directory"))?;
        Some(staging)
    };
    let scratch = staging.as_ref().map(|s| s.path().join("source"));
    let loaded = load::load(&req.source, scratch.as_deref(), req.limits, &req.ovf)?;
    let sandbox = Sandbox::for_import(
        staging.as_ref().map(tempfile::TempDir::path),
        &disk_files(&loaded),
    );
    check_with_qemu(req, &loaded, &sandbox)?;

    let name = req
        .name
        .clone()
        .unwrap_or_else(|| manifest::sanitize_name(&loaded.vm.name));
    let mapping = MappingOptions {
        name: name.clone(),
        ..req.mapping.clone()
    };
    let final_dir = req.out.join(&name);
    if final_dir.exists() {
        return Err(ImportError::Exists(final_dir));
    }

    let (planned, sources, disk_reports, extra) = plan_disks(&loaded, &mapping);
    let mut built = manifest::build(&loaded.vm, &planned, &mapping);
    let vapp_left_out = vapp::apply(&mut built, &loaded.properties, req.vapp_cloud_init);
    let extra = ExtraFacts {
        vapp_properties_dropped: vapp_left_out,
        quota_remaining_bytes: match &req.quota {
            QuotaInfo::Remaining { bytes, .. } => Some(*bytes),
            QuotaInfo::Unlimited => Some(u64::MAX),
            QuotaInfo::Unknown(_) => None,
        },
        unmapped_networks: built.unmapped_networks.clone(),
        nic_models_changed: loaded
            .vm
            .nics
            .iter()
            .zip(&built.vm.spec.networks)
            .filter(|(src, _)| src.model != "virtio")
            .map(|(src, dst)| {
                format!("{}: {} → {:?}", dst.name, src.model, dst.model).to_lowercase()
            })
            .collect(),
        unverified_files: loaded.unverified_files.clone(),
        tpm_dropped: mapping.no_tpm.clone(),
        ..extra
    };
    let findings = advisor::evaluate(
        &advisor::builtin_rules(),
        &advisor::facts(&loaded.vm, &extra),
    );
    let blocked = findings.iter().any(|f| f.severity == Severity::Blocker);
    let mut report = Report {
        source: req.source.display().to_string(),
        format: loaded.format.name().into(),
        vm: summary(&loaded, &built, &mapping),
        disks: disk_reports,
        mappings: built.notes.clone(),
        quota: quota_report(&req.quota),
        steps: steps(
            &loaded,
            &built,
            &findings,
            &mapping,
            &req.out,
            req.converter.verify,
        ),
        findings,
        blocked,
        forced: req.force,
        status: Status::DryRun,
        output_dir: None,
        manifest_file: None,
        manifest: serde_json::to_value(&built.vm).unwrap_or_default(),
        timings: Vec::new(),
        notes: sandbox.note.iter().cloned().collect(),
        deployment: loaded.deployment.clone(),
        vapp_properties: vapp::listed(&loaded.properties),
    };
    if loaded.shallow {
        report.notes.push(
            "dry run: the OVA was read without unpacking (or compressed disks were decompressed \
             to nowhere); its disks were inspected from their first bytes only"
                .into(),
        );
    }
    if blocked && !req.force {
        report.status = Status::Blocked;
        return Ok(report);
    }
    // Whatever was forced, a manifest the API would reject is never written.
    let invalid = validate::violations(&built.vm);
    if !invalid.is_empty() {
        return Err(ImportError::Invalid(invalid));
    }
    if let Some(check) = &req.server_check {
        (check.0)(&built.vm).map_err(|v| match v {
            ServerVerdict::Refused(m) => ImportError::ServerRejected(m),
            ServerVerdict::Unreachable(m) => ImportError::ServerUnreachable(m),
        })?;
        report
            .notes
            .push("the API server accepted the manifest in a server-side dry run".into());
    }
    let Some(staging) = staging.filter(|_| !req.dry_run) else {
        return Ok(report);
    };

    let vm_stage = staging.path().join(&name);
    std::fs::create_dir(&vm_stage).map_err(io_err(&vm_stage, "cannot create a directory"))?;
    let jobs: Vec<Job> = planned
        .iter()
        .zip(&sources)
        .zip(&built.image_files)
        .filter_map(|((p, source), file)| {
            let ((source, standalone), file) = (source.as_ref()?, file.as_ref()?);
            Some(Job {
                label: p.source.slot(),
                source: source.clone(),
                dest: vm_stage.join(file),
                expected_bytes: Some(p.capacity_bytes),
                standalone: *standalone,
            })
        })
        .collect();
    let converter = Converter {
        sandbox: sandbox.clone(),
        ..req.converter.clone()
    };
    sandbox.lend().map_err(io_err(
        staging.path(),
        "cannot hand the staging directory to qemu-img's user",
    ))?;
    let converted = converter.run(&jobs);
    sandbox.reclaim().map_err(io_err(
        staging.path(),
        "cannot take the staging directory back",
    ))?;
    report.timings = converted?;
    let manifest_path = vm_stage.join(format!("{name}.yaml"));
    let mut f =
        std::fs::File::create_new(&manifest_path).map_err(|source| ManifestError::Write {
            file: manifest_path.clone(),
            source,
        })?;
    manifest::write_to(&mut f, &manifest_path, &built.vm)?;
    f.sync_all().map_err(|source| ManifestError::Write {
        file: manifest_path.clone(),
        source,
    })?;
    drop(f);
    std::fs::rename(&vm_stage, &final_dir).map_err(io_err(
        &final_dir,
        "cannot move the finished import into place",
    ))?;
    drop(staging);
    report.status = Status::Imported;
    report.output_dir = Some(final_dir.display().to_string());
    report.manifest_file = Some(final_dir.join(format!("{name}.yaml")).display().to_string());
    Ok(report)
}

/// Every file of the disks that are converted.
fn disk_files(loaded: &Loaded) -> Vec<PathBuf> {
    converted(loaded)
        .flat_map(|info| info.files.iter().cloned())
        .collect()
}

/// The inspected disks that are converted (not raw device mappings).
fn converted(loaded: &Loaded) -> impl Iterator<Item = &super::vmdk_check::DiskInfo> {
    loaded
        .disks
        .iter()
        .filter_map(|d| d.info.as_ref())
        .filter(|i| !i.descriptor.is_rdm())
}

/// Ask QEMU what it would open for each converted disk, when the disks are on disk (not
/// for an OVA read in a dry run).
fn check_with_qemu(req: &Request, loaded: &Loaded, sandbox: &Sandbox) -> Result<(), ImportError> {
    if loaded.shallow {
        return Ok(());
    }
    if let Some(w) = &sandbox.workdir {
        sandbox.lend().map_err(io_err(
            w,
            "cannot hand the staging directory to qemu-img's user",
        ))?;
    }
    let checked = converted(loaded).try_for_each(|info| {
        qemu_view::check(&req.converter.qemu_img, sandbox, &loaded.root, &info.path)
    });
    if let Some(w) = &sandbox.workdir {
        sandbox
            .reclaim()
            .map_err(io_err(w, "cannot take the staging directory back"))?;
    }
    Ok(checked?)
}

/// A converted disk's VMDK and whether it stands alone (no parent).
type Source = (PathBuf, bool);

/// Which disks are in the manifest (RDMs are not) with the VMDK each is converted from
/// (`None` for a new empty disk, which is blank), their report lines and disk facts.
fn plan_disks(
    loaded: &Loaded,
    mapping: &MappingOptions,
) -> (
    Vec<PlannedDisk>,
    Vec<Option<Source>>,
    Vec<DiskReport>,
    ExtraFacts,
) {
    let mut planned = Vec::new();
    let mut sources = Vec::new();
    let mut reports = Vec::new();
    let mut extra = ExtraFacts::default();
    for (src, disk) in loaded.vm.disks.iter().zip(&loaded.disks) {
        let slot = src.slot();
        let blank = src.file.is_none();
        let (subformat, capacity, skipped) = match &disk.info {
            None if blank => (
                "new empty disk".to_owned(),
                src.capacity_bytes.unwrap_or(0),
                None,
            ),
            None => (
                "rdm".to_owned(),
                src.capacity_bytes.unwrap_or(0),
                Some("raw device mapping".to_owned()),
            ),
            Some(info) if info.descriptor.is_rdm() => {
                extra.rdm_disks.push(slot.clone());
                (
                    info.descriptor.create_type.clone(),
                    info.capacity_bytes,
                    Some("raw device mapping".to_owned()),
                )
            }
            Some(info) => {
                if info.snapshot_levels > 0 {
                    extra
                        .snapshot_disks
                        .push(format!("{slot} ({} delta level(s))", info.snapshot_levels));
                }
                extra.tools_in_disk |= info.descriptor.has_tools_version()
                    && info
                        .descriptor
                        .ddb
                        .get("toolsversion")
                        .is_some_and(|v| v != "2147483647");
                (
                    info.descriptor.create_type.clone(),
                    info.capacity_bytes,
                    None,
                )
            }
        };
        let image = (skipped.is_none() && !blank)
            .then(|| format!("{}-{}.qcow2", mapping.name, slot.replace(':', "-")));
        if skipped.is_none() {
            extra.disk_bytes = extra.disk_bytes.saturating_add(capacity);
            planned.push(PlannedDisk {
                source: src.clone(),
                capacity_bytes: capacity,
                blank,
            });
            sources.push(
                disk.info
                    .as_ref()
                    .map(|i| (i.path.clone(), i.snapshot_levels == 0)),
            );
        }
        reports.push(DiskReport {
            slot,
            file: src.file.clone().unwrap_or_default(),
            subformat,
            capacity_bytes: capacity,
            image,
            blank,
            skipped,
        });
    }
    (planned, sources, reports, extra)
}

fn summary(loaded: &Loaded, built: &Built, mapping: &MappingOptions) -> VmSummary {
    let spec = &built.vm.spec;
    let vm = &loaded.vm;
    VmSummary {
        name: mapping.name.clone(),
        namespace: mapping.namespace.clone(),
        vmware_name: vm.name.clone(),
        guest_os: vm.guest_os.clone(),
        hardware_version: vm.hardware_version.clone(),
        vcpus: vm.vcpus,
        topology: format!(
            "{} socket(s) × {} core(s)",
            spec.cpu.sockets, spec.cpu.cores
        ),
        memory_mib: vm.memory_mib,
        firmware: match (spec.firmware, spec.secure_boot) {
            (Some(ironvisor_crds::vm::Firmware::Uefi), Some(true)) => {
                "uefi with secure boot".into()
            }
            (Some(ironvisor_crds::vm::Firmware::Uefi), _) => "uefi".into(),
            _ => "bios".into(),
        },
    }
}

fn quota_report(q: &QuotaInfo) -> QuotaReport {
    match q {
        QuotaInfo::Remaining { bytes, source } => QuotaReport {
            source: (*source).into(),
            remaining_bytes: Some(*bytes),
            note: None,
        },
        QuotaInfo::Unlimited => QuotaReport {
            source: "cluster".into(),
            remaining_bytes: None,
            note: Some("no storage limit".into()),
        },
        QuotaInfo::Unknown(why) => QuotaReport {
            source: "unknown".into(),
            remaining_bytes: None,
            note: Some(why.clone()),
        },
    }
}

fn steps(
    loaded: &Loaded,
    built: &Built,
    findings: &[advisor::Finding],
    mapping: &MappingOptions,
    out: &Path,
    verify: bool,
) -> Steps {
    let mut s = Steps::default();
    s.automated.push(format!(
        "read the {} descriptor",
        loaded.format.name().to_uppercase()
    ));
    if loaded.verified_files > 0 {
        s.automated.push(format!(
            "verify {} checksum(s) from the manifest",
            loaded.verified_files
        ));
    }
    s.automated.push(format!(
        "check {} VMDK(s) for truncation and corruption",
        loaded.disks.len()
    ));
    s.automated
        .push("map CPU topology, memory and firmware".into());
    for (d, file) in built.vm.spec.disks.iter().zip(&built.image_files) {
        let Some(file) = file else {
            s.automated
                .push(format!("declare new empty disk {} as a blank disk", d.name));
            continue;
        };
        s.automated
            .push(format!("convert disk {} to qcow2 ({file})", d.name));
        if verify {
            s.automated
                .push(format!("verify disk {} against its source", d.name));
        }
    }
    for n in &built.vm.spec.networks {
        s.automated.push(format!("map network adapter {}", n.name));
    }
    s.automated.push("write the VirtualMachine manifest".into());
    for f in findings.iter().filter(|f| f.manual_step) {
        s.manual.push(format!("{} ({})", f.title, f.id));
    }
    let same = |a: &Path, b: &Path| {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    };
    let images_here = same(out, &mapping.images_dir);
    if !images_here && built.image_files.iter().any(Option::is_some) {
        s.manual.push(format!(
            "copy the images to {} on the hosts",
            mapping.images_dir.join(&mapping.name).display()
        ));
    }
    s.manual
        .push("apply the manifest (kubectl apply -f)".into());
    s.finish()
}
