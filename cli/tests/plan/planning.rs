//! The planner on a generated 60-VM estate, through the library: waves fit the window and
//! the capacity, quota shortfalls are reported, unknown columns are listed, and the
//! automation percentage follows the documented step list.

use std::collections::BTreeMap;
use std::path::Path;

use ivctl::import::advisor;
use ivctl::import::manifest::{MappingOptions, NetworkTarget, ScsiBus};
use ivctl::import::plan::build::{self, Inputs};
use ivctl::import::plan::capacity::TargetFacts;
use ivctl::import::plan::model::{Plan, Readiness};
use ivctl::import::plan::readiness::builtin_plan_rules;
use ivctl::import::plan::steps::STEPS;
use ivctl::import::plan::tenants::TenantRules;
use ivctl::import::plan::throughput;
use ivctl::import::plan::waves::{Groups, Order, WaveLimits};
use ivctl::import::plan::{inventory, table};

use crate::estate::{self, Style};

pub const RULES: &str = "
defaultTenant: triage
rules:
  - tenant: finance
    match: { folder: '*/Finance' }
  - tenant: web
    namespace: web-vms
    match: { folder: '*/Web', cluster: 'Prod-*' }
  - tenant: hr
    match: { attribute: { name: Application Type, value: payroll } }
";

/// Two hosts with 128 vCPUs / 256 GiB free each; a parent quota over finance.
pub fn facts(finance_memory: &str) -> TargetFacts {
    let mut f = TargetFacts::default();
    let yaml = format!(
        "kind: Tenant\napiVersion: ironvisor.io/v1alpha1\nmetadata: {{ name: finance }}\nspec: {{ parent: corp }}\n---\n\
kind: Quota\napiVersion: ironvisor.io/v1alpha1\nmetadata: {{ name: corp }}\nspec: {{ tenant: corp, hard: {{ memory: {finance_memory}, vcpus: 200 }} }}\n---\n\
kind: Hypervisor\napiVersion: ironvisor.io/v1alpha1\nmetadata: {{ name: h1 }}\nspec: {{}}\nstatus: {{ allocatable: {{ vcpus: 128, memory: 256Gi }}, allocated: {{ vcpus: 0, memory: '0' }} }}\n---\n\
kind: Hypervisor\napiVersion: ironvisor.io/v1alpha1\nmetadata: {{ name: h2 }}\nspec: {{}}\nstatus: {{ allocatable: {{ vcpus: 128, memory: 256Gi }}, allocated: {{ vcpus: 8, memory: 16Gi }} }}\n"
    );
    f.add_yaml("facts.yaml", &yaml).unwrap();
    f
}

pub fn inputs(inventory_dir: &Path, facts: TargetFacts, window: u64) -> Inputs {
    let inv = inventory::build(&table::read(inventory_dir).unwrap());
    Inputs {
        inventory: Some(inv),
        exports: Vec::new(),
        advisor_rules: advisor::builtin_rules(),
        plan_rules: builtin_plan_rules(),
        tenant_rules: TenantRules::parse(RULES).unwrap(),
        groups: Groups::default(),
        facts,
        throughput: throughput::given(100 << 20),
        limits: WaveLimits {
            window_seconds: window,
            max_vms: None,
        },
        order: Order::Size,
        right_size: false,
        mapping: MappingOptions {
            name: String::new(),
            namespace: String::new(),
            images_dir: "/var/lib/ironvisor/images".into(),
            network_map: BTreeMap::from([(
                "VM Network".to_string(),
                NetworkTarget::Network("default".into()),
            )]),
            keep_nic_model: false,
            keep_mac: false,
            scsi_bus: ScsiBus::Scsi,
            run_strategy: ironvisor_crds::vm::RunStrategy::Halted,
            no_tpm: None,
        },
        described: vec![],
        notes: vec![],
    }
}

fn estate_plan(window: u64, memory: &str) -> (tempfile::TempDir, Plan) {
    let dir = tempfile::tempdir().unwrap();
    estate::write_csv_dir(dir.path(), &estate::estate(60), Style::V4, ',');
    let plan = build::build(inputs(dir.path(), facts(memory), window));
    (dir, plan)
}

