//! A tenant's month report as a ledger: accrue every VM of the tenant up to an instant,
//! close a month and carry its markers into the next, roll children up into parents. Pure;
//! the controller reads the VMs and writes the report.

use ironvisor_crds::usage::{
    DayUsage, LineageUsage, PricedUsage, RunRecord, UsageReportStatus, UsageTotals, VmUsage,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::accrue::{Advance, Marker, advance};
use super::calendar::Month;
use super::pricing::{Pricing, cost_nanos};

/// What the ledger needs to know of one VM of the tenant.
#[derive(Clone, Debug)]
pub struct VmFacts<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// uid.
    pub uid: &'a str,
    /// The agent's run log (`status.runLog`).
    pub log: &'a [RunRecord],
    /// When deletion was requested (`metadata.deletionTimestamp`): usage ends there.
    pub deleted_at: Option<Timestamp>,
}

/// The marker a VM entry holds.
pub fn marker_of(vm: &VmUsage) -> Marker {
    Marker {
        accounted_through: vm.accounted_through.0,
        holding: vm.holding.clone(),
    }
}

/// A new month's ledger: nothing used yet, accrued through the month's start.
pub fn open(month: Month) -> UsageReportStatus {
    UsageReportStatus {
        accrued_through: Some(Time(month.start())),
        ..UsageReportStatus::default()
    }
}

/// The ledger of the month after `prev`'s (which must be closed): the VMs still there,
/// with their markers at the boundary and nothing used yet.
pub fn carry_over(prev: &UsageReportStatus, next: Month) -> UsageReportStatus {
    let mut s = open(next);
    s.vms = prev
        .vms
        .iter()
        .filter(|v| !v.deleted)
        .map(|v| VmUsage {
            usage: UsageTotals::default(),
            ..v.clone()
        })
        .collect();
    s
}

/// Whether the ledger of `month` is accrued to the month's end.
pub fn is_closed(s: &UsageReportStatus, month: Month) -> bool {
    s.accrued_through
        .as_ref()
        .is_some_and(|t| t.0 >= month.end())
}

/// Accrue every VM of the tenant up to `to` (at most the month's end). `ancestors` is the
/// tenant's chain of parents now; VMs in the ledger that are no longer listed are gone, and
/// are kept as deleted at the point they were accounted through.
pub fn accrue_all(
    s: &mut UsageReportStatus,
    month: Month,
    vms: &[VmFacts<'_>],
    to: Timestamp,
    ancestors: &[String],
) {
    accrue_priced(s, month, vms, to, ancestors, None);
}

/// [`accrue_all`], pricing the usage by `pricing` when there is a price list.
pub fn accrue_priced(
    s: &mut UsageReportStatus,
    month: Month,
    vms: &[VmFacts<'_>],
    to: Timestamp,
    ancestors: &[String],
    pricing: Option<&Pricing>,
) {
    let to = to.min(month.end());
    let since = s.accrued_through.as_ref().map_or(month.start(), |t| t.0);
    if to <= since {
        return;
    }
    let cuts = pricing.map(Pricing::cuts).unwrap_or_default();
    let book_in = Booking {
        ancestors,
        pricing,
        cuts: &cuts,
    };
    for vm in vms {
        accrue_vm(s, vm, (since, to), &book_in);
    }
    for entry in s.vms.iter_mut().filter(|e| !e.deleted) {
        if !vms.iter().any(|v| v.uid == entry.uid) {
            entry.deleted = true;
            entry.holding = None;
        }
    }
    s.accrued_through = Some(Time(to));
}

/// How an advance is booked.
struct Booking<'a> {
    ancestors: &'a [String],
    pricing: Option<&'a Pricing>,
    cuts: &'a [Timestamp],
}

fn accrue_vm(
    s: &mut UsageReportStatus,
    vm: &VmFacts<'_>,
    (since, to): (Timestamp, Timestamp),
    b: &Booking<'_>,
) {
    let idx = match s.vms.iter().position(|e| e.uid == vm.uid) {
        Some(i) if s.vms[i].deleted => return,
        Some(i) => i,
        None => {
            if vm.log.is_empty() {
                return;
            }
            // First sight: accounted from the ledger's last checkpoint on, so a VM that
            // comes from another tenant's namespace is not counted twice.
            s.vms.push(VmUsage {
                namespace: vm.namespace.to_owned(),
                name: vm.name.to_owned(),
                uid: vm.uid.to_owned(),
                usage: UsageTotals::default(),
                accounted_through: Time(since),
                holding: None,
                deleted: false,
            });
            s.vms.len() - 1
        }
    };
    let vm_to = vm.deleted_at.map_or(to, |d| d.min(to));
    let adv = advance(&marker_of(&s.vms[idx]), vm.log, vm_to, b.cuts);
    book(s, idx, &adv, b);
    let entry = &mut s.vms[idx];
    if vm.deleted_at.is_some_and(|d| d <= to) {
        entry.deleted = true;
        entry.holding = None;
    }
}

/// Book an advance: the VM's entry, the days, the tenant's own total and its lineage.
fn book(s: &mut UsageReportStatus, idx: usize, adv: &Advance, b: &Booking<'_>) {
    let mut cost: i128 = 0;
    for ((_, host, epoch), u) in &adv.usage {
        let rate = b
            .pricing
            .zip(*epoch)
            .and_then(|(p, e)| Some((p, p.rate_at(host, e)?)));
        if let Some((p, rate)) = rate {
            cost += cost_nanos(u, rate);
            match s
                .priced
                .iter_mut()
                .find(|x| x.rate == *rate && x.currency == p.currency)
            {
                Some(x) => x.usage.add(u),
                None => s.priced.push(PricedUsage {
                    rate: rate.clone(),
                    currency: p.currency.clone(),
                    usage: *u,
                }),
            }
        }
    }
    for ((day, _, _), u) in &adv.usage {
        let date = day.to_string();
        match s.days.binary_search_by(|d| d.date.cmp(&date)) {
            Ok(i) => s.days[i].usage.add(u),
            Err(i) => s.days.insert(i, DayUsage { date, usage: *u }),
        }
    }
    let total = adv.total();
    let entry = &mut s.vms[idx];
    entry.usage.add(&total);
    entry.accounted_through = Time(adv.marker.accounted_through);
    entry.holding = adv.marker.holding.clone();
    if total.is_zero() {
        return;
    }
    s.own.add(&total);
    let cost = i64::try_from(cost).unwrap_or(i64::MAX);
    match s.lineages.iter_mut().find(|l| l.ancestors == b.ancestors) {
        Some(l) => {
            l.usage.add(&total);
            l.cost_nanos = l.cost_nanos.saturating_add(cost);
        }
        None => s.lineages.push(LineageUsage {
            ancestors: b.ancestors.to_vec(),
            usage: total,
            cost_nanos: cost,
        }),
    }
}

/// A tenant's total for a period: its own usage and every usage incurred by a tenant that had
/// it as an ancestor at the time. `reports` are (tenant, ledger) of one period.
pub fn roll_up<'a>(
    tenant: &str,
    reports: impl IntoIterator<Item = (&'a str, &'a UsageReportStatus)>,
) -> UsageTotals {
    roll_up_with_cost(tenant, reports).0
}

