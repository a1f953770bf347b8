//! The accrued usage and cost of the current month as Prometheus gauges, per tenant (with its
//! descendants). Labels: the tenant (an object name, bounded by the tenants that exist; the
//! series of a deleted tenant go at the next pass) and a resource from a fixed set.

use prometheus::{GaugeVec, Opts, Registry};

use ironvisor_crds::usage::UsageTotals;
use ironvisor_crds::utilization::{RightsizingReport, Verdict};

/// The `resource` label values of `ironvisor_usage_hours`.
pub const RESOURCES: [&str; 5] = ["vm", "vcpu", "memory_gib", "storage_gib", "reserved_vm"];

/// The `resource` label values of the right-sizing allocated/used gauges.
pub const SIZED: [&str; 3] = ["vcpu", "memory_gib", "storage_gib"];

/// The usage gauges.
#[derive(Clone)]
pub struct UsageMetrics {
    /// Hours (GiB-hours for memory and storage) this month: tenant, resource.
    pub hours: GaugeVec,
    /// Cost this month in the price list's currency: tenant.
    pub cost: GaugeVec,
    /// Monthly budget: tenant.
    pub budget: GaugeVec,
    /// Running VMs by right-sizing verdict: tenant, verdict.
    pub verdicts: GaugeVec,
    /// What the right-sizing recommendations save per month: tenant.
    pub saving: GaugeVec,
    /// What the running VMs hold: tenant, resource.
    pub allocated: GaugeVec,
    /// What they use (CPU on average, memory in use, disk allocated): tenant, resource.
    pub used: GaugeVec,
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
        let verdicts = GaugeVec::new(
            Opts::new(
                "ironvisor_rightsizing_vms",
                "Running VMs of a tenant (its own) by right-sizing verdict: idle, oversized, right_sized, unknown (leader only)",
            ),
            &["tenant", "verdict"],
        )?;
        let saving = GaugeVec::new(
            Opts::new(
                "ironvisor_rightsizing_monthly_saving",
                "What following a tenant's right-sizing recommendations saves per month, in the price list's currency (leader only)",
            ),
            &["tenant"],
        )?;
        let allocated = GaugeVec::new(
            Opts::new(
                "ironvisor_rightsizing_allocated",
                "What a tenant's running VMs hold: vCPUs, memory GiB, storage GiB (leader only)",
            ),
            &["tenant", "resource"],
        )?;
        let used = GaugeVec::new(
            Opts::new(
                "ironvisor_rightsizing_used",
                "What a tenant's running VMs use over the right-sizing window: vCPUs on average, memory GiB in use, storage GiB allocated on hosts (leader only)",
            ),
            &["tenant", "resource"],
        )?;
        for g in [
            &hours, &cost, &budget, &verdicts, &saving, &allocated, &used,
        ] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(Self {
            hours,
            cost,
            budget,
            verdicts,
            saving,
            allocated,
            used,
        })
    }

    /// Set a tenant's right-sizing figures.
    pub fn set_rightsizing(&self, tenant: &str, r: &RightsizingReport) {
        for v in Verdict::ALL {
            let n = r.vms.iter().filter(|x| x.verdict == v).count();
            self.verdicts
                .with_label_values(&[tenant, v.as_str()])
                .set(n as f64);
        }
        if let Some(s) = r
            .monthly_saving
            .as_deref()
            .and_then(|s| s.parse::<f64>().ok())
        {
            self.saving.with_label_values(&[tenant]).set(s);
        }
        const GIB: f64 = 1024.0;
        let allocated = [
            r.allocated.vcpus as f64,
            r.allocated.memory_mib as f64 / GIB,
            r.allocated_storage_mib as f64 / GIB,
        ];
        let used = [
            r.used.cpu_millicores as f64 / 1000.0,
            r.used.memory_mib as f64 / GIB,
            r.disk_allocated_mib as f64 / GIB,
        ];
        for (i, resource) in SIZED.iter().enumerate() {
            self.allocated
                .with_label_values(&[tenant, resource])
                .set(allocated[i]);
            self.used
                .with_label_values(&[tenant, resource])
                .set(used[i]);
        }
    }

    /// Forget every tenant (before a pass sets the current ones).
    pub fn reset(&self) {
        self.hours.reset();
        self.cost.reset();
        self.budget.reset();
        self.verdicts.reset();
        self.saving.reset();
        self.allocated.reset();
        self.used.reset();
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
