//! Glue for `ivctl import plan` and `ivctl import wave`: read the files, reach the cluster
//! if allowed, measure the throughput, build, write, print.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::cluster::ClusterArgs;
use crate::import::advisor::{self, Rule};
use crate::import::convert::Converter;
use crate::import::manifest::{MappingOptions, ScsiBus};
use crate::import::ova::Limits;

use super::args::{PlanArgs, WaveArgs};
use super::batch::{self, WaveRun};
use super::build::{self, Inputs};
use super::capacity::TargetFacts;
use super::exports;
use super::model::Plan;
use super::readiness;
use super::tenants::TenantRules;
use super::waves::{Groups, WaveLimits};
use super::{inventory, output, table, throughput};

/// How long the cluster may take to answer.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(5);

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn rules(path: Option<&Path>, builtin: fn() -> Vec<Rule>) -> Result<Vec<Rule>, String> {
    match path {
        None => Ok(builtin()),
        Some(p) => advisor::load_rules(&read(p)?).map_err(|e| format!("{}: {e}", p.display())),
    }
}

fn target_facts(
    cluster: &ClusterArgs,
    a: &PlanArgs,
    notes: &mut Vec<String>,
) -> Result<TargetFacts, String> {
    let files: Vec<&Path> = a
        .tenants
        .iter()
        .chain(&a.quotas)
        .chain(&a.hypervisors)
        .map(|p| p.as_path())
        .collect();
    if !files.is_empty() || a.offline {
        let mut facts = TargetFacts {
            source: "files".into(),
            ..TargetFacts::default()
        };
        for f in &files {
            facts
                .add_yaml(&f.display().to_string(), &read(f)?)
                .map_err(|e| e.to_string())?;
        }
        if files.is_empty() {
            facts.source = "none (--offline)".into();
        }
        return Ok(facts);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no async runtime: {e}"))?;
    match rt.block_on(super::cluster::read(cluster, CLUSTER_DEADLINE)) {
        Ok(f) => Ok(f),
        Err(e) => {
            notes.push(format!("cluster not read ({e}); tenants, quotas and hosts unknown: give --tenants/--quotas/--hypervisors files"));
            Ok(TargetFacts {
                source: "none (cluster unreachable)".into(),
                ..TargetFacts::default()
            })
        }
    }
}

fn inputs(cluster: &ClusterArgs, a: &PlanArgs) -> Result<Inputs, String> {
    if a.inventory.is_none() && a.exports.is_none() {
        return Err(
            "give --inventory (an RVTools export) or --exports (a directory of exports), or both"
                .into(),
        );
    }
    let mut described = Vec::new();
    let mut notes = Vec::new();
    let inventory = match &a.inventory {
        Some(p) => {
            let t = table::read(p).map_err(|e| chain(&e))?;
            described.push(format!("inventory {}", p.display()));
            Some(inventory::build(&t))
        }
        None => None,
    };
    let facts = target_facts(cluster, a, &mut notes)?;
    let no_tpm = if a.no_tpm {
        Some("--no-tpm".to_owned())
    } else {
        crate::import::tpm::cluster_reason(&facts.hypervisors)
    };
    let mapping = MappingOptions {
        name: String::new(),
        namespace: "default".into(),
        images_dir: a.images_dir.clone(),
        network_map: a.network_map.iter().cloned().collect::<BTreeMap<_, _>>(),
        keep_nic_model: false,
        keep_mac: false,
        scsi_bus: a.scsi_bus,
        run_strategy: ironvisor_crds::vm::RunStrategy::Halted,
        no_tpm,
    };
    let exports = match &a.exports {
        Some(d) => {
            let (ok, failed) = exports::analyse(d, &mapping, Limits::default())
                .map_err(|e| format!("{}: cannot read: {e}", d.display()))?;
            described.push(format!("{} export(s) in {}", ok.len(), d.display()));
            notes.extend(
                failed
                    .into_iter()
                    .map(|f| format!("export not analysed: {f}")),
            );
            ok
        }
        None => Vec::new(),
    };
    let tenant_rules = match &a.tenant_rules {
        Some(p) => {
            TenantRules::parse(&read(p)?).map_err(|e| format!("{}: {}", p.display(), chain(&e)))?
        }
        None => TenantRules::default(),
    };
    let groups: Groups = match &a.groups {
        Some(p) => {
            serde_saphyr::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Groups::default(),
    };
    described.push(format!("target facts from {}", facts.source));
    let throughput = match a.throughput {
        Some(b) => throughput::given(b),
        None => throughput::measure(&Converter::default().qemu_img, a.sample_mib << 20)
            .map_err(|e| chain(&e))?,
    };
    Ok(Inputs {
        inventory,
        exports,
        advisor_rules: rules(a.rules.as_deref(), advisor::builtin_rules)?,
        plan_rules: rules(a.plan_rules.as_deref(), readiness::builtin_plan_rules)?,
        tenant_rules,
        groups,
        facts,
        throughput,
        limits: WaveLimits {
            window_seconds: a.window,
            max_vms: a.max_vms_per_wave,
        },
        order: a.order.clone(),
        right_size: a.right_size,
        mapping,
        described,
        notes,
    })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

/// `ivctl import plan`.
pub fn plan(cluster: &ClusterArgs, a: &PlanArgs) -> ExitCode {
    if a.print_rules {
        println!(
            "# advisor rules (--rules)\n{}\n# planner rules (--plan-rules)\n{}",
            advisor::RULES_YAML,
            readiness::PLAN_RULES_YAML
        );
        return ExitCode::SUCCESS;
    }
    let inputs = match inputs(cluster, a) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let existing: BTreeSet<String> = inputs
        .facts
        .tenants
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    let plan = build::build(inputs);
    match output::write_all(&plan, &a.out, &existing) {
        Ok(files) => {
            for (k, v) in super::render::summary_rows(&plan) {
                println!("{k}: {v}");
            }
            println!("wrote {} file(s) to {}", files.len(), a.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `ivctl import wave`.
pub fn wave(a: &WaveArgs) -> ExitCode {
    let plan: Plan = match read(&a.plan).and_then(|t| {
        serde_json::from_str(&t).map_err(|e| format!("{}: not a plan: {e}", a.plan.display()))
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut network_map = BTreeMap::new();
    for m in &plan.network_map {
        match crate::import::manifest::parse_network_map(m) {
            Ok((from, to)) => {
                network_map.insert(from, to);
            }
            Err(e) => {
                eprintln!("error: {}: network map {m:?}: {e}", a.plan.display());
                return ExitCode::from(2);
            }
        }
    }
    let scsi_bus = <ScsiBus as clap::ValueEnum>::from_str(&plan.scsi_bus, true).unwrap_or_default();
    let run = WaveRun {
        wave: a.wave,
        parallel: usize::from(a.parallel),
        out: a.out.clone(),
        dry_run: a.dry_run,
        progress: !a.json,
        mapping: MappingOptions {
            name: String::new(),
            namespace: String::new(),
            images_dir: plan.images_dir.clone().into(),
            network_map,
            keep_nic_model: false,
            keep_mac: false,
            scsi_bus,
            run_strategy: ironvisor_crds::vm::RunStrategy::Halted,
            no_tpm: a
                .no_tpm
                .then(|| "--no-tpm".to_owned())
                .or_else(|| plan.no_tpm.clone()),
        },
        limits: Limits::default(),
        no_verify: a.no_verify,
    };
    let outcomes = match batch::run_wave(&plan, &run) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).unwrap_or_default()
        );
    } else {
        for o in &outcomes {
            println!("{:<10} {}  {}", o.status, o.vm, o.detail);
        }
    }
    let ok = |s: &str| s == "imported" || s == "dryRun";
    if outcomes.iter().all(|o| ok(&o.status)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
