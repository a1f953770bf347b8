//! The plan, put together: inventory VMs and exports → readiness, sizing, tenant, manifest
//! → waves within capacity and window → steps and totals. Pure: everything read from files
//! or the cluster arrives in [`Inputs`].

use crate::import::advisor::{self, Rule};
use crate::import::manifest::{self, MappingOptions, NetworkTarget, PlannedDisk};
use crate::import::model::SourceVm;

use super::capacity::{Ledger, TargetFacts};
use super::exports::ExportInfo;
use super::inventory::{InvDisk, InvVm, Inventory};
use super::model::{PLAN_VERSION, Plan, PlanFinding, PlannedVm, Readiness, Summary};
use super::readiness::{self, PlanContext};
use super::sizing;
use super::steps;
use super::tenants::{self, TenantRules};
use super::throughput::{Throughput, seconds_for};
use super::waves::{self, Groups, Order, WaveLimits};

/// Everything the plan is made from.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The RVTools inventory, if given.
    pub inventory: Option<Inventory>,
    /// Exports analysed by the importer.
    pub exports: Vec<ExportInfo>,
    /// The advisor's rules.
    pub advisor_rules: Vec<Rule>,
    /// The planner's rules.
    pub plan_rules: Vec<Rule>,
    /// Tenant mapping.
    pub tenant_rules: TenantRules,
    /// Application groups.
    pub groups: Groups,
    /// Tenants, Quotas, Hypervisors.
    pub facts: TargetFacts,
    /// Conversion rate.
    pub throughput: Throughput,
    /// Window and wave size.
    pub limits: WaveLimits,
    /// Ordering.
    pub order: Order,
    /// Right-size memory.
    pub right_size: bool,
    /// Manifest options (name and namespace are set per VM).
    pub mapping: MappingOptions,
    /// Inputs in words, and notes (exports that failed, ...).
    pub described: Vec<String>,
    /// Notes so far.
    pub notes: Vec<String>,
}

/// A network target as `--network-map` takes it back.
pub fn target_arg(t: &NetworkTarget) -> String {
    match t {
        NetworkTarget::Network(n) => format!("network:{n}"),
        NetworkTarget::Bridge(b) => format!("bridge:{b}"),
        NetworkTarget::User => "user".into(),
    }
}

fn same_vm(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || manifest::sanitize_name(a) == manifest::sanitize_name(b)
}

/// An inventory-like row for an export that is not in the inventory.
fn vm_from_export(e: &ExportInfo) -> InvVm {
    let r = &e.report;
    InvVm {
        name: r.vm.vmware_name.clone(),
        vcpus: r.vm.vcpus,
        cores_per_socket: 1,
        memory_mib: r.vm.memory_mib,
        guest_os: r.vm.guest_os.clone(),
        disks: r
            .disks
            .iter()
            .map(|d| InvDisk {
                label: d.slot.clone(),
                capacity_mib: d.capacity_bytes.div_ceil(1 << 20),
                raw: d.skipped.is_some(),
                ..InvDisk::default()
            })
            .collect(),
        ..InvVm::default()
    }
}

fn manifest_for(
    src: &SourceVm,
    export: Option<&ExportInfo>,
    opts: &MappingOptions,
) -> serde_json::Value {
    if let Some(e) = export {
        let mut m = e.report.manifest.clone();
        if let Some(meta) = m.get_mut("metadata").and_then(|v| v.as_object_mut()) {
            meta.insert("name".into(), opts.name.clone().into());
            meta.insert("namespace".into(), opts.namespace.clone().into());
        }
        return m;
    }
    let disks: Vec<PlannedDisk> = src
        .disks
        .iter()
        .filter(|d| !d.raw_device_mapping)
        .map(|d| PlannedDisk {
            source: d.clone(),
            capacity_bytes: d.capacity_bytes.unwrap_or(0),
            blank: d.file.is_none(),
        })
        .collect();
    let built = manifest::build(src, &disks, opts);
    serde_json::to_value(&built.vm).unwrap_or_default()
}

fn plan_vm(inv: &InvVm, export: Option<&ExportInfo>, inputs: &Inputs) -> PlannedVm {
    let assignment = tenants::assign(&inputs.tenant_rules, inv);
    let src = readiness::source_vm(inv);
    let (sizing, right_sized) = sizing::size(inv, &src, inputs.right_size);
    let ctx = PlanContext {
        mapped_networks: inputs.mapping.network_map.keys().cloned().collect(),
        tenant_by: assignment.by.clone(),
        has_export: export.is_some(),
        right_sized,
    };
    let plan_facts = readiness::plan_facts(inv, &ctx);
    let (findings, readiness) = match export {
        // The importer judged the export itself, with every fact the descriptor gives.
        Some(e) => {
            let mut f: Vec<PlanFinding> = e
                .report
                .findings
                .iter()
                .filter(|f| !f.id.starts_with("storage-quota"))
                .cloned()
                .map(PlanFinding::from)
                .chain(
                    advisor::evaluate(&inputs.plan_rules, &plan_facts)
                        .into_iter()
                        .map(PlanFinding::from),
                )
                .collect();
            f.sort_by_key(|f| f.severity);
            let r = readiness::readiness(&f);
            (f, r)
        }
        None => readiness::assess(
            &inputs.advisor_rules,
            &inputs.plan_rules,
            &advisor::facts(
                &src,
                &advisor::ExtraFacts {
                    tpm_dropped: inputs.mapping.no_tpm.clone(),
                    ..readiness::extra_facts(&src, &ctx)
                },
            ),
            &plan_facts,
        ),
    };
    let k8s_name = manifest::sanitize_name(&inv.name);
    let mut src_sized = src.clone();
    src_sized.memory_mib = sizing.memory_mib;
    // The manifest records the guest OS as the inventory wrote it.
    src_sized.guest_os = inv.guest_os.clone();
    let opts = MappingOptions {
        name: k8s_name.clone(),
        namespace: assignment
            .namespace
            .clone()
            .unwrap_or_else(|| "unassigned".into()),
        ..inputs.mapping.clone()
    };
    let order_value = match &inputs.order {
        Order::Attribute(a) => {
            let want = super::columns::normalise(a);
            inv.attributes
                .iter()
                .find(|(k, _)| super::columns::normalise(k) == want)
                .map(|(_, v)| v.clone())
        }
        _ => None,
    };
    PlannedVm {
        name: inv.name.clone(),
        k8s_name,
        tenant: assignment.tenant,
        namespace: assignment.namespace,
        tenant_by: assignment.by,
        folder: inv.folder.clone(),
        order_value,
        group: None,
        readiness,
        findings,
        estimated_seconds: seconds_for(sizing.import_bytes, &inputs.throughput),
        sizing,
        export: export.map(|e| e.path.display().to_string()),
        host: None,
        wave: None,
        unscheduled: None,
        manifest: manifest_for(&src_sized, export, &opts),
    }
}

