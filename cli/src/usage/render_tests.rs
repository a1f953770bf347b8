//! Rendering of usage reports, on hand-made reports.

use ironvisor_crds::UsageReport;
use ironvisor_crds::usage::{
    CostSummary, DayUsage, UsageReportSpec, UsageReportStatus, UsageTotals,
};

use super::args::parse_month;
use super::render::{csv, html, rows, table};

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
    let page = html(&rows(&[report("a<script>")], true), "Usage of a<script>");
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
