//! The monitoring manifests: alert rules pass `promtool check rules`, the Argo CD health
//! check for VirtualMachine gives the right verdict for each kind of status, and the
//! argocd-cm snippet carries exactly the Lua script that is tested here.

use std::path::PathBuf;
use std::process::Command;

use ironvisor_tests::{repo_root, run, yaml_documents};
use serde_json::{Value, json};

fn monitoring() -> PathBuf {
    repo_root().join("manifests/monitoring")
}

/// The PrometheusRule's groups as a plain Prometheus rules file.
fn rules_file(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(monitoring().join("prometheusrule.yaml")).expect("rules");
    let rule = yaml_documents(&text).remove(0);
    let plain = json!({ "groups": rule["spec"]["groups"] });
    let path = dir.join("ironvisor.rules.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&plain).expect("json")).expect("write rules");
    path
}

#[test]
fn alert_rules_pass_promtool_check_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(rules_file(dir.path())));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool rejected the rules:\n{text}");
    assert!(text.contains("SUCCESS: 13 rules found"), "{text}");
}

/// The budget alerts, evaluated by `promtool test rules` on made-up series: a tenant at 85 %
/// of its budget gets the warning only, one at 120 % the critical alert only, one at 50 % and
/// one without a budget neither.
#[test]
fn budget_alerts_fire_at_80_and_100_percent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = rules_file(dir.path());
    let test = json!({
        "rule_files": [rules.file_name().and_then(|n| n.to_str()).expect("name")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": "ironvisor_usage_cost{tenant=\"warm\"}", "values": "85x5"},
                {"series": "ironvisor_usage_budget{tenant=\"warm\"}", "values": "100x5"},
                {"series": "ironvisor_usage_cost{tenant=\"hot\"}", "values": "120x5"},
                {"series": "ironvisor_usage_budget{tenant=\"hot\"}", "values": "100x5"},
                {"series": "ironvisor_usage_cost{tenant=\"cool\"}", "values": "50x5"},
                {"series": "ironvisor_usage_budget{tenant=\"cool\"}", "values": "100x5"},
                {"series": "ironvisor_usage_cost{tenant=\"free\"}", "values": "500x5"}
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "IronvisorBudgetAlmostSpent",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "tenant": "warm"},
                                 "exp_annotations": {
                    "summary": "Tenant warm has spent 85% of its monthly budget",
                    "description": "The tenant's usage this month (with its descendants), priced by the PriceList named default, has reached 80 % of its budget. `ivctl usage --tenant warm` shows what it is spent on."}}]},
                {"eval_time": "2m", "alertname": "IronvisorBudgetExceeded",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "tenant": "hot"},
                                 "exp_annotations": {
                    "summary": "Tenant hot is over its monthly budget (120%)",
                    "description": "The tenant's usage this month (with its descendants) costs more than its budget in the PriceList named default."}}]}
            ]
        }]
    });
    let path = dir.path().join("budget.test.json");
    std::fs::write(&path, test.to_string()).expect("write the rule test");
    let out = run(Command::new("promtool").arg("test").arg("rules").arg(&path));
    assert!(
        out.status.success(),
        "the budget alerts do not fire as expected:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The migration alerts, evaluated by `promtool test rules`: one failed migration fires
/// `IronvisorMigrationFailed` (completed and cancelled ones do not), and a migration running
/// for over an hour fires `IronvisorMigrationStuck` once it has lasted five more minutes.
#[test]
fn migration_alerts_fire_on_a_failure_and_on_a_migration_running_for_an_hour() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = rules_file(dir.path());
    let test = json!({
        "rule_files": [rules.file_name().and_then(|n| n.to_str()).expect("name")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": "ironvisor_migrations_total{result=\"Failed\"}", "values": "0 0 1 1 1"},
                {"series": "ironvisor_migrations_total{result=\"Completed\"}", "values": "0 5 9 12 20"},
                {"series": "ironvisor_migrations_total{result=\"Cancelled\"}", "values": "0 1 1 1 1"},
                // Running for 50 minutes at the start, one more minute each minute.
                {"series": "ironvisor_migration_oldest_active_seconds", "values": "3000+60x20"}
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "IronvisorMigrationFailed", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "IronvisorMigrationFailed",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                    "summary": "1 live migrations failed in the last 30 minutes",
                    "description": "The VMs still run on their source hosts. `kubectl get vmim -A` lists the failed migrations; the Ready condition of each says why (the policy's timeout, the target refusing, libvirt's error)."}}]},
                // Over an hour from minute 11; firing five minutes later.
                {"eval_time": "14m", "alertname": "IronvisorMigrationStuck", "exp_alerts": []},
                {"eval_time": "17m", "alertname": "IronvisorMigrationStuck",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                    "summary": "A live migration has run for more than an hour",
                    "description": "A migration past Pending has not ended after an hour: its source agent may be gone, or a post-copy migration cannot finish. `kubectl get vmim -A` shows it; its progress and the source host's agent say more."}}]}
            ]
        }]
    });
    let path = dir.path().join("migration.test.json");
    std::fs::write(&path, test.to_string()).expect("write the rule test");
    let out = run(Command::new("promtool").arg("test").arg("rules").arg(&path));
    assert!(
        out.status.success(),
        "the migration alerts do not fire as expected:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The showback dashboard: every panel queries the usage series the operator exports, by the
/// tenant variable, and the kustomization ships it as a Grafana ConfigMap.
#[test]
fn showback_dashboard_queries_usage_cost_and_budget_per_tenant() {
    let text = std::fs::read_to_string(monitoring().join("ironvisor-showback-dashboard.json"))
        .expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for series in [
        "ironvisor_usage_cost",
        "ironvisor_usage_budget",
        "ironvisor_usage_hours",
        "ironvisor_rightsizing_monthly_saving",
        "ironvisor_rightsizing_vms",
        "ironvisor_rightsizing_allocated",
        "ironvisor_rightsizing_used",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(series)),
            "{series} not shown"
        );
    }
    assert!(exprs.iter().all(|e| e.contains("$tenant")), "{exprs:?}");
    let kustomization =
        std::fs::read_to_string(monitoring().join("kustomization.yaml")).expect("kustomization");
    assert!(kustomization.contains("ironvisor-showback-dashboard.json"));
}

