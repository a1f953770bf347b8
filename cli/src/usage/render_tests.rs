//! Rendering of usage reports, on hand-made reports.

use ironvisor_crds::UsageReport;
use ironvisor_crds::usage::{
    ChildUsage, CostSummary, DayUsage, UsageReportSpec, UsageReportStatus, UsageTotals,
};
use ironvisor_crds::utilization::{RightsizingReport, Size, Verdict, VmRightsizing};

use super::args::parse_month;
use super::cmd::rightsizing_html;
use super::render::{csv, csv_of, html, rows, table};
use super::rightsizing;

fn report(tenant: &str) -> UsageReport {
    let own = UsageTotals {
        running_seconds: 7200,
        vcpu_seconds: 14400,
        memory_mib_seconds: 1024 * 3600,
        reserved_seconds: 1800,
        storage_mib_seconds: 10240 * 9000,
        ..Default::default()
    };
    let mut r = UsageReport::new(
        &format!("{tenant}.2026-11"),
        UsageReportSpec {
            tenant: tenant.into(),
            period: "2026-11".into(),
        },
    );
    r.status = Some(UsageReportStatus {
        own,
        total: own,
        days: vec![DayUsage {
            date: "2026-11-05".into(),
            usage: own,
        }],
        cost: Some(CostSummary {
            currency: "EUR".into(),
            own: "1.25".into(),
            total: "1.25".into(),
            budget: None,
        }),
        ..Default::default()
    });
    r
}

#[test]
fn the_table_shows_hours_and_cost_per_scope() {
    let text = table(&rows(&[report("finance")], true));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TENANT"));
    assert!(lines[1].contains("total") && lines[1].contains("2.000") && lines[1].contains("4.000"));
    assert!(lines[1].contains("1.25") && lines[1].contains("EUR"));
    assert!(lines[3].contains("day") && lines[3].contains("2026-11-05"));
    assert_eq!(lines.len(), 4, "total, own and one day: {text}");
}

#[test]
fn csv_quotes_what_needs_it_and_defuses_spreadsheet_formulas() {
    let text = csv(&rows(&[report("=cmd|calc")], false));
    let mut lines = text.split("\r\n");
    assert_eq!(
        lines.next(),
        Some(
            "tenant,period,row,name,vm_hours,vcpu_hours,mem_gib_hours,storage_gib_hours,halted_vm_hours,cost,currency"
        )
    );
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("\"'=cmd|calc\",2026-11,total,,2.000,4.000,1.000,25.000,0.500,1.25,EUR"),
        "{first}"
    );
}

#[test]
fn html_is_self_contained_and_escapes_names() {
    let page = html(
        &rows(&[report("a<script>")], true),
        "Usage of a<script>",
        "",
    );
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("a&lt;script&gt;"));
    assert!(!page.contains("http"), "no external resources");
}

#[test]
fn months_are_yyyy_mm() {
    assert!(parse_month("2026-11").is_ok());
    for bad in [
        "2026-13", "2026-00", "26-11", "2026-1", "2026/11", "2026-1x", "2026-+1",
    ] {
        assert!(parse_month(bad).is_err(), "{bad}");
    }
}

fn with_children_and_rightsizing(tenant: &str) -> UsageReport {
    let mut r = report(tenant);
    let s = r.status.as_mut().unwrap();
    s.children.push(ChildUsage {
        tenant: "payroll".into(),
        usage: UsageTotals {
            running_seconds: 3600,
            ..Default::default()
        },
        cost: Some("0.50".into()),
    });
    let vm = |name: &str, verdict, recommended, saving: Option<&str>| VmRightsizing {
        namespace: "fin".into(),
        name: name.into(),
        verdict,
        allocated: Size {
            vcpus: 4,
            memory_mib: 8192,
        },
        allocated_storage_mib: 10240,
        measured_seconds: 604800,
        cpu_avg_millicores: 40,
        cpu_p95_millicores: 1500,
        guest_memory_used_mib: None,
        host_memory_rss_mib: 900,
        disk_allocated_mib: 1200,
        recommended,
        monthly_saving: saving.map(str::to_owned),
        reason: "because".into(),
    };
    s.rightsizing = Some(RightsizingReport {
        window_seconds: 604800,
        allocated: Size {
            vcpus: 8,
            memory_mib: 16384,
        },
        idle: 1,
        oversized: 1,
        monthly_saving: Some("250.00".into()),
        currency: Some("EUR".into()),
        vms: vec![
            vm(
                "=idle",
                Verdict::Idle,
                Some(Size::default()),
                Some("204.40"),
            ),
            vm(
                "big",
                Verdict::Oversized,
                Some(Size {
                    vcpus: 2,
                    memory_mib: 8192,
                }),
                Some("45.60"),
            ),
        ],
        ..Default::default()
    });
    r
}

#[test]
fn a_child_row_shows_its_part_of_the_total() {
    let text = table(&rows(&[with_children_and_rightsizing("finance")], false));
    let child = text.lines().find(|l| l.contains("child")).expect(&text);
    assert!(child.contains("payroll") && child.contains("1.000") && child.contains("0.50"));
}

#[test]
fn rightsizing_rows_say_verdict_recommendation_and_saving() {
    let reports = [with_children_and_rightsizing("finance")];
    let rows = rightsizing::rows(&reports);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][3], "idle");
    assert_eq!(rows[0][11], "halt");
    assert_eq!(rows[1][11], "2 vCPU / 8192 MiB");
    assert_eq!((rows[1][6].as_str(), rows[1][7].as_str()), ("0.04", "1.50"));
    assert_eq!(
        rows[1][8], "900 (host)",
        "no guest figure: the host's, marked"
    );
    let csv = csv_of(&rightsizing::HEADERS, &rows);
    assert!(csv.starts_with("tenant,period,vm,verdict,"), "{csv}");
    assert!(
        csv.contains("\"'fin/=idle\"") || csv.contains(",fin/=idle,"),
        "{csv}"
    );
    let summary = rightsizing::summary(&reports).join("");
    assert!(
        summary.contains("1 idle, 1 oversized") && summary.contains("250.00 EUR"),
        "{summary}"
    );
}

#[test]
fn the_mailable_page_has_usage_children_and_rightsizing() {
    let reports = [with_children_and_rightsizing("fin<ance>")];
    let page = html(&rows(&reports, true), "Usage", &rightsizing_html(&reports));
    assert!(page.contains("<h2>Right-sizing</h2>"));
    assert!(page.contains("<td>child</td><td>payroll</td>"));
    assert!(page.contains("<td>halt</td>"));
    assert!(!page.contains("fin<ance>") && page.contains("fin&lt;ance&gt;"));
    assert_eq!(
        rightsizing_html(&[report("t")]),
        "",
        "nothing measured, no section"
    );
}
