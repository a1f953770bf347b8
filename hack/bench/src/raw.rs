//! The baseline: the same domains the agent would define, defined and started straight
//! through libvirt (the `virt` crate, blocking calls on the calling thread). The domain XML
//! comes from the agent's own pure builder, so both sides run identical domains.

use anyhow::Context as _;
use ironvisor_agent::domain_xml::{self, DomainType, Owner, PlanInput};
use ironvisor_crds::VirtualMachineSpec;
use std::path::Path;
use std::time::{Duration, Instant};
use virt::connect::Connect;

/// Namespace used in the raw domains' names, so they never collide with the agent's.
pub const RAW_NAMESPACE: &str = "ivbench-raw";

/// A domain to define: its libvirt name and XML.
#[derive(Clone, Debug)]
pub struct RawDomain {
    /// libvirt name.
    pub name: String,
    /// Full domain XML.
    pub xml: String,
}

/// The agent's domain for a VM `name` with `spec` (TCG, the VM directory under `dir`).
pub fn domain(spec: &VirtualMachineSpec, name: &str, dir: &Path) -> anyhow::Result<RawDomain> {
    let uid = format!("00000000-0000-4000-8000-{:012x}", fnv(name));
    let vm_dir = dir.join(&uid);
    // The agent creates the VM's directory before defining (the console log goes there).
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    let input = PlanInput {
        owner: Owner {
            uid,
            namespace: RAW_NAMESPACE.into(),
            name: name.into(),
            generation: 1,
            // No agent's node: no agent's orphan sweep ever takes the baseline's domains.
            node: "ironvisor-bench-raw".into(),
        },
        spec,
        domain_type: DomainType::Qemu,
        vm_dir: &vm_dir,
        kernel: None,
        initrd: None,
    };
    let plan = domain_xml::build_plan(&input).context("the agent refuses the spec")?;
    let rendered = domain_xml::render(&plan);
    Ok(RawDomain {
        name: plan.name,
        xml: rendered.xml,
    })
}

/// A stable 48-bit hash for a fake uid (FNV-1a).
fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h & 0xffff_ffff_ffff
}

/// What the baseline measured.
#[derive(Clone, Debug)]
pub struct RawRun {
    /// Define + start of each domain (the calls alone).
    pub latencies: Vec<Duration>,
    /// From the moment each domain was due to the end of its start: the calls plus any wait
    /// behind earlier domains, the counterpart of "creation → Running".
    pub since_due: Vec<Duration>,
    /// First define to last start.
    pub wall: Duration,
}

/// Define and start each domain on `conn`, the i-th at `i × interval` from the start (or
/// back to back when `interval` is zero). Blocking.
pub fn define_and_start(
    conn: &Connect,
    domains: &[RawDomain],
    interval: Duration,
) -> anyhow::Result<RawRun> {
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(domains.len());
    let mut since_due = Vec::with_capacity(domains.len());
    for (i, d) in domains.iter().enumerate() {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        let dom = conn
            .define_domain_xml(&d.xml)
            .map_err(|e| anyhow::anyhow!("defining {}: {}", d.name, e.message()))?;
        dom.create()
            .map_err(|e| anyhow::anyhow!("starting {}: {}", d.name, e.message()))?;
        latencies.push(t.elapsed());
        since_due.push(due.elapsed());
    }
    Ok(RawRun {
        latencies,
        since_due,
        wall: start.elapsed(),
    })
}

/// Destroy and undefine the named domains (those that exist). Listing first rather than
/// looking each name up keeps libvirt from printing "Domain not found" for every absent one.
pub fn remove(conn: &Connect, names: &[String]) {
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    for d in conn.list_all_domains(0).unwrap_or_default() {
        if d.name().is_ok_and(|n| wanted.contains(n.as_str())) {
            let _ = d.destroy();
            let _ = d.undefine();
        }
    }
}

/// Open `uri`, run [`define_and_start`], remove the domains again. Blocking.
pub fn run(uri: &str, domains: &[RawDomain], interval: Duration) -> anyhow::Result<RawRun> {
    let conn = Connect::open(Some(uri)).with_context(|| format!("connecting to {uri}"))?;
    let names: Vec<String> = domains.iter().map(|d| d.name.clone()).collect();
    remove(&conn, &names);
    let out = define_and_start(&conn, domains, interval);
    remove(&conn, &names);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VirtualMachineSpec {
        serde_json::from_value(crate::api::tiny_spec()).expect("spec")
    }

    #[test]
    fn raw_domains_are_the_agents_domains_under_their_own_namespace() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = domain(&spec(), "vm-1", dir.path()).expect("domain");
        assert!(d.name.contains(RAW_NAMESPACE), "{}", d.name);
        assert!(d.xml.contains("<domain type=\"qemu\""), "{}", d.xml);
        let again = domain(&spec(), "vm-1", dir.path()).expect("domain");
        assert_eq!(d.xml, again.xml, "deterministic");
        assert_ne!(
            domain(&spec(), "vm-2", dir.path()).expect("domain").name,
            d.name
        );
    }

    #[test]
    fn the_baseline_defines_and_starts_on_the_test_driver() {
        let dir = tempfile::tempdir().expect("tmp");
        let domains: Vec<RawDomain> = (0..3)
            .map(|i| domain(&spec(), &format!("vm-{i}"), dir.path()).expect("domain"))
            .collect();
        let conn = Connect::open(Some("test:///default")).expect("test driver");
        let run = define_and_start(&conn, &domains, Duration::from_millis(5)).expect("run");
        assert_eq!(run.latencies.len(), 3);
        assert!(
            run.since_due
                .iter()
                .zip(&run.latencies)
                .all(|(q, c)| q >= c)
        );
        assert!(
            run.wall >= Duration::from_millis(10),
            "paced: {:?}",
            run.wall
        );
        let d = conn
            .lookup_domain_by_name(&domains[0].name)
            .expect("defined");
        assert!(d.is_active().expect("state"));
        let names: Vec<String> = domains.iter().map(|d| d.name.clone()).collect();
        remove(&conn, &names);
        let left: Vec<String> = conn
            .list_all_domains(0)
            .expect("list")
            .iter()
            .filter_map(|d| d.name().ok())
            .filter(|n| names.contains(n))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