/// The snapshot alert, evaluated by `promtool test rules`: a failed snapshot fires
/// `IronvisorSnapshotFailed` with its reason; reasons that did not move stay silent.
#[test]
fn snapshot_alert_fires_on_a_failure_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = rules_file(dir.path());
    let test = json!({
        "rule_files": [rules.file_name().and_then(|n| n.to_str()).expect("name")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": "ironvisor_agent_snapshot_failures_total{reason=\"guest_agent_required\",instance=\"a\"}", "values": "0 0 1 1 1"},
                {"series": "ironvisor_agent_snapshot_failures_total{reason=\"hypervisor\",instance=\"a\"}", "values": "0 0 0 0 0"},
                {"series": "ironvisor_agent_snapshots_total{consistency=\"Crash\",result=\"ok\",instance=\"a\"}", "values": "0 3 6 9 12"}
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "IronvisorSnapshotFailed", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "IronvisorSnapshotFailed",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "reason": "guest_agent_required"}, "exp_annotations": {
                    "summary": "1 snapshots failed (guest_agent_required) in the last 30 minutes",
                    "description": "Nothing of a failed snapshot stays on disk and the VM runs on. `kubectl get vmsnap -A` lists the failed snapshots; the Ready condition of each says why (no guest agent for a Required freeze, libvirt's or qemu-img's error). The reasons are listed in docs/snapshots.md."}}]}
            ]
        }]
    });
    let path = dir.path().join("snapshot.test.json");
    std::fs::write(&path, test.to_string()).expect("write the rule test");
    let out = run(Command::new("promtool").arg("test").arg("rules").arg(&path));
    assert!(
        out.status.success(),
        "the snapshot alert does not fire as expected:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rebalancing alerts, evaluated by `promtool test rules`: a migration the rebalancer
/// could not create fires `IronvisorRebalanceMoveFailed` (created and recommended moves do
/// not); evaluations that only ever end with the budget spent fire
/// `IronvisorHostsStayImbalanced`, and one that balanced or moved within the two hours
/// keeps it quiet.
#[test]
fn rebalancing_alerts_fire_on_a_failed_move_and_on_hosts_left_imbalanced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = rules_file(dir.path());
    let series = |name: &str, labels: &str, values: &str| json!({"series": format!("{name}{{{labels}}}"), "values": values});
    let moves = "ironvisor_rebalance_moves_total";
    let evals = "ironvisor_rebalance_evaluations_total";
    let failed_move = json!({
        "interval": "1m",
        "input_series": [
            series(moves, r#"mode="Automatic",result="create_failed""#, "0 0 1 1 1"),
            series(moves, r#"mode="Automatic",result="created""#, "0 3 5 6 9"),
            series(moves, r#"mode="DryRun",result="recommended""#, "0 2 4 6 8"),
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "IronvisorRebalanceMoveFailed", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "IronvisorRebalanceMoveFailed",
             "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": {
                "summary": "The rebalancer could not create 1 migrations in the last 30 minutes",
                "description": "The operator decided to move VMs off a busy host but the API server refused the migrations. The operator's log says why (RBAC, admission, the API server down); the hosts stay as imbalanced as they were."}}]}
        ]
    });
    // Five-minute evaluations for three hours: only budget_exhausted in the first, one
    // balanced evaluation at minute 30 in the second.
    let stuck = json!({
        "interval": "5m",
        "input_series": [
            series(evals, r#"outcome="budget_exhausted""#, "0+1x36"),
            series(evals, r#"outcome="balanced""#, "0x36"),
        ],
        "alert_rule_test": [
            {"eval_time": "1h", "alertname": "IronvisorHostsStayImbalanced",
             "exp_alerts": [{"exp_labels": {"severity": "info"}, "exp_annotations": {
                "summary": "The hosts have stayed imbalanced for two hours and the rebalancer cannot act",
                "description": "Every rebalancing evaluation of the last two hours found the hosts' load spread beyond the RebalancePolicy's threshold but moved nothing: its migration budget was spent, or no single move would improve the spread (VMs too large, hosts full). Add capacity, raise the budget or move VMs by hand (ivctl migrate)."}}]}
        ]
    });
    let recovered = json!({
        "interval": "5m",
        "input_series": [
            series(evals, r#"outcome="budget_exhausted""#, "0+1x36"),
            series(evals, r#"outcome="moved""#, "0x5 1x31"),
        ],
        "alert_rule_test": [
            {"eval_time": "1h", "alertname": "IronvisorHostsStayImbalanced", "exp_alerts": []}
        ]
    });
    let test = json!({
        "rule_files": [rules.file_name().and_then(|n| n.to_str()).expect("name")],
        "evaluation_interval": "1m",
        "tests": [failed_move, stuck, recovered]
    });
    let path = dir.path().join("rebalance.test.json");
    std::fs::write(&path, test.to_string()).expect("write the rule test");
    let out = run(Command::new("promtool").arg("test").arg("rules").arg(&path));
    assert!(
        out.status.success(),
        "the rebalancing alerts do not fire as expected:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alerts_cover_host_down_crash_loops_quota_and_reconcile_errors() {
    let text = std::fs::read_to_string(monitoring().join("prometheusrule.yaml")).expect("rules");
    for alert in [
        "IronvisorHostDown",
        "IronvisorVMCrashLooping",
        "IronvisorQuotaAlmostFull",
        "IronvisorReconcileErrorsRising",
        "IronvisorBudgetAlmostSpent",
        "IronvisorBudgetExceeded",
        "IronvisorMigrationFailed",
        "IronvisorMigrationStuck",
        "IronvisorRebalanceMoveFailed",
        "IronvisorHostsStayImbalanced",
    ] {
        assert!(text.contains(&format!("alert: {alert}")), "{alert} missing");
    }
}

#[test]
fn grafana_dashboard_shows_hosts_vms_quota_and_latency() {
    let text =
        std::fs::read_to_string(monitoring().join("ironvisor-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in [
        "Hosts ready",
        "VMs by phase",
        "Tenant usage against quota",
        "Reconcile latency p95",
        "Migrations by result",
        "Migrations running by phase",
        "Migration duration and downtime p95",
        "Migration data remaining",
        "Rebalancing moves",
        "Rebalancing evaluations and host imbalance",
        "Snapshots, merges and restores",
        "Snapshot, merge and restore duration p95",
        "Snapshot size p50 and p95",
    ] {
        assert!(
            titles.contains(&wanted),
            "panel {wanted:?} missing from {titles:?}"
        );
    }
}

fn argo_health(object: &Value) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let obj = dir.path().join("obj.json");
    std::fs::write(&obj, serde_json::to_vec(object).expect("json")).expect("write object");
    let harness = dir.path().join("harness.lua");
    std::fs::write(
        &harness,
        r#"local cjson = require("cjson")
local f = assert(io.open(arg[2])); obj = cjson.decode(f:read("*a")); f:close()
local hs = assert(loadfile(arg[1]))()
io.write(hs.status, "|", hs.message or "")"#,
    )
    .expect("write harness");
    let out = run(Command::new("lua5.1")
        .arg(&harness)
        .arg(monitoring().join("argocd/virtualmachine-health.lua"))
        .arg(&obj));
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let (status, message) = text.split_once('|').expect("status|message");
    (status.to_owned(), message.to_owned())
}

fn vm(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
           "metadata": {"name": "web", "namespace": "demo", "generation": 2},
           "spec": spec, "status": status})
}

fn cond(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-11-25T08:00:00Z"})
}

#[test]
fn argo_sees_a_running_ready_vm_as_healthy() {
    let o = vm(
        json!({"runStrategy": "Always"}),
        json!({"phase": "Running", "observedGeneration": 2,
        "conditions": [cond("Ready", "True", "Running", ""), cond("Scheduled", "True", "Scheduled", "")]}),
    );
    assert_eq!(argo_health(&o), ("Healthy".into(), "Running".into()));
}

#[test]
fn argo_sees_a_vm_over_quota_as_degraded_with_the_quota_message() {
    let msg = "exceeded quota: demo-compute, requested: vcpus=4, used: vcpus=6, limited: vcpus=8";
    let o = vm(
        json!({}),
        json!({"phase": "Pending",
        "conditions": [cond("Scheduled", "False", "QuotaExceeded", msg)]}),
    );
    assert_eq!(
        argo_health(&o),
        ("Degraded".into(), format!("QuotaExceeded: {msg}"))
    );
}

#[test]
fn argo_waits_while_the_spec_change_is_not_observed() {
    let o = vm(
        json!({}),
        json!({"phase": "Running", "observedGeneration": 1,
        "conditions": [cond("Ready", "True", "Running", "")]}),
    );
    assert_eq!(argo_health(&o).0, "Progressing");
}

#[test]
fn argo_sees_a_halted_stopped_vm_as_suspended_and_a_lost_host_as_degraded() {
    let halted = vm(
        json!({"runStrategy": "Halted"}),
        json!({"phase": "Stopped", "observedGeneration": 2,
        "conditions": [cond("Ready", "False", "Stopped", "")]}),
    );
    assert_eq!(argo_health(&halted).0, "Suspended");
    let lost = vm(
        json!({}),
        json!({"phase": "Unknown", "observedGeneration": 2,
        "conditions": [cond("Ready", "False", "HostLost", "host-1 stopped reporting")]}),
    );
    assert_eq!(
        argo_health(&lost),
        (
            "Degraded".into(),
            "HostLost: host-1 stopped reporting".into()
        )
    );
    let mut new = vm(json!({}), Value::Null);
    new.as_object_mut().expect("object").remove("status");
    assert_eq!(argo_health(&new).0, "Progressing");
}

#[test]
fn argocd_configmap_carries_the_tested_script() {
    let lua = std::fs::read_to_string(monitoring().join("argocd/virtualmachine-health.lua"))
        .expect("lua");
    let cm_text = std::fs::read_to_string(monitoring().join("argocd/argocd-cm.yaml")).expect("cm");
    let cm = yaml_documents(&cm_text).remove(0);
    let embedded = cm["data"]["resource.customizations.health.ironvisor.io_VirtualMachine"]
        .as_str()
        .expect("key");
    assert_eq!(
        embedded.trim(),
        lua.trim(),
        "argocd-cm.yaml is out of date with virtualmachine-health.lua"
    );
}
