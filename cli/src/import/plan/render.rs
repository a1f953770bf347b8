//! The plan for people: Markdown, and HTML with the same summary table. Pure.

use std::fmt::Write;

use super::model::{Plan, Readiness};

/// `1h 05m`, `12m`, `40s`.
pub fn duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m"),
        _ => format!("{h}h {m:02}m"),
    }
}

/// `12.5 GiB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
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

/// The summary table's rows: (label, value).
pub fn summary_rows(p: &Plan) -> Vec<(String, String)> {
    let s = &p.summary;
    vec![
        ("VMs planned".into(), s.vms.to_string()),
        (
            "Ready / needs work / blocked".into(),
            format!("{} / {} / {}", s.ready, s.needs_work, s.blocked),
        ),
        (
            "Scheduled in waves".into(),
            format!("{} in {} wave(s)", s.scheduled, s.waves),
        ),
        (
            "Not scheduled".into(),
            (s.vms - s.scheduled.min(s.vms)).to_string(),
        ),
        (
            "Capacity or quota shortfalls".into(),
            p.violations.len().to_string(),
        ),
        (
            "vCPUs / memory / storage moved".into(),
            format!(
                "{} / {} / {}",
                s.vcpus,
                bytes(s.memory_bytes),
                bytes(s.storage_bytes)
            ),
        ),
        (
            "Estimated import time".into(),
            format!(
                "{} at {}/s ({})",
                duration(s.estimated_seconds),
                bytes(p.throughput.bytes_per_second),
                p.throughput.detail
            ),
        ),
        ("Maintenance window".into(), duration(p.window_seconds)),
        (
            "Automation".into(),
            format!(
                "{} % ({} of {} steps automated)",
                p.steps.automated_percent, p.steps.automated, p.steps.total
            ),
        ),
    ]
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown report.
pub fn markdown(p: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Migration plan\n\n| | |\n|---|---|");
    for (k, v) in summary_rows(p) {
        let _ = writeln!(o, "| {k} | {} |", md_cell(&v));
    }
    let _ = writeln!(
        o,
        "\nInputs: {}. Order: {}.\n",
        p.inputs.join("; "),
        p.order
    );
    md_waves(&mut o, p);
    md_unscheduled(&mut o, p);
    md_findings(&mut o, p);
    md_inventory(&mut o, p);
    o
}

/// One table per wave.
fn md_waves(o: &mut String, p: &Plan) {
    for w in &p.waves {
        let _ = writeln!(
            o,
            "## Wave {} — {} VM(s), about {}\n",
            w.number,
            w.vms.len(),
            duration(w.estimated_seconds)
        );
        if !w.groups.is_empty() {
            let _ = writeln!(o, "Application groups: {}.\n", w.groups.join(", "));
        }
        let _ = writeln!(
            o,
            "| VM | Tenant / namespace | vCPUs | Memory | Disks | Host | Time | Readiness |\n|---|---|---|---|---|---|---|---|"
        );
        for vm in p.vms.iter().filter(|v| v.wave == Some(w.number)) {
            let _ = writeln!(
                o,
                "| {} | {} / {} | {} | {} MiB | {} | {} | {} | {} |",
                md_cell(&vm.name),
                vm.tenant.as_deref().unwrap_or("-"),
                vm.namespace.as_deref().unwrap_or("-"),
                vm.sizing.vcpus,
                vm.sizing.memory_mib,
                bytes(vm.sizing.storage_bytes),
                vm.host.as_deref().unwrap_or("-"),
                duration(vm.estimated_seconds),
                vm.readiness.label()
            );
        }
        let _ = writeln!(o);
    }
}

/// What is not scheduled and why, and the shortfalls.
fn md_unscheduled(o: &mut String, p: &Plan) {
    let unscheduled: Vec<_> = p.vms.iter().filter(|v| v.unscheduled.is_some()).collect();
    if !unscheduled.is_empty() {
        let _ = writeln!(o, "## Not scheduled\n\n| VM | Why |\n|---|---|");
        for vm in unscheduled {
            let _ = writeln!(
                o,
                "| {} | {} |",
                md_cell(&vm.name),
                md_cell(vm.unscheduled.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(o);
    }
    if !p.violations.is_empty() {
        let _ = writeln!(
            o,
            "## Quota and capacity shortfalls\n\n| VM | Tenant | Limit | Resource | Needed | Left |\n|---|---|---|---|---|---|"
        );
        for v in &p.violations {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                md_cell(&v.vm),
                v.tenant.as_deref().unwrap_or("-"),
                md_cell(&v.limit),
                v.resource,
                v.needed,
                v.left
            );
        }
        let _ = writeln!(o);
    }
}

/// Every finding of every VM that is not ready.
fn md_findings(o: &mut String, p: &Plan) {
    let _ = writeln!(o, "## Findings\n");
    for vm in p.vms.iter().filter(|v| v.readiness != Readiness::Ready) {
        let _ = writeln!(o, "### {} ({})\n", vm.name, vm.readiness.label());
        for f in &vm.findings {
            let _ = writeln!(
                o,
                "- **{:?}** {} — {}{}",
                f.severity,
                f.title,
                if f.detail.is_empty() {
                    String::new()
                } else {
                    format!("{}. ", f.detail)
                },
                f.remedy
            );
        }
        let _ = writeln!(o);
    }
}

/// Steps, columns, cells not used, notes.
fn md_inventory(o: &mut String, p: &Plan) {
    let _ = writeln!(
        o,
        "## Steps\n\n| Step | Automated | Manual |\n|---|---|---|"
    );
    for s in &p.steps.steps {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            md_cell(&s.title),
            s.automated,
            s.manual
        );
    }
    let _ = writeln!(o, "\n## Inventory columns\n");
    for c in &p.columns {
        let _ = writeln!(
            o,
            "- {}: {} recognised, {} known and not used; not recognised: {}",
            c.sheet,
            c.recognised.len(),
            c.known_unused.len(),
            if c.unrecognised.is_empty() {
                "none".into()
            } else {
                c.unrecognised.join(", ")
            }
        );
    }
    if !p.missing_tabs.is_empty() {
        let _ = writeln!(o, "- tabs missing: {}", p.missing_tabs.join(", "));
    }
    if !p.problems.is_empty() {
        let _ = writeln!(o, "\n## Cells not used\n");
        for pr in &p.problems {
            let _ = writeln!(o, "- {} row {}: {}", pr.origin, pr.row, pr.message);
        }
    }
    if !p.notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for n in &p.notes {
            let _ = writeln!(o, "- {n}");
        }
    }
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML report: the summary table, the waves, what is not scheduled.
pub fn html(p: &Plan) -> String {
    let mut o = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Migration plan</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}th{background:#eee}.blocked{color:#a00}.needs-work{color:#a60}</style></head><body>\n<h1>Migration plan</h1>\n<table class=\"summary\">\n",
    );
    for (k, v) in summary_rows(p) {
        let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
    }
    o.push_str("</table>\n");
    for w in &p.waves {
        let _ = writeln!(
            o,
            "<h2>Wave {} — {} VM(s), about {}</h2>\n<table><tr><th>VM</th><th>Tenant</th><th>Namespace</th><th>vCPUs</th><th>Memory MiB</th><th>Disks</th><th>Host</th><th>Time</th><th>Readiness</th></tr>",
            w.number,
            w.vms.len(),
            duration(w.estimated_seconds)
        );
        for vm in p.vms.iter().filter(|v| v.wave == Some(w.number)) {
            let class = vm.readiness.label().replace(' ', "-");
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                esc(&vm.name),
                esc(vm.tenant.as_deref().unwrap_or("-")),
                esc(vm.namespace.as_deref().unwrap_or("-")),
                vm.sizing.vcpus,
                vm.sizing.memory_mib,
                bytes(vm.sizing.storage_bytes),
                esc(vm.host.as_deref().unwrap_or("-")),
                duration(vm.estimated_seconds),
                vm.readiness.label()
            );
        }
        o.push_str("</table>\n");
    }
    let unscheduled: Vec<_> = p.vms.iter().filter(|v| v.unscheduled.is_some()).collect();
    if !unscheduled.is_empty() {
        o.push_str("<h2>Not scheduled</h2>\n<table><tr><th>VM</th><th>Why</th></tr>\n");
        for vm in unscheduled {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&vm.name),
                esc(vm.unscheduled.as_deref().unwrap_or(""))
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<p>The full report, with every finding, is plan.md; the data is plan.json.</p>\n</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(40), "40s");
        assert_eq!(duration(720), "12m");
        assert_eq!(duration(3900), "1h 05m");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(esc("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
