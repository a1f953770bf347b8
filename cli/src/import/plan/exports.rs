//! A directory of exports, analysed by the importer itself in dry-run mode: every .ovf, .ova
//! and .vmx found (three levels deep) is loaded, checked with qemu-img and advised exactly as
//! `ivctl import vmware --dry-run` would, and nothing is written.

use std::path::{Path, PathBuf};

use crate::import::convert::Converter;
use crate::import::manifest::MappingOptions;
use crate::import::ova::Limits;
use crate::import::report::Report;
use crate::import::run::{self, QuotaInfo, Request};

/// How deep the exports directory is searched.
pub const MAX_DEPTH: usize = 3;

/// One export and the importer's dry-run report on it.
#[derive(Clone, Debug)]
pub struct ExportInfo {
    /// The .ovf, .ova or .vmx.
    pub path: PathBuf,
    /// The dry-run report.
    pub report: Report,
}

/// The descriptor files under `dir`, sorted.
pub fn find(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() && depth < MAX_DEPTH {
                stack.push((path, depth + 1));
            } else if kind.is_file()
                && path.extension().is_some_and(|e| {
                    ["ovf", "ova", "vmx"]
                        .iter()
                        .any(|x| e.eq_ignore_ascii_case(x))
                })
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Analyse every export; the ones that fail are returned as messages, never silently skipped.
pub fn analyse(
    dir: &Path,
    mapping: &MappingOptions,
    limits: Limits,
) -> std::io::Result<(Vec<ExportInfo>, Vec<String>)> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    // A dry run writes nothing, but refuses an --out where the VM's directory exists (an
    // export's own folder often carries the VM's name): point it at an empty directory.
    let nowhere = tempfile::tempdir()?;
    for path in find(dir)? {
        let req = Request {
            source: path.clone(),
            name: None,
            mapping: mapping.clone(),
            out: nowhere.path().to_path_buf(),
            force: false,
            dry_run: true,
            quota: QuotaInfo::Unknown("checked by the plan".into()),
            converter: Converter {
                progress: false,
                ..Converter::default()
            },
            limits,
            ovf: Default::default(),
            vapp_cloud_init: false,
            server_check: None,
        };
        match run::run(&req) {
            Ok(report) => ok.push(ExportInfo { path, report }),
            Err(e) => failed.push(format!("{}: {}", path.display(), chain(&e))),
        }
    }
    Ok((ok, failed))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        cur = c.source();
    }
    s
}
