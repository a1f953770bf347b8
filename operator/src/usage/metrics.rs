//! The accrued usage and cost of the current month as Prometheus gauges, per tenant (with its
//! descendants). Labels: the tenant (an object name, bounded by the tenants that exist; the
//! series of a deleted tenant go at the next pass) and a resource from a fixed set.

use prometheus::{GaugeVec, Opts, Registry};

use ironvisor_crds::usage::UsageTotals;

/// The `resource` label values of `ironvisor_usage_hours`.
pub const RESOURCES: [&str; 5] = ["vm", "vcpu", "memory_gib", "storage_gib", "reserved_vm"];

/// The usage gauges.
#[derive(Clone)]
pub struct UsageMetrics {
    /// Hours (GiB-hours for memory and storage) this month: tenant, resource.
    pub hours: GaugeVec,
    /// Cost this month in the price list's currency: tenant.
    pub cost: GaugeVec,
    /// Monthly budget: tenant.
    pub budget: GaugeVec,
}

impl UsageMetrics {
    /// Create and register the gauges.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let hours = GaugeVec::new(
            Opts::new(
                "ironvisor_usage_hours",
                "Usage this UTC month by tenant with its descendants: VM-, vCPU-, memory GiB-, storage GiB- and halted (reserved) VM-hours (leader only)",
            ),
            &["tenant", "resource"],
        )?;
        let cost = GaugeVec::new(
            Opts::new(
                "ironvisor_usage_cost",
                "Cost this UTC month by tenant with its descendants, in the price list's currency (leader only)",
            ),
            &["tenant"],
        )?;
        let budget = GaugeVec::new(
            Opts::new(
                "ironvisor_usage_budget",
                "Monthly budget of a tenant with its descendants, from the price list (leader only)",
            ),
            &["tenant"],
        )?;
        registry.register(Box::new(hours.clone()))?;
        registry.register(Box::new(cost.clone()))?;
        registry.register(Box::new(budget.clone()))?;
        Ok(Self {
            hours,
            cost,
            budget,
        })
    }

    /// Forget every tenant (before a pass sets the current ones).
    pub fn reset(&self) {
        self.hours.reset();
        self.cost.reset();
        self.budget.reset();
    }

    /// Set a tenant's figures.
    pub fn set(&self, tenant: &str, total: &UsageTotals, cost: Option<f64>, budget: Option<f64>) {
        const H: f64 = 3600.0;
        const GIB_H: f64 = 1024.0 * 3600.0;
        let values = [
            total.running_seconds as f64 / H,
            total.vcpu_seconds as f64 / H,
            total.memory_mib_seconds as f64 / GIB_H,
            total.storage_mib_seconds as f64 / GIB_H,
            total.reserved_seconds as f64 / H,
        ];
        for (resource, v) in RESOURCES.iter().zip(values) {
            self.hours.with_label_values(&[tenant, resource]).set(v);
        }
        if let Some(c) = cost {
            self.cost.with_label_values(&[tenant]).set(c);
        }
        if let Some(b) = budget {
            self.budget.with_label_values(&[tenant]).set(b);
        }
    }
}