#[test]
fn a_sixty_vm_estate_is_planned_into_waves_that_fit_the_window_and_the_hosts() {
    let window = 3600;
    let (_d, plan) = estate_plan(window, "1Ti");
    assert_eq!(plan.vms.len(), 59, "the template is left out");
    assert_eq!(plan.templates, ["shop-005".to_string()]);
    assert!(plan.waves.len() >= 2, "{} waves", plan.waves.len());
    for w in &plan.waves {
        assert!(
            w.estimated_seconds <= window,
            "wave {} takes {}",
            w.number,
            w.estimated_seconds
        );
        let sum: u64 = plan
            .vms
            .iter()
            .filter(|v| v.wave == Some(w.number))
            .map(|v| v.estimated_seconds)
            .sum();
        assert_eq!(sum, w.estimated_seconds);
    }
    // Per host, what the plan put there fits what was free.
    for (host, vcpus, mem) in [("h1", 128u64, 256u64 << 30), ("h2", 120, 240 << 30)] {
        let on: Vec<_> = plan
            .vms
            .iter()
            .filter(|v| v.host.as_deref() == Some(host))
            .collect();
        let c: u64 = on.iter().map(|v| u64::from(v.sizing.vcpus)).sum();
        let m: u64 = on.iter().map(|v| v.sizing.memory_mib << 20).sum();
        assert!(c <= vcpus && m <= mem, "{host}: {c} vCPUs, {m} bytes");
    }
    // Blockers (passthrough NIC, snapshot) never get a wave; everything else either has one or a reason.
    for vm in &plan.vms {
        if vm.readiness == Readiness::Blocked {
            assert_eq!(vm.wave, None, "{}", vm.name);
        }
        assert!(
            vm.wave.is_some() != vm.unscheduled.is_some(),
            "{}: {:?}",
            vm.name,
            vm.unscheduled
        );
    }
    let blocked: Vec<&str> = plan
        .vms
        .iter()
        .filter(|v| v.readiness == Readiness::Blocked)
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        blocked.iter().any(|n| n.ends_with("-003")) && blocked.iter().any(|n| n.ends_with("-007")),
        "{blocked:?}"
    );
    // Size order: within each wave's predecessor, nothing smaller waits behind (first wave holds the smallest).
    let first = &plan.waves[0];
    let smallest = plan
        .vms
        .iter()
        .filter(|v| v.wave.is_some())
        .map(|v| v.sizing.import_bytes)
        .min()
        .unwrap();
    assert!(
        plan.vms
            .iter()
            .any(|v| v.wave == Some(first.number) && v.sizing.import_bytes == smallest)
    );
    // Tenants by rule, namespace from the rule, default for the rest.
    let web = plan
        .vms
        .iter()
        .find(|v| v.folder.as_deref() == Some("DC1/vm/Web"))
        .unwrap();
    assert_eq!(
        (web.tenant.as_deref(), web.namespace.as_deref()),
        (Some("web"), Some("web-vms"))
    );
    let lab = plan
        .vms
        .iter()
        .find(|v| v.folder.as_deref() == Some("DC1/vm/Lab"))
        .unwrap();
    assert_eq!(
        (lab.tenant.as_deref(), lab.tenant_by.as_str()),
        (Some("triage"), "default")
    );
    assert!(plan.vms.iter().any(|v| v.tenant.as_deref() == Some("hr")));
}

#[test]
fn a_window_too_short_for_a_vm_leaves_it_out_with_the_reason() {
    let (_d, plan) = estate_plan(60, "1Ti");
    let out: Vec<_> = plan
        .vms
        .iter()
        .filter(|v| {
            v.unscheduled
                .as_deref()
                .is_some_and(|u| u.contains("longer than the 1m window"))
        })
        .collect();
    assert!(!out.is_empty());
    assert!(plan.waves.iter().all(|w| w.estimated_seconds <= 60));
}

