//! Glue for `ivctl import vmware`: options → request, the soft quota lookup, printing.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::EXIT_BLOCKED;
use crate::cluster::{self, ClusterArgs, ClusterError, StorageLeft};
use crate::import::args::{ReportFormat, VmwareArgs};
use crate::import::convert::Converter;
use crate::import::manifest::{self, MappingOptions};
use crate::import::netmap;
use crate::import::ova::Limits;
use crate::import::ovf::ParseOptions;
use crate::import::report::Status;
use crate::import::run::{self, QuotaInfo, Request};
use crate::import::validate::{ServerCheck, ServerVerdict};

/// How long the optional quota lookup may take.
const QUOTA_DEADLINE: Duration = Duration::from_secs(5);
/// How long the server-side dry run may take.
const SERVER_CHECK_DEADLINE: Duration = Duration::from_secs(15);

/// `--dry-run-server`: the API server's verdict on the manifest, on a runtime of its own
/// (the import itself is synchronous).
fn server_check(cluster: &ClusterArgs) -> ServerCheck {
    let cluster = cluster.clone();
    ServerCheck(Arc::new(move |vm| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ServerVerdict::Unreachable(format!("no async runtime: {e}")))?;
        rt.block_on(cluster::server_dry_run(&cluster, vm, SERVER_CHECK_DEADLINE))
            .map_err(|e| match e {
                ClusterError::Api(kube::Error::Api(status)) => {
                    ServerVerdict::Refused(status.message.clone())
                }
                other => ServerVerdict::Unreachable(error_chain(&other)),
            })
    }))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Namespace and quota, from the options or (softly) from the cluster.
fn cluster_facts(cluster: &ClusterArgs, a: &VmwareArgs) -> (String, QuotaInfo) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let ns = cluster
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            return (ns, QuotaInfo::Unknown(format!("no async runtime: {e}")));
        }
    };
    rt.block_on(async {
        let namespace = cluster.namespace().await;
        let quota = if let Some(bytes) = a.storage_quota_remaining {
            QuotaInfo::Remaining {
                bytes,
                source: "option",
            }
        } else if a.offline {
            QuotaInfo::Unknown("--offline".into())
        } else {
            match cluster::remaining_storage_within(cluster, &namespace, QUOTA_DEADLINE).await {
                Ok(Some(StorageLeft::Bytes(bytes))) => QuotaInfo::Remaining {
                    bytes,
                    source: "cluster",
                },
                Ok(Some(StorageLeft::Unlimited)) => QuotaInfo::Unlimited,
                Ok(None) => {
                    QuotaInfo::Unknown(format!("namespace {namespace} belongs to no tenant"))
                }
                Err(e) => QuotaInfo::Unknown(format!("cluster lookup failed: {}", error_chain(&e))),
            }
        };
        (namespace, quota)
    })
}

/// Run the import and print its report; the exit code says how it ended.
pub fn run(cluster: &ClusterArgs, a: &VmwareArgs) -> ExitCode {
    if let Some(name) = &a.name
        && manifest::sanitize_name(name) != *name
    {
        eprintln!(
            "error: --name {name:?} is not a DNS label (lower-case letters, digits and '-', at most 63)"
        );
        return ExitCode::from(2);
    }
    let network_map = match netmap::resolve(&a.network_map) {
        Ok(m) => m,
        Err(e) => return failed(a, &error_chain(&e)),
    };
    let (namespace, quota) = cluster_facts(cluster, a);
    let req = Request {
        source: a.source.clone(),
        name: a.name.clone(),
        mapping: MappingOptions {
            name: String::new(),
            namespace,
            images_dir: a.images_dir.clone(),
            network_map,
            keep_nic_model: a.keep_nic_model,
            keep_mac: a.keep_mac,
            scsi_bus: a.scsi_bus,
            run_strategy: a.run_strategy.into(),
            no_tpm: a.no_tpm.then(|| "--no-tpm".to_owned()),
        },
        out: a.out.clone(),
        force: a.force,
        dry_run: a.dry_run,
        quota,
        converter: Converter {
            parallel: usize::from(a.parallel),
            verify: !a.no_verify,
            progress: a.report == ReportFormat::Text,
            ..Converter::default()
        },
        limits: Limits {
            max_entry_bytes: a.max_ova_entry,
        },
        vapp_cloud_init: a.vapp_properties_as_cloud_init,
        server_check: a.dry_run_server.then(|| server_check(cluster)),
        ovf: ParseOptions {
            deployment_option: a.deployment_option.clone(),
            properties: a.vapp_property.iter().cloned().collect(),
        },
    };
    match run::run(&req) {
        Ok(report) => {
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            match a.report {
                ReportFormat::Json => match serde_json::to_string_pretty(&report) {
                    Ok(j) => println!("{j}"),
                    Err(e) => eprintln!("error: cannot render the report: {e}"),
                },
                ReportFormat::Text => {
                    print!("{}", report.to_text());
                    if report.status == Status::DryRun
                        && let Ok(yaml) = serde_saphyr::to_string(&report.manifest)
                    {
                        println!("\n# The manifest that would be written:\n{yaml}");
                    }
                }
            }
            if report.status == Status::Blocked {
                ExitCode::from(EXIT_BLOCKED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => failed(a, &error_chain(&e)),
    }
}

/// Report a failed import (nothing was written) and exit 1.
fn failed(a: &VmwareArgs, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    if a.report == ReportFormat::Json {
        // Scripts read stdout: a failure is a document too, never nothing.
        let doc = serde_json::json!({
            "status": "failed",
            "source": a.source.to_string_lossy(),
            "error": message,
        });
        println!("{doc:#}");
    }
    ExitCode::FAILURE
}
