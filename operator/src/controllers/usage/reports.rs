//! Reading and checkpointing one tenant's `UsageReport`s. Every write replaces the status
//! with the `resourceVersion` it was computed from, so two writers (a leader that lost its
//! Lease and the new one) can never both add the same seconds: the second gets a conflict
//! and recomputes from what the first wrote.

use ironvisor_crds::UsageReport;
use ironvisor_crds::labels;
use ironvisor_crds::usage::{RunRecord, USAGE_NAMESPACE, UsageReportSpec, UsageReportStatus};
use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use super::UsageError;
use super::facts::VmRecord;
use crate::usage::ledger::{
    VmFacts, accrue_priced, carry_over, children_of, is_closed, open, own_cost, roll_up_with_cost,
};
use crate::usage::pricing::{NANOS, Pricing, format_cents, nanos};
use crate::usage::rightsizing::{self, Policy, VmInput};
use crate::usage::{Month, report_name};
use ironvisor_crds::usage::ChildUsage;
use ironvisor_crds::utilization::Size;

/// Label on a report: the UTC month (`YYYY-MM`) it covers.
pub const PERIOD_LABEL: &str = "ironvisor.io/usage-period";

/// The reports' API.
pub fn api(client: &Client) -> Api<UsageReport> {
    Api::namespaced(client.clone(), USAGE_NAMESPACE)
}

fn facts<'a>(vms: &'a [&'a VmRecord]) -> Vec<VmFacts<'a>> {
    vms.iter()
        .map(|v| VmFacts {
            namespace: &v.namespace,
            name: &v.name,
            uid: &v.uid,
            log: &v.run_log,
            deleted_at: v.deleting_at,
        })
        .collect()
}

/// One tenant's checkpoint input.
pub struct TenantFacts<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Its parents now, nearest first.
    pub ancestors: &'a [String],
    /// Its VMs.
    pub vms: &'a [&'a VmRecord],
    /// The price list, if any.
    pub pricing: Option<&'a Pricing>,
    /// How right-sizing judges.
    pub policy: &'a Policy,
}