/// [`roll_up`], and the cost in nano-units of the descendants' part (the tenant's own cost
/// is [`own_cost`]).
pub fn roll_up_with_cost<'a>(
    tenant: &str,
    reports: impl IntoIterator<Item = (&'a str, &'a UsageReportStatus)>,
) -> (UsageTotals, i128) {
    let mut t = UsageTotals::default();
    let mut cost: i128 = 0;
    for (owner, s) in reports {
        if owner == tenant {
            t.add(&s.own);
            continue;
        }
        for l in s
            .lineages
            .iter()
            .filter(|l| l.ancestors.iter().any(|a| a == tenant))
        {
            t.add(&l.usage);
            cost += i128::from(l.cost_nanos);
        }
    }
    (t, cost)
}

/// Each direct child's share of `tenant`'s total: the usage (and its cost in nano-units)
/// incurred under `tenant` by the child or the child's descendants, by the tree as it stood
/// then. With the tenant's own usage they sum to [`roll_up`]. Sorted by child.
pub fn children_of<'a>(
    tenant: &str,
    reports: impl IntoIterator<Item = (&'a str, &'a UsageReportStatus)>,
) -> Vec<(String, UsageTotals, i128)> {
    let mut out: std::collections::BTreeMap<String, (UsageTotals, i128)> = Default::default();
    for (owner, s) in reports {
        if owner == tenant {
            continue;
        }
        for l in &s.lineages {
            let Some(k) = l.ancestors.iter().position(|a| a == tenant) else {
                continue;
            };
            let child = if k == 0 { owner } else { &l.ancestors[k - 1] };
            let e = out.entry(child.to_owned()).or_default();
            e.0.add(&l.usage);
            e.1 += i128::from(l.cost_nanos);
        }
    }
    out.into_iter().map(|(c, (u, n))| (c, u, n)).collect()
}

/// The cost of a tenant's own usage in nano-units, exactly from its priced usage.
pub fn own_cost(s: &UsageReportStatus) -> i128 {
    s.priced.iter().map(|p| cost_nanos(&p.usage, &p.rate)).sum()
}
