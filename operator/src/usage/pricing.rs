//! Turning usage into money: which rate of the price list applies to a second of usage on a
//! host, and what usage priced by a rate costs, in exact integer nano-units. Pure.
//!
//! Only running compute and storage are charged; a halted VM's reservation is shown apart,
//! not priced.

use std::collections::BTreeMap;

use ironvisor_crds::pricing::{HOURS_PER_MONTH, PriceListSpec, Rate};
use ironvisor_crds::usage::UsageTotals;
use jiff::Timestamp;

/// One billion nano-units make one unit of the currency.
pub const NANOS: i128 = 1_000_000_000;

/// A price list ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Pricing {
    /// The currency.
    pub currency: String,
    /// Rates by effective time, oldest first.
    rates: Vec<Rate>,
    /// Host → class, from the Hypervisors' class label.
    classes: BTreeMap<String, String>,
}

impl Pricing {
    /// The price list `spec` with the host classes `classes` (host → class).
    pub fn new(spec: &PriceListSpec, classes: BTreeMap<String, String>) -> Pricing {
        let mut rates = spec.rates.clone();
        rates.sort_by_key(|r| r.effective_from.0);
        Pricing {
            currency: spec.currency.clone(),
            rates,
            classes,
        }
    }

    /// Every instant a rate takes effect: usage intervals are cut there.
    pub fn cuts(&self) -> Vec<Timestamp> {
        let mut c: Vec<Timestamp> = self.rates.iter().map(|r| r.effective_from.0).collect();
        c.dedup();
        c
    }

    /// The rate for usage on `node` at `t`: the latest effective one for the host's class,
    /// else the latest effective one without a class.
    pub fn rate_at(&self, node: &str, t: Timestamp) -> Option<&Rate> {
        let class = self.classes.get(node);
        let latest = |want: Option<&String>| {
            self.rates
                .iter()
                .rev()
                .find(|r| r.effective_from.0 <= t && r.host_class.as_ref() == want)
        };
        class.and_then(|c| latest(Some(c))).or_else(|| latest(None))
    }
}

/// A decimal string (`12.345`, up to 9 decimals) in nano-units; None if malformed.
pub fn nanos(s: &str) -> Option<i128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || s.ends_with('.')
        || frac.len() > 9
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i128 = int.parse().ok()?;
    let mut f = frac.to_owned();
    while f.len() < 9 {
        f.push('0');
    }
    Some(whole.checked_mul(NANOS)? + f.parse::<i128>().ok()?)
}

/// What `u` costs at `r`, in nano-units (rounded down once).
pub fn cost_nanos(u: &UsageTotals, r: &Rate) -> i128 {
    let (Some(cpu), Some(mem), Some(disk)) = (
        nanos(&r.vcpu_hour),
        nanos(&r.memory_gib_hour),
        nanos(&r.storage_gib_month),
    ) else {
        return 0;
    };
    let month = i128::from(HOURS_PER_MONTH);
    // Over a common denominator: seconds per hour × MiB per GiB × hours per month.
    let numerator = i128::from(u.vcpu_seconds) * cpu * 1024 * month
        + i128::from(u.memory_mib_seconds) * mem * month
        + i128::from(u.storage_mib_seconds) * disk;
    numerator / (3600 * 1024 * month)
}

/// Nano-units as an amount rounded to the cent (half up), e.g. `12.35`.
pub fn format_cents(nanos: i128) -> String {
    let cents = (nanos + 5_000_000) / 10_000_000;
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rate(from: &str, class: Option<&str>, cpu: &str) -> Rate {
        Rate {
            effective_from: Time(from.parse().unwrap()),
            host_class: class.map(str::to_owned),
            vcpu_hour: cpu.into(),
            memory_gib_hour: "0.01".into(),
            storage_gib_month: "0.1".into(),
        }
    }

    #[test]
    fn decimals_parse_exactly_and_garbage_is_refused() {
        assert_eq!(nanos("0.021"), Some(21_000_000));
        assert_eq!(nanos("12"), Some(12 * NANOS));
        assert_eq!(nanos("0.000000001"), Some(1));
        for bad in ["", ".5", "1.", "-1", "1e3", "0.0000000001", "1,5", "١"] {
            assert_eq!(nanos(bad), None, "{bad:?}");
        }
        assert_eq!(format_cents(12_345_000_000), "12.35");
        assert_eq!(format_cents(0), "0.00");
    }

    #[test]
    fn an_hour_of_each_resource_costs_its_rate() {
        let r = rate("2026-11-01T00:00:00Z", None, "0.04");
        let u = UsageTotals {
            vcpu_seconds: 2 * 3600,
            memory_mib_seconds: 1024 * 3600,
            storage_mib_seconds: 1024 * 3600 * 730,
            ..Default::default()
        };
        // 2 vCPU-hours at 0.04 + 1 GiB-hour at 0.01 + 1 GiB-month at 0.1.
        assert_eq!(cost_nanos(&u, &r), 80_000_000 + 10_000_000 + 100_000_000);
    }

    #[test]
    fn the_latest_effective_rate_of_the_hosts_class_applies_else_the_general_one() {
        let spec = PriceListSpec {
            currency: "EUR".into(),
            host_class_label: Some("ironvisor.io/host-class".into()),
            rates: vec![
                rate("2026-12-01T00:00:00Z", None, "0.05"),
                rate("2026-11-01T00:00:00Z", None, "0.04"),
                rate("2026-11-15T00:00:00Z", Some("gpu"), "0.90"),
            ],
            budgets: vec![],
        };
        let p = Pricing::new(&spec, [("h-gpu".to_string(), "gpu".to_string())].into());
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let cpu = |node, t| p.rate_at(node, at(t)).map(|r| r.vcpu_hour.clone());
        assert_eq!(
            cpu("h1", "2026-10-31T23:59:59Z"),
            None,
            "nothing before the first"
        );
        assert_eq!(cpu("h1", "2026-11-30T23:59:59Z").as_deref(), Some("0.04"));
        assert_eq!(cpu("h1", "2026-12-01T00:00:00Z").as_deref(), Some("0.05"));
        assert_eq!(
            cpu("h-gpu", "2026-11-14T00:00:00Z").as_deref(),
            Some("0.04")
        );
        assert_eq!(
            cpu("h-gpu", "2026-12-02T00:00:00Z").as_deref(),
            Some("0.90")
        );
        assert_eq!(p.cuts().len(), 3);
    }
}