#[test]
fn quota_shortfalls_are_reported_and_those_vms_get_no_wave() {
    let (_d, plan) = estate_plan(4 * 3600, "8Gi");
    assert!(!plan.violations.is_empty());
    for v in &plan.violations {
        assert_eq!(v.tenant.as_deref(), Some("finance"));
        assert!(
            v.limit.contains("Quota corp") && v.resource == "memory" && v.needed > v.left,
            "{v:?}"
        );
        let vm = plan.vms.iter().find(|x| x.name == v.vm).unwrap();
        assert_eq!(vm.wave, None);
        assert!(vm.unscheduled.as_deref().unwrap().contains("does not fit"));
    }
    let taken: u64 = plan
        .vms
        .iter()
        .filter(|v| v.tenant.as_deref() == Some("finance") && v.wave.is_some())
        .map(|v| v.sizing.memory_mib << 20)
        .sum();
    assert!(
        taken <= 8 << 30,
        "finance got {taken} bytes under an 8Gi quota"
    );
    assert!(
        plan.vms
            .iter()
            .any(|v| v.tenant.as_deref() == Some("finance") && v.wave.is_some())
    );
}

#[test]
fn unknown_columns_are_reported_and_custom_attributes_kept() {
    let (_d, plan) = estate_plan(4 * 3600, "1Ti");
    let vinfo = plan.columns.iter().find(|c| c.sheet == "vInfo").unwrap();
    assert_eq!(vinfo.unrecognised, ["Application Type"]);
    assert_eq!(vinfo.known_unused, ["Heartbeat"]);
    let vsnap = plan
        .columns
        .iter()
        .find(|c| c.sheet == "vSnapshot")
        .unwrap();
    assert!(vsnap.unrecognised.is_empty() && vsnap.known_unused == ["Description"]);
    let md = ivctl::import::plan::render::markdown(&plan);
    assert!(
        md.contains("vInfo: 18 recognised, 1 known and not used; not recognised: Application Type"),
        "{md}"
    );
    assert!(
        plan.missing_tabs.is_empty() && plan.problems.is_empty(),
        "{:?} {:?}",
        plan.missing_tabs,
        plan.problems
    );
}

#[test]
fn older_header_spellings_give_the_same_plan() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    estate::write_csv_dir(a.path(), &estate::estate(60), Style::V4, ',');
    estate::write_csv_dir(b.path(), &estate::estate(60), Style::Old, ';');
    let pa = build::build(inputs(a.path(), facts("1Ti"), 4 * 3600));
    let pb = build::build(inputs(b.path(), facts("1Ti"), 4 * 3600));
    assert_eq!(pa.vms, pb.vms);
    assert_eq!(pa.waves, pb.waves);
}

#[test]
fn the_automation_percentage_follows_the_step_list() {
    let (_d, plan) = estate_plan(4 * 3600, "1Ti");
    let mut automated = 0u64;
    let mut total = 0u64;
    for vm in &plan.vms {
        let manual_fixed = 2 // export, cutover
            + u64::from(!vm.tenant_by.starts_with("rule"))
            + u64::from(vm.findings.iter().any(|f| f.id == "unmapped-network"));
        let manual_findings = vm.findings.iter().filter(|f| f.manual_step).count() as u64;
        automated += STEPS.len() as u64 - manual_fixed;
        total += STEPS.len() as u64 + manual_findings;
    }
    assert_eq!((plan.steps.automated, plan.steps.total), (automated, total));
    assert_eq!(plan.steps.automated_percent, automated * 100 / total);
    assert!(plan.steps.automated_percent > 0 && plan.steps.automated_percent < 100);
}

#[test]
fn dependent_groups_go_in_the_same_or_an_earlier_wave() {
    let dir = tempfile::tempdir().unwrap();
    estate::write_csv_dir(dir.path(), &estate::estate(60), Style::V4, ',');
    let mut i = inputs(dir.path(), facts("1Ti"), 3600);
    // The biggest VMs' group is depended on by the smallest ones' group: size order alone
    // would move the small ones first.
    i.groups = serde_saphyr::from_str(
        "groups:\n  - name: shop\n    vms: ['shop-*']\n    dependsOn: [payroll]\n  - name: payroll\n    vms: ['payroll-*']\n",
    )
    .unwrap();
    let plan = build::build(i);
    let wave_of = |g: &str| {
        plan.vms
            .iter()
            .find(|v| v.group.as_deref() == Some(g) && v.wave.is_some())
            .and_then(|v| v.wave)
    };
    let (shop, payroll) = (wave_of("shop"), wave_of("payroll"));
    assert!(payroll.is_some() && shop.is_some(), "{shop:?} {payroll:?}");
    assert!(payroll <= shop);
    for g in ["shop", "payroll"] {
        let waves: std::collections::BTreeSet<_> = plan
            .vms
            .iter()
            .filter(|v| v.group.as_deref() == Some(g))
            .filter_map(|v| v.wave)
            .collect();
        assert!(waves.len() <= 1, "group {g} split over {waves:?}");
    }
}