/// Two VMs of one estate may not share a VirtualMachine name in one namespace.
fn mark_name_clashes(vms: &mut [PlannedVm]) {
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..vms.len() {
        let key = (vms[i].namespace.clone(), vms[i].k8s_name.clone());
        if let Some(first) = seen.insert(key, i) {
            let why = format!(
                "its name becomes {}, like {}; rename one in vSphere or import it with --name",
                vms[i].k8s_name, vms[first].name
            );
            vms[i].unscheduled = Some(why);
        }
    }
}

/// Every VM of the inventory (with its export when one matches by name), then the exports
/// the inventory does not list.
fn plan_all(inventory: &Inventory, inputs: &Inputs) -> Vec<PlannedVm> {
    let mut used = vec![false; inputs.exports.len()];
    let mut vms: Vec<PlannedVm> = Vec::new();
    for inv in &inventory.vms {
        let at = (0..inputs.exports.len())
            .find(|i| !used[*i] && same_vm(&inputs.exports[*i].report.vm.vmware_name, &inv.name));
        if let Some(i) = at {
            used[i] = true;
        }
        vms.push(plan_vm(inv, at.map(|i| &inputs.exports[i]), inputs));
    }
    for (e, _) in inputs.exports.iter().zip(&used).filter(|(_, u)| !**u) {
        vms.push(plan_vm(&vm_from_export(e), Some(e), inputs));
    }
    vms
}

/// Totals over the VMs and waves.
fn summarise(vms: &[PlannedVm], waves: &[super::model::Wave]) -> Summary {
    let count = |r: Readiness| vms.iter().filter(|v| v.readiness == r).count();
    let scheduled: Vec<&PlannedVm> = vms.iter().filter(|v| v.wave.is_some()).collect();
    Summary {
        vms: vms.len(),
        ready: count(Readiness::Ready),
        needs_work: count(Readiness::NeedsWork),
        blocked: count(Readiness::Blocked),
        scheduled: scheduled.len(),
        waves: waves.len(),
        vcpus: waves.iter().map(|w| w.vcpus).fold(0, u64::saturating_add),
        memory_bytes: waves
            .iter()
            .map(|w| w.memory_bytes)
            .fold(0, u64::saturating_add),
        storage_bytes: waves
            .iter()
            .map(|w| w.storage_bytes)
            .fold(0, u64::saturating_add),
        estimated_seconds: waves
            .iter()
            .map(|w| w.estimated_seconds)
            .fold(0, u64::saturating_add),
    }
}

/// Make the plan.
pub fn build(inputs: Inputs) -> Plan {
    let inventory = inputs.inventory.clone().unwrap_or_default();
    let mut vms = plan_all(&inventory, &inputs);
    mark_name_clashes(&mut vms);
    let mut notes = inputs.notes.clone();
    let mut ledger = Ledger::new(&inputs.facts);
    if !ledger.hosts_known {
        notes.push(
            "host capacity not checked: no Hypervisors (give --hypervisors or reach a cluster)"
                .into(),
        );
    }
    if inputs.facts.quotas.is_empty() {
        notes.push(
            "no Quotas known: tenant quotas not checked (give --quotas or reach a cluster)".into(),
        );
    }
    let (waves, violations) = waves::schedule(
        &mut vms,
        &inputs.groups,
        &inputs.order,
        &inputs.limits,
        &mut ledger,
        &mut notes,
    );
    let summary = summarise(&vms, &waves);
    Plan {
        version: PLAN_VERSION,
        inputs: inputs.described.clone(),
        throughput: inputs.throughput.clone(),
        window_seconds: inputs.limits.window_seconds,
        order: match &inputs.order {
            Order::Size => "size".into(),
            Order::Folder => "folder".into(),
            Order::Attribute(a) => format!("attribute:{a}"),
        },
        images_dir: inputs.mapping.images_dir.display().to_string(),
        network_map: inputs
            .mapping
            .network_map
            .iter()
            .map(|(from, to)| format!("{from}={}", target_arg(to)))
            .collect(),
        scsi_bus: clap::ValueEnum::to_possible_value(&inputs.mapping.scsi_bus)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        no_tpm: inputs.mapping.no_tpm.clone(),
        summary,
        steps: steps::summarise(&vms),
        vms,
        waves,
        violations,
        columns: inventory.columns,
        missing_tabs: inventory.missing_tabs,
        problems: inventory.problems,
        templates: inventory.templates,
        notes,
    }
}
