//! Glue of `ivctl usage`: read the reports, render them.

use ironvisor_crds::UsageReport;
use ironvisor_crds::usage::USAGE_NAMESPACE;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use kube::Api;
use kube::api::ListParams;

use super::args::{UsageArgs, UsageFormat};
use super::render;
use super::rightsizing;
use crate::cluster::{ClusterArgs, ClusterError};

/// Why `ivctl usage` failed.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The cluster could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A request failed (a tenant owner may get their own reports by name only: pass --tenant).
    #[error("reading usage reports failed (tenant owners may read their own: pass --tenant)")]
    Api(#[from] kube::Error),
    /// No report for the tenant and month.
    #[error(
        "no usage report {name} in {USAGE_NAMESPACE}: the tenant has no usage recorded for that month"
    )]
    NoReport {
        /// `<tenant>.<month>`.
        name: String,
    },
    /// JSON rendering failed.
    #[error("cannot render the reports as JSON")]
    Json(#[source] serde_json::Error),
    /// No async runtime.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Run `ivctl usage` on a fresh runtime; the exit code.
pub fn run(cluster: &ClusterArgs, a: &UsageArgs) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UsageError::Runtime)
        .and_then(|rt| rt.block_on(usage(cluster, a)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::vm::cmd::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The current UTC month, `YYYY-MM`.
fn this_month() -> String {
    Timestamp::now()
        .to_zoned(TimeZone::UTC)
        .strftime("%Y-%m")
        .to_string()
}

/// Run `ivctl usage`.
pub async fn usage(cluster: &ClusterArgs, a: &UsageArgs) -> Result<(), UsageError> {
    let client = cluster.client().await?;
    let api: Api<UsageReport> = Api::namespaced(client, USAGE_NAMESPACE);
    let month = a.month.clone().unwrap_or_else(this_month);
    let reports = match &a.tenant {
        Some(t) => {
            let name = format!("{t}.{month}");
            match api.get_opt(&name).await? {
                Some(r) => vec![r],
                None => return Err(UsageError::NoReport { name }),
            }
        }
        None => {
            let mut items = api.list(&ListParams::default()).await?.items;
            items.retain(|r| r.spec.period == month);
            items.sort_by(|x, y| x.spec.tenant.cmp(&y.spec.tenant));
            items
        }
    };
    let title = match &a.tenant {
        Some(t) => format!("Usage of {t} in {month}"),
        None => format!("Usage in {month}"),
    };
    let text = if a.rightsizing {
        rightsizing_text(&reports, a.output, &title)?
    } else {
        usage_text(&reports, a, &title)?
    };
    print!("{text}");
    Ok(())
}

fn usage_text(reports: &[UsageReport], a: &UsageArgs, title: &str) -> Result<String, UsageError> {
    let rows = render::rows(reports, a.detail || a.tenant.is_some());
    Ok(match a.output {
        UsageFormat::Table => render::table(&rows),
        UsageFormat::Csv => render::csv(&rows),
        UsageFormat::Html => render::html(&rows, title, &rightsizing_html(reports)),
        UsageFormat::Json => serde_json::to_string_pretty(reports).map_err(UsageError::Json)?,
    })
}

/// The right-sizing section of the HTML report; empty when nothing was measured.
pub fn rightsizing_html(reports: &[UsageReport]) -> String {
    let rows = rightsizing::rows(reports);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2>Right-sizing</h2>\n");
    for line in rightsizing::summary(reports) {
        out.push_str(&format!("<p>{}</p>\n", render::escape(&line)));
    }
    out.push_str(&render::html_table(&rightsizing::HEADERS, &rows));
    out
}

fn rightsizing_text(
    reports: &[UsageReport],
    format: UsageFormat,
    title: &str,
) -> Result<String, UsageError> {
    let rows = rightsizing::rows(reports);
    Ok(match format {
        UsageFormat::Table => {
            let mut t = render::columns(&rightsizing::HEADERS, &rows);
            for line in rightsizing::summary(reports) {
                t.push_str(&line);
                t.push('\n');
            }
            t
        }
        UsageFormat::Csv => render::csv_of(&rightsizing::HEADERS, &rows),
        // The mailable page always carries both parts.
        UsageFormat::Html => render::html(
            &render::rows(reports, true),
            title,
            &rightsizing_html(reports),
        ),
        UsageFormat::Json => {
            let sections: Vec<serde_json::Value> = reports
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "tenant": r.spec.tenant,
                        "period": r.spec.period,
                        "rightsizing": r.status.as_ref().and_then(|s| s.rightsizing.as_ref()),
                    })
                })
                .collect();
            serde_json::to_string_pretty(&sections).map_err(UsageError::Json)?
        }
    })
}
