//! A real Prometheus (Debian's package) on loopback scrapes a running agent and operator, and
//! every alert expression of `manifests/monitoring/prometheusrule.yaml` evaluates without
//! error against what it scraped; every metric the alerts name is exported (error counters
//! excepted: they have series only once an error of a category happened).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::system::{System, free_port, guest_cache, tiny_guest, wait_for};
use ironvisor_tests::{repo_root, run, yaml_documents};
use serde_json::Value;

fn try_query(port: u16, path: &str, expr: Option<&str>) -> Result<Value, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5"]);
    if let Some(expr) = expr {
        cmd.arg("--data-urlencode").arg(format!("query={expr}"));
    }
    let out = run(cmd.arg(format!("http://127.0.0.1:{port}{path}")));
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "Prometheus answered {path} with no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn query(port: u16, path: &str, expr: Option<&str>) -> Value {
    try_query(port, path, expr).unwrap_or_else(|e| panic!("{e}"))
}

fn alert_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo_root().join("manifests/monitoring/prometheusrule.yaml"))
            .expect("rules");
    let rule = yaml_documents(&text).remove(0);
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            if let (Some(alert), Some(expr)) = (r["alert"].as_str(), r["expr"].as_str()) {
                out.push((alert.to_owned(), expr.to_owned()));
            }
        }
    }
    out
}

/// `ironvisor_*` metric names in an expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ironvisor_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("(ironvisor_quota_used / (ironvisor_quota_hard > 0)) > 0.9"),
        BTreeSet::from([
            "ironvisor_quota_used".to_owned(),
            "ironvisor_quota_hard".to_owned()
        ])
    );
}

#[test]
fn prometheus_scrapes_the_agent_and_operator_and_every_alert_evaluates() {
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, operator_port) = sys.operator();
    let agent = sys.agent(
        &format!("e2e-prom-{}", std::process::id()),
        "test:///default",
        &images,
    );
    // A tenant at its quota and a running VM, so that per-VM and quota series exist.
    let ns = format!("e2eprom{}", std::process::id());
    sys.tenant(&ns, &ns, "{virtualMachines: 1}");
    // A price list with a budget, so that the usage cost and budget series exist.
    sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: PriceList\nmetadata: {{name: default}}\n\
         spec: {{currency: EUR, rates: [{{effectiveFrom: '2026-01-01T00:00:00Z', vcpuHour: '0.04', \
         memoryGiBHour: '0.01', storageGiBMonth: '0.1'}}], budgets: [{{tenant: {ns}, monthly: '100'}}]}}\n"
    ));
    sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\n\
         metadata: {{name: p, namespace: {ns}}}\n\
         spec: {{memory: {{size: 64Mi}}, disks: [{{name: d, size: 16Mi, source: {{blank: {{}}}}}}]}}\n"
    ));
    sys.wait_phase(&ns, "p", "Running", Duration::from_secs(60));

    let port = free_port();
    let dir = sys.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: ironvisor-operator\n  static_configs: [{{targets: ['127.0.0.1:{operator_port}']}}]\n\
             - job_name: ironvisor-agent\n  static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            agent.metrics_port
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus (hack/install-deps.sh installs Debian's package)"),
    );

    wait_for(
        "Prometheus to scrape both targets up",
        Duration::from_secs(60),
        || {
            let out = std::panic::catch_unwind(|| query(port, "/api/v1/query", Some("up")))
                .map_err(|_| "Prometheus not answering yet".to_owned())?;
            let up: Vec<(String, String)> = out["data"]["result"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            (
                                r["metric"]["job"].as_str().unwrap_or("").to_owned(),
                                r["value"][1].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if up.len() == 2 && up.iter().all(|(_, v)| v == "1") {
                Ok(())
            } else {
                Err(format!("{up:?}"))
            }
        },
    );
    // A few scrapes, so rate() and increase() have two samples.
    std::thread::sleep(Duration::from_secs(3));

    let names: BTreeSet<String> = query(port, "/api/v1/label/__name__/values", None)["data"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    for (alert, expr) in alert_exprs() {
        let answer = query(port, "/api/v1/query", Some(&expr));
        assert_eq!(
            answer["status"], "success",
            "{alert}: {expr:?} does not evaluate: {answer}"
        );
        for name in metric_names(&expr) {
            if name.ends_with("_errors_total") {
                continue;
            }
            assert!(
                names.contains(&name),
                "{alert} uses {name}, which neither the agent nor the operator exports; \
                 scraped: {names:?}"
            );
        }
    }
    // The series behind the dashboard's panels are there too.
    for name in [
        "ironvisor_host_ready",
        "ironvisor_vms",
        "ironvisor_quota_used",
        "ironvisor_quota_hard",
        "ironvisor_vm_cpu_seconds_total",
        "ironvisor_agent_reconcile_duration_seconds_bucket",
        "ironvisor_usage_hours",
        "ironvisor_migrations_total",
        "ironvisor_migrations_active",
        "ironvisor_migration_duration_seconds_bucket",
        "ironvisor_migration_downtime_seconds_bucket",
        "ironvisor_migration_data_remaining_bytes",
    ] {
        assert!(names.contains(name), "{name} not scraped: {names:?}");
    }
}