#[test]
fn one_clean_vm_matched_by_a_rule_is_nine_of_eleven_steps_automated() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vInfo.csv"),
        "VM,CPUs,Memory,Provisioned MiB,Folder,OS according to the configuration file\nweb-1,2,2048,10240,DC1/vm/Web,Debian GNU/Linux 11 (64-bit)\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("vDisk.csv"),
        "VM,Disk,Capacity MiB\nweb-1,Hard disk 1,10240\n",
    )
    .unwrap();
    let mut i = inputs(dir.path(), facts("1Ti"), 3600);
    i.tenant_rules =
        TenantRules::parse("rules:\n  - tenant: web\n    match: { vm: 'web-*' }\n").unwrap();
    let plan = build::build(i);
    let vm = &plan.vms[0];
    assert_eq!(vm.readiness, Readiness::Ready, "{:?}", vm.findings);
    assert_eq!(
        (
            plan.steps.automated,
            plan.steps.total,
            plan.steps.automated_percent
        ),
        (9, 11, 81)
    );
    assert_eq!(vm.manifest["metadata"]["namespace"], "web");
    assert_eq!(vm.manifest["spec"]["disks"][0]["size"], "10Gi");
}

#[test]
fn every_wave_manifest_passes_the_crd_schema_and_its_rules() {
    let (_d, plan) = estate_plan(3600, "1Ti");
    let out = tempfile::tempdir().unwrap();
    let existing = std::collections::BTreeSet::from(["finance".to_string()]);
    let files = ivctl::import::plan::output::write_all(&plan, out.path(), &existing).unwrap();
    let mut vms = 0;
    let mut tenants = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        if f.file_name().unwrap() == "00-tenants.yaml" {
            let text = std::fs::read_to_string(f).unwrap();
            let docs: Vec<ironvisor_crds::Tenant> = serde_saphyr::from_multiple(&text).unwrap();
            tenants.extend(docs.into_iter().map(|t| t.metadata.name.unwrap()));
        } else {
            let vm = crate::schema::validated(f);
            assert!(vm.metadata.namespace.is_some());
            vms += 1;
        }
    }
    assert_eq!(vms, plan.summary.scheduled);
    tenants.sort();
    tenants.dedup();
    // finance exists already; the others are made by the first wave that needs them.
    assert_eq!(tenants, ["hr", "triage", "web"]);
    assert!(out.path().join("plan.html").is_file() && out.path().join("wave-01").is_dir());
}

#[test]
fn folder_order_keeps_folders_together_and_right_sizing_is_stated() {
    let dir = tempfile::tempdir().unwrap();
    estate::write_csv_dir(dir.path(), &estate::estate(60), Style::V4, ',');
    let mut i = inputs(dir.path(), facts("1Ti"), 3600);
    i.order = "folder".parse().unwrap();
    i.right_size = true;
    let plan = build::build(i);
    // Scheduled VMs in wave order never go back to a folder already left.
    let mut seen: Vec<String> = Vec::new();
    for w in &plan.waves {
        for name in &w.vms {
            let f = plan
                .vms
                .iter()
                .find(|v| &v.name == name)
                .unwrap()
                .folder
                .clone()
                .unwrap();
            if seen.last() != Some(&f) {
                assert!(
                    !seen.contains(&f),
                    "folder {f} comes back in wave {}",
                    w.number
                );
                seen.push(f);
            }
        }
    }
    assert_eq!(plan.order, "folder");
    // The generator's Active is a quarter of the memory: 8 GiB becomes 3 GiB, and says so.
    let big = plan
        .vms
        .iter()
        .find(|v| v.sizing.source_memory_mib == 8192)
        .unwrap();
    assert_eq!(big.sizing.memory_mib, 3072);
    assert!(
        big.findings
            .iter()
            .any(|f| f.id == "memory-right-sized" && f.detail == "8192 MiB → 3072 MiB")
    );
    assert!(
        big.sizing
            .basis
            .contains("right-sized from vMemory Active 2048 MiB")
    );
    assert!("tag:".parse::<Order>().is_err());
}
