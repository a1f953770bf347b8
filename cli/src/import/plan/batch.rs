//! `ivctl import wave PLAN.json --wave N`: import every VM of one wave from its export, with
//! at most `--parallel` imports at a time and one progress bar for the whole wave.
//!
//! Each VM is one ordinary import (`run::run`, its own staging directory and final rename),
//! so a failure leaves nothing half-done for that VM and does not stop the others. A VM of
//! the wave without an export is reported as not imported.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::import::convert::Converter;
use crate::import::manifest::MappingOptions;
use crate::import::ova::Limits;
use crate::import::report::Status;
use crate::import::run::{self, QuotaInfo, Request};

use super::model::{Plan, PlannedVm};

/// What happened to one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// vSphere name.
    pub vm: String,
    /// imported, dryRun, blocked, failed, noExport.
    pub status: String,
    /// The manifest written, or the error.
    pub detail: String,
}

/// How to run a wave.
#[derive(Clone, Debug)]
pub struct WaveRun {
    /// Wave number.
    pub wave: u32,
    /// Imports at a time.
    pub parallel: usize,
    /// Output directory (one subdirectory per VM).
    pub out: PathBuf,
    /// Check only.
    pub dry_run: bool,
    /// Draw the progress bar.
    pub progress: bool,
    /// Mapping options (name, namespace set per VM).
    pub mapping: MappingOptions,
    /// OVA limits.
    pub limits: Limits,
    /// Skip `qemu-img compare`.
    pub no_verify: bool,
}

/// Why a wave cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WaveError {
    /// No such wave.
    #[error("the plan has no wave {0} (it has {1}); pick one of them")]
    NoWave(u32, usize),
    /// A plan of another version.
    #[error("plan version {0} is not {1}; make the plan again with this ivctl")]
    Version(u32, u32),
}

/// The VMs of a wave, in the plan's order.
pub fn members(plan: &Plan, wave: u32) -> Result<Vec<&PlannedVm>, WaveError> {
    if plan.version != super::model::PLAN_VERSION {
        return Err(WaveError::Version(plan.version, super::model::PLAN_VERSION));
    }
    let w = plan
        .waves
        .iter()
        .find(|w| w.number == wave)
        .ok_or(WaveError::NoWave(wave, plan.waves.len()))?;
    Ok(w.vms
        .iter()
        .filter_map(|n| plan.vms.iter().find(|v| &v.name == n))
        .collect())
}

fn import_one(vm: &PlannedVm, run: &WaveRun) -> Outcome {
    let outcome = |status: &str, detail: String| Outcome {
        vm: vm.name.clone(),
        status: status.into(),
        detail,
    };
    let Some(export) = &vm.export else {
        return outcome(
            "noExport",
            "no export was found when the plan was made".into(),
        );
    };
    let req = Request {
        source: export.into(),
        name: Some(vm.k8s_name.clone()),
        mapping: MappingOptions {
            name: vm.k8s_name.clone(),
            namespace: vm.namespace.clone().unwrap_or_else(|| "default".into()),
            ..run.mapping.clone()
        },
        out: run.out.clone(),
        force: false,
        dry_run: run.dry_run,
        quota: QuotaInfo::Unknown("checked by the plan".into()),
        converter: Converter {
            parallel: 1,
            progress: false,
            verify: !run.no_verify,
            ..Converter::default()
        },
        limits: run.limits,
        // The OVF's default deployment option and property values, as the plan read it.
        ovf: Default::default(),
        vapp_cloud_init: false,
        server_check: None,
    };
    match run::run(&req) {
        Ok(r) => match r.status {
            Status::Blocked => outcome(
                "blocked",
                "the advisor found a blocker; see ivctl import vmware".into(),
            ),
            Status::DryRun => outcome("dryRun", "checked; nothing written".into()),
            _ => outcome("imported", r.manifest_file.unwrap_or_default()),
        },
        Err(e) => outcome("failed", e.to_string()),
    }
}

/// Run the wave; outcomes in the wave's order.
pub fn run_wave(plan: &Plan, run: &WaveRun) -> Result<Vec<Outcome>, WaveError> {
    let vms = members(plan, run.wave)?;
    let bar = ProgressBar::with_draw_target(
        Some(vms.len() as u64),
        if run.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("wave {prefix} [{bar:40}] {pos}/{len} VMs {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(run.wave.to_string());
    let next = AtomicUsize::new(0);
    let running: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; vms.len()]);
    let workers = run.parallel.clamp(1, vms.len().max(1));
    let show = |running: &Vec<String>| bar.set_message(running.join(", "));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(vm) = vms.get(i) else { break };
                    if let Ok(mut r) = running.lock() {
                        r.push(vm.name.clone());
                        show(&r);
                    }
                    let o = import_one(vm, run);
                    if let Ok(mut r) = running.lock() {
                        r.retain(|n| n != &vm.name);
                        show(&r);
                    }
                    if o.status == "failed" {
                        bar.println(format!("{}: {}", o.vm, o.detail));
                    }
                    if let Ok(mut res) = results.lock() {
                        res[i] = Some(o);
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    Ok(results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect())
}
