//! The release's SBOM, CycloneDX 1.5 JSON: the crates compiled into the release binaries
//! (from `cargo metadata`) and the Debian packages in each image (from their lock files).
//!
//! Owns choosing what is listed and how it is named (package URLs). Pure: the caller reads
//! the inputs; no clock (the time is the caller's `SOURCE_DATE_EPOCH`), no random serial
//! number, components sorted, so the same inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::packages::Pinned;

/// What `cargo metadata --format-version 1` prints, as far as the SBOM needs it.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    /// Every package of the resolved graph.
    pub packages: Vec<Package>,
    /// The graph.
    pub resolve: Resolve,
}

/// A package of the graph.
#[derive(Debug, Deserialize)]
pub struct Package {
    /// Crate name.
    pub name: String,
    /// Crate version.
    pub version: String,
    /// Package id (the graph's key).
    pub id: String,
    /// `registry+…` for crates.io; absent for the workspace's own.
    pub source: Option<String>,
    /// SPDX license expression, when declared.
    pub license: Option<String>,
}

/// The resolved graph.
#[derive(Debug, Deserialize)]
pub struct Resolve {
    /// One node a package.
    pub nodes: Vec<Node>,
}

/// A node: a package and its dependencies.
#[derive(Debug, Deserialize)]
pub struct Node {
    /// Package id.
    pub id: String,
    /// Its dependencies.
    pub deps: Vec<NodeDep>,
}

/// An edge of the graph.
#[derive(Debug, Deserialize)]
pub struct NodeDep {
    /// The dependency's package id.
    pub pkg: String,
    /// Why it is a dependency: `null` (normal), `"build"` or `"dev"`.
    pub dep_kinds: Vec<DepKind>,
}

/// One reason for an edge.
#[derive(Debug, Deserialize)]
pub struct DepKind {
    /// `None` for a normal dependency.
    pub kind: Option<String>,
}

/// Why no SBOM could be made.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// A root binary's package is not in the metadata.
    #[error("package {0} is not in the cargo metadata: run cargo metadata in the workspace")]
    UnknownRoot(String),
}

/// The release the SBOM describes.
#[derive(Debug, Clone)]
pub struct Release {
    /// Version (`0.1.0`).
    pub version: String,
    /// The commit it is built from.
    pub commit: String,
    /// Its time, seconds since the epoch.
    pub created: u64,
}

/// Package ids reachable from `roots` over normal and build dependencies (never dev ones:
/// tests are not shipped).
fn shipped(meta: &Metadata, roots: &[&str]) -> Result<BTreeSet<String>, SbomError> {
    let edges: BTreeMap<&str, &Node> = meta
        .resolve
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let mut todo = Vec::new();
    for root in roots {
        let pkg = meta
            .packages
            .iter()
            .find(|p| p.name == *root && p.source.is_none())
            .ok_or_else(|| SbomError::UnknownRoot((*root).to_owned()))?;
        todo.push(pkg.id.clone());
    }
    let mut seen = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(node) = edges.get(id.as_str()) else {
            continue;
        };
        for dep in &node.deps {
            if dep
                .dep_kinds
                .iter()
                .any(|k| k.kind.as_deref() != Some("dev"))
            {
                todo.push(dep.pkg.clone());
            }
        }
    }
    Ok(seen)
}

/// Percent-encode what a package URL's version may not carry raw.
fn purl_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '+' => "%2B".to_owned(),
            ':' => "%3A".to_owned(),
            '~' => "~".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn crate_component(p: &Package, roots: &[&str]) -> Value {
    let own = p.source.is_none();
    let mut c = json!({
        "type": if own && roots.contains(&p.name.as_str()) { "application" } else { "library" },
        "name": p.name,
        "version": p.version,
    });
    if own {
        c["bom-ref"] = json!(format!("ironvisor:{}@{}", p.name, p.version));
    } else {
        let purl = format!("pkg:cargo/{}@{}", p.name, purl_escape(&p.version));
        c["bom-ref"] = json!(purl);
        c["purl"] = json!(purl);
    }
    if let Some(license) = &p.license {
        c["licenses"] = json!([{ "expression": license }]);
    }
    c
}

fn deb_component(pin: &Pinned, images: &BTreeSet<&str>) -> Value {
    let (epoch, upstream) = match pin.version.split_once(':') {
        Some((e, v)) => (Some(e), v),
        None => (None, pin.version.as_str()),
    };
    let mut qualifiers = format!("arch={}&distro=debian-12", pin.arch);
    if let Some(e) = epoch {
        qualifiers.push_str(&format!("&epoch={e}"));
    }
    let purl = format!(
        "pkg:deb/debian/{}@{}?{qualifiers}",
        pin.name,
        purl_escape(upstream)
    );
    let properties: Vec<Value> = images
        .iter()
        .map(|i| json!({ "name": "ironvisor:image", "value": i }))
        .collect();
    json!({
        "type": "library",
        "bom-ref": purl,
        "name": pin.name,
        "version": pin.version,
        "purl": purl,
        "hashes": [{ "alg": "SHA-256", "content": pin.sha256 }],
        "properties": properties,
    })
}

/// The SBOM of `release`: the crates of `roots` (package names of the release binaries) and
/// the Debian packages of each image (`(image name, its pinned packages)`).
pub fn sbom(
    release: &Release,
    meta: &Metadata,
    roots: &[&str],
    images: &[(String, Vec<Pinned>)],
) -> Result<Value, SbomError> {
    let ids = shipped(meta, roots)?;
    let mut crates: Vec<&Package> = meta
        .packages
        .iter()
        .filter(|p| ids.contains(&p.id))
        .collect();
    crates.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let mut debs: BTreeMap<(&str, &str, &str), (&Pinned, BTreeSet<&str>)> = BTreeMap::new();
    for (image, pins) in images {
        for pin in pins {
            debs.entry((&pin.name, &pin.version, &pin.arch))
                .or_insert_with(|| (pin, BTreeSet::new()))
                .1
                .insert(image);
        }
    }
    let mut components: Vec<Value> = crates.iter().map(|p| crate_component(p, roots)).collect();
    components.extend(debs.values().map(|(pin, imgs)| deb_component(pin, imgs)));
    let created = i64::try_from(release.created)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": { "components": [{ "type": "application", "name": "ironvisor-release", "version": release.version }] },
            "component": {
                "type": "application",
                "bom-ref": format!("ironvisor@{}", release.version),
                "name": "ironvisor",
                "version": release.version,
                "properties": [{ "name": "ironvisor:commit", "value": release.commit }],
            },
        },
        "components": components,
    }))
}

#[cfg(test)]
#[path = "sbom_tests.rs"]
mod tests;
