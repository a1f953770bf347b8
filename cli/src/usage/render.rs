//! `ivctl usage` output: usage reports as a table, CSV or a self-contained HTML page an IT
//! manager can mail to a department. Pure: reports in, text out.

use std::fmt::Write as _;

use ironvisor_crds::UsageReport;
use ironvisor_crds::usage::{UsageReportStatus, UsageTotals};

/// One line of a report: a scope (total, own, a day or a VM) and its figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The tenant.
    pub tenant: String,
    /// `YYYY-MM`.
    pub period: String,
    /// total (with descendants), own, child (a direct child's part of the total), day or vm.
    pub kind: &'static str,
    /// The child tenant, day (`YYYY-MM-DD`) or VM (`namespace/name`); empty for total and own.
    pub name: String,
    /// The figures.
    pub usage: UsageTotals,
    /// Cost, where known (total, own and children only).
    pub cost: Option<String>,
    /// Currency of the cost.
    pub currency: Option<String>,
}

/// The rows of reports: each tenant's total and own usage, and with `detail` its days and VMs.
pub fn rows(reports: &[UsageReport], detail: bool) -> Vec<Row> {
    let mut out = Vec::new();
    for r in reports {
        let s = r.status.clone().unwrap_or_default();
        let row = |kind, name: String, usage, cost: Option<String>| Row {
            tenant: r.spec.tenant.clone(),
            period: r.spec.period.clone(),
            kind,
            name,
            usage,
            currency: cost
                .as_ref()
                .and(s.cost.as_ref().map(|c| c.currency.clone())),
            cost,
        };
        out.push(row(
            "total",
            String::new(),
            s.total,
            s.cost.as_ref().map(|c| c.total.clone()),
        ));
        out.push(row(
            "own",
            String::new(),
            s.own,
            s.cost.as_ref().map(|c| c.own.clone()),
        ));
        for c in &s.children {
            out.push(row("child", c.tenant.clone(), c.usage, c.cost.clone()));
        }
        if detail {
            details(&s, &mut |kind, name, usage| {
                out.push(row(kind, name, usage, None))
            });
        }
    }
    out
}

fn details(s: &UsageReportStatus, push: &mut dyn FnMut(&'static str, String, UsageTotals)) {
    for d in &s.days {
        push("day", d.date.clone(), d.usage);
    }
    for v in &s.vms {
        let gone = if v.deleted { " (deleted)" } else { "" };
        push("vm", format!("{}/{}{gone}", v.namespace, v.name), v.usage);
    }
}

fn figures(u: &UsageTotals) -> [String; 5] {
    let s = u.summary();
    [
        s.vm_hours,
        s.vcpu_hours,
        s.memory_gib_hours,
        s.storage_gib_hours,
        s.reserved_vm_hours,
    ]
}

const HEADERS: [&str; 11] = [
    "TENANT",
    "PERIOD",
    "ROW",
    "NAME",
    "VM-HOURS",
    "VCPU-HOURS",
    "MEM-GIB-HOURS",
    "STORAGE-GIB-HOURS",
    "HALTED-VM-HOURS",
    "COST",
    "CURRENCY",
];

fn cells(r: &Row) -> Vec<String> {
    let mut c = vec![
        r.tenant.clone(),
        r.period.clone(),
        r.kind.to_owned(),
        r.name.clone(),
    ];
    c.extend(figures(&r.usage));
    c.push(r.cost.clone().unwrap_or_default());
    c.push(r.currency.clone().unwrap_or_default());
    c
}

/// Aligned columns for a terminal.
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(cells).collect();
    columns(&HEADERS, &cells)
}

fn csv_field(s: &str) -> String {
    // A leading = + - @ would be a formula in a spreadsheet: quote it and neutralise it.
    let risky = s.starts_with(['=', '+', '-', '@']);
    if risky || s.contains([',', '"', '\n', '\r']) {
        let body = if risky { format!("'{s}") } else { s.to_owned() };
        format!("\"{}\"", body.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// RFC 4180 CSV with a header line.
pub fn csv(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(cells).collect();
    csv_of(&HEADERS, &cells)
}

/// `s` safe inside HTML text and attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A self-contained HTML page (no scripts, no external resources); `extra` is more HTML
/// (already escaped) after the usage table, e.g. the right-sizing section.
pub fn html(rows: &[Row], title: &str, extra: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:2px 8px;text-align:right}}\
         td:nth-child(-n+4),th{{text-align:left}}</style></head>\n<body><h1>{t}</h1>\n",
        t = escape(title)
    );
    let cells: Vec<Vec<String>> = rows.iter().map(cells).collect();
    out.push_str(&html_table(&HEADERS, &cells));
    out.push_str("<p>Hours are UTC; memory and storage in GiB-hours. Halted VM-hours are reservations of admitted VMs that were not running, shown apart and not priced. A child row is that child's part of the total, with its own descendants.</p>\n");
    out.push_str(extra);
    out.push_str("</body></html>\n");
    out
}

/// An HTML table of `headers` and `rows`, every cell escaped.
pub fn html_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>\n<tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", escape(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// `headers` and `rows` as aligned columns.
pub fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let all: Vec<Vec<String>> = std::iter::once(headers.iter().map(|h| h.to_string()).collect())
        .chain(rows.iter().cloned())
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            all.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &all {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `headers` and `rows` as RFC 4180 CSV (formula-safe).
pub fn csv_of(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = headers
        .iter()
        .map(|h| h.to_lowercase().replace('-', "_"))
        .collect::<Vec<_>>()
        .join(",");
    out.push_str("\r\n");
    for r in rows {
        let line: Vec<String> = r.iter().map(|c| csv_field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}
