//! Writing a plan: `plan.json`, `plan.md`, `plan.html`, and one directory per wave
//! (`wave-01/` ...) with the VirtualMachine manifests the importer's builder made and a
//! `00-tenants.yaml` with the Tenants those VMs need that the target does not have yet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ironvisor_crds::{Tenant, TenantSpec};

use super::model::Plan;
use super::render;

/// Why the plan could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file could not be written.
    #[error("{0}: cannot write")]
    Io(PathBuf, #[source] std::io::Error),
    /// A document could not be rendered.
    #[error("cannot render {0}: {1}")]
    Render(&'static str, String),
}

fn write(path: &Path, text: &str) -> Result<(), OutputError> {
    std::fs::write(path, text).map_err(|e| OutputError::Io(path.into(), e))
}

/// The Tenant objects a wave needs: (tenant → namespaces), minus those that exist.
pub fn tenants_needed(plan: &Plan, wave: u32, existing: &BTreeSet<String>) -> Vec<Tenant> {
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for vm in plan.vms.iter().filter(|v| v.wave == Some(wave)) {
        if let (Some(t), Some(ns)) = (&vm.tenant, &vm.namespace)
            && !existing.contains(t)
        {
            want.entry(t.clone()).or_default().insert(ns.clone());
        }
    }
    want.into_iter()
        .map(|(name, ns)| {
            Tenant::new(
                &name,
                TenantSpec {
                    namespaces: ns.into_iter().collect(),
                    ..TenantSpec::default()
                },
            )
        })
        .collect()
}

/// Write everything into `dir` (created if needed); returns the files written.
pub fn write_all(
    plan: &Plan,
    dir: &Path,
    existing_tenants: &BTreeSet<String>,
) -> Result<Vec<PathBuf>, OutputError> {
    std::fs::create_dir_all(dir).map_err(|e| OutputError::Io(dir.into(), e))?;
    let mut written = Vec::new();
    let json = serde_json::to_string_pretty(plan)
        .map_err(|e| OutputError::Render("plan.json", e.to_string()))?;
    for (name, text) in [
        ("plan.json", json),
        ("plan.md", render::markdown(plan)),
        ("plan.html", render::html(plan)),
    ] {
        let path = dir.join(name);
        write(&path, &text)?;
        written.push(path);
    }
    for w in &plan.waves {
        let wdir = dir.join(format!("wave-{:02}", w.number));
        std::fs::create_dir_all(&wdir).map_err(|e| OutputError::Io(wdir.clone(), e))?;
        let tenants = tenants_needed(plan, w.number, existing_tenants);
        if !tenants.is_empty() {
            let docs: Result<Vec<String>, _> =
                tenants.iter().map(serde_saphyr::to_string).collect();
            let docs = docs.map_err(|e| OutputError::Render("a Tenant", e.to_string()))?;
            let path = wdir.join("00-tenants.yaml");
            write(&path, &docs.join("---\n"))?;
            written.push(path);
        }
        for vm in plan.vms.iter().filter(|v| v.wave == Some(w.number)) {
            let yaml = serde_saphyr::to_string(&vm.manifest)
                .map_err(|e| OutputError::Render("a VirtualMachine", e.to_string()))?;
            let ns = vm.namespace.as_deref().unwrap_or("unassigned");
            let path = wdir.join(format!("{ns}.{}.yaml", vm.k8s_name));
            write(&path, &yaml)?;
            written.push(path);
        }
    }
    Ok(written)
}