/// The tenant's VMs that run now, as right-sizing sees them (size and host from their last
/// run record).
fn running<'a>(vms: &'a [&'a VmRecord]) -> Vec<VmInput<'a>> {
    vms.iter()
        .filter(|v| v.deleting_at.is_none())
        .filter_map(|v| {
            let last = v.run_log.last().filter(|r| r.running)?;
            Some(VmInput {
                namespace: &v.namespace,
                name: &v.name,
                node: &last.node,
                allocated: Size {
                    vcpus: last.vcpus,
                    memory_mib: last.memory_mib,
                },
                storage_mib: last.storage_mib,
                utilization: v.utilization.as_ref(),
            })
        })
        .collect()
}

/// Write `status` over `report`'s, conditional on the version it was read at.
async fn write(
    api: &Api<UsageReport>,
    mut report: UsageReport,
    status: UsageReportStatus,
) -> Result<UsageReport, UsageError> {
    if report.status.as_ref() == Some(&status) {
        return Ok(report);
    }
    let name = report.metadata.name.clone().unwrap_or_default();
    report.status = Some(status);
    report.metadata.managed_fields = None;
    api.replace_status(&name, &PostParams::default(), &report)
        .await
        .map_err(|e| UsageError::Api(format!("checkpointing usage report {name}"), e))
}

async fn get(api: &Api<UsageReport>, name: &str) -> Result<Option<UsageReport>, UsageError> {
    api.get_opt(name)
        .await
        .map_err(|e| UsageError::Api(format!("reading usage report {name}"), e))
}

/// The ledger a new month's report starts from: the previous month's closed one carried
/// over (closing it first if this tenant's VMs were last accounted before its end), or an
/// empty one.
async fn starting_ledger(
    api: &Api<UsageReport>,
    f: &TenantFacts<'_>,
    month: Month,
) -> Result<UsageReportStatus, UsageError> {
    let prev_month = month.prev();
    let prev_name = report_name(f.tenant, prev_month)?;
    let Some(prev) = get(api, &prev_name).await? else {
        return Ok(open(month));
    };
    let mut status = prev.status.clone().unwrap_or_else(|| open(prev_month));
    if !is_closed(&status, prev_month) {
        accrue_priced(
            &mut status,
            prev_month,
            &facts(f.vms),
            prev_month.end(),
            f.ancestors,
            f.pricing,
        );
        status = write(api, prev, status).await?.status.unwrap_or_default();
    }
    Ok(carry_over(&status, month))
}

/// Accrue `f`'s tenant up to `now` in the report of `now`'s month, creating it when missing.
/// Returns the report as written.
/// A checkpoint that changes only the accrued-through time is written at most once per
/// `every`; one that applies a new run record, sees a new VM or settles a deletion is
/// written at once. Skipping is safe: the next write accrues the same seconds.
pub async fn checkpoint(
    client: &Client,
    f: &TenantFacts<'_>,
    now: Timestamp,
    every: std::time::Duration,
) -> Result<UsageReport, UsageError> {
    let api = api(client);
    let month = Month::of(now);
    let name = report_name(f.tenant, month)?;
    let report = match get(&api, &name).await? {
        Some(r) => r,
        None => create(&api, &name, f.tenant, month).await?,
    };
    let mut status = match report.status.clone() {
        Some(s) => s,
        // Created but never checkpointed (the operator stopped in between).
        None => starting_ledger(&api, f, month).await?,
    };
    let before = status.clone();
    accrue_priced(
        &mut status,
        month,
        &facts(f.vms),
        now,
        f.ancestors,
        f.pricing,
    );
    status.rightsizing = rightsizing::report(&running(f.vms), f.policy, now, f.pricing);
    if report.status.is_some() && !due(&before, &status, every) {
        return Ok(report);
    }
    write(&api, report, status).await
}

/// Whether a checkpoint from `before` to `after` is worth a write now.
pub fn due(
    before: &UsageReportStatus,
    after: &UsageReportStatus,
    every: std::time::Duration,
) -> bool {
    let marks = |s: &UsageReportStatus| -> Vec<(String, Option<RunRecord>, bool)> {
        s.vms
            .iter()
            .map(|v| (v.uid.clone(), v.holding.clone(), v.deleted))
            .collect()
    };
    let at = |s: &UsageReportStatus| s.accrued_through.as_ref().map(|t| t.0);
    let elapsed = match (at(before), at(after)) {
        (Some(b), Some(a)) => a.duration_since(b).unsigned_abs() >= every,
        _ => true,
    };
    elapsed || marks(before) != marks(after) || before.rightsizing != after.rightsizing
}

async fn create(
    api: &Api<UsageReport>,
    name: &str,
    tenant: &str,
    month: Month,
) -> Result<UsageReport, UsageError> {
    let report = UsageReport {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(USAGE_NAMESPACE.to_owned()),
            labels: Some(
                [
                    (labels::TENANT.to_owned(), tenant.to_owned()),
                    (PERIOD_LABEL.to_owned(), month.label()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: UsageReportSpec {
            tenant: tenant.to_owned(),
            period: month.label(),
        },
        status: None,
    };
    match api.create(&PostParams::default(), &report).await {
        Ok(r) => Ok(r),
        // Another writer made it a moment ago: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => get(api, name)
            .await?
            .ok_or_else(|| UsageError::Vanished(name.to_owned())),
        Err(e) => Err(UsageError::Api(format!("creating usage report {name}"), e)),
    }
}

/// Every report.
pub async fn all(client: &Client) -> Result<Vec<UsageReport>, UsageError> {
    api(client)
        .list(&kube::api::ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| UsageError::Api("listing the usage reports".into(), e))
}

/// The price list's currency and budgets, for the cost summaries.
pub struct Prices<'a> {
    /// Currency.
    pub currency: &'a str,
    /// Budgets: tenant → amount in nano-units.
    pub budgets: std::collections::BTreeMap<&'a str, i128>,
}

impl<'a> Prices<'a> {
    /// From a price list's spec (a malformed budget is left out).
    pub fn of(spec: &'a ironvisor_crds::PriceListSpec) -> Self {
        Prices {
            currency: &spec.currency,
            budgets: spec
                .budgets
                .iter()
                .filter_map(|b| Some((b.tenant.as_str(), nanos(&b.monthly)?)))
                .collect(),
        }
    }
}

/// Write each report's roll-up (its total with its descendants', and its cost) where it
/// changed; `reports` are one period's. With `metrics` (the current period's), publish them.
pub async fn write_roll_ups(
    client: &Client,
    reports: Vec<UsageReport>,
    prices: Option<&Prices<'_>>,
    metrics: Option<&crate::usage::metrics::UsageMetrics>,
) -> Result<(), UsageError> {
    let api = api(client);
    let ledgers: Vec<(String, UsageReportStatus)> = reports
        .iter()
        .map(|r| (r.spec.tenant.clone(), r.status.clone().unwrap_or_default()))
        .collect();
    if let Some(m) = metrics {
        m.reset();
    }
    for report in reports {
        let Some(mut status) = report.status.clone() else {
            continue;
        };
        let tenant = report.spec.tenant.clone();
        let (total, children_cost) =
            roll_up_with_cost(&tenant, ledgers.iter().map(|(t, s)| (t.as_str(), s)));
        status.total = total;
        status.total_summary = Some(total.summary());
        status.children = children_of(&tenant, ledgers.iter().map(|(t, s)| (t.as_str(), s)))
            .into_iter()
            .map(|(child, usage, cost)| ChildUsage {
                tenant: child,
                usage,
                cost: prices.map(|_| format_cents(cost)),
            })
            .collect();
        let own = own_cost(&status);
        let budget = prices.and_then(|p| p.budgets.get(tenant.as_str()).copied());
        status.cost = prices.map(|p| ironvisor_crds::usage::CostSummary {
            currency: p.currency.to_owned(),
            own: format_cents(own),
            total: format_cents(own + children_cost),
            budget: budget.map(format_cents),
        });
        if let Some(metrics) = metrics {
            let as_units = |n: i128| n as f64 / NANOS as f64;
            metrics.set(
                &tenant,
                &total,
                prices.map(|_| as_units(own + children_cost)),
                budget.map(as_units),
            );
            if let Some(r) = &status.rightsizing {
                metrics.set_rightsizing(&tenant, r);
            }
        }
        write(&api, report, status).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> UsageReportStatus {
        UsageReportStatus {
            accrued_through: Some(Time(Timestamp::from_second(s).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn only_time_passing_is_written_once_per_interval_and_a_change_at_once() {
        let every = std::time::Duration::from_secs(60);
        assert!(!due(&at(0), &at(59), every));
        assert!(due(&at(0), &at(60), every));
        let mut deleted = at(1);
        deleted.vms.push(ironvisor_crds::usage::VmUsage {
            namespace: "ns".into(),
            name: "v".into(),
            uid: "u".into(),
            usage: Default::default(),
            accounted_through: Time(Timestamp::from_second(1).unwrap()),
            holding: None,
            deleted: true,
        });
        assert!(
            due(&at(0), &deleted, every),
            "a settled deletion is written at once"
        );
    }
}
