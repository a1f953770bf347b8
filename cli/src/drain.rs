//! `ivctl host drain HOST [--wait]` and `ivctl host undrain HOST`: put a host in maintenance
//! (its Hypervisor's `spec.maintenance`) and take it out again. With `--wait`, drain follows
//! the Hypervisor's `status.maintenance` (VMs left, migrating, blocked with the reasons) until
//! `MaintenanceReady` is True. The pure parts (the patch, the progress line, the verdict) are
//! tested here; the round trip runs against the devcluster in the system tests.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ironvisor_crds::Hypervisor;
use ironvisor_crds::maintenance::{MAINTENANCE_READY, MaintenancePhase, MaintenanceRequester};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::cluster::{ClusterArgs, ClusterError};
use crate::vm::cmd::error_chain;

/// How often `--wait` reads the Hypervisor.
const POLL: Duration = Duration::from_secs(1);

/// `ivctl host drain`.
#[derive(Clone, Debug, Args)]
pub struct DrainArgs {
    /// The host (its Hypervisor's name).
    pub host: String,
    /// Follow the drain until no running VM is left (MaintenanceReady), printing progress.
    #[arg(long)]
    pub wait: bool,
    /// Longest --wait, e.g. 90s, 30m.
    #[arg(long, default_value = "30m", value_parser = crate::vm::args::parse_duration)]
    pub timeout: Duration,
}

/// `ivctl host undrain`.
#[derive(Clone, Debug, Args)]
pub struct UndrainArgs {
    /// The host (its Hypervisor's name).
    pub host: String,
}

/// Why drain or undrain failed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The cluster could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// No Hypervisor of that name.
    #[error("no host {0:?} (no Hypervisor of that name; `kubectl get hypervisors` lists them)")]
    NoHost(String),
    /// A request failed.
    #[error("request to the cluster failed")]
    Api(#[from] kube::Error),
    /// `--wait` ran out of time.
    #[error("host {host} is not drained after {waited:?}: {message}; the drain goes on")]
    Timeout {
        /// The host.
        host: String,
        /// How long it waited.
        waited: Duration,
        /// The last progress.
        message: String,
    },
    /// No async runtime.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The merge patch that sets `spec.maintenance`.
pub fn maintenance_patch(on: bool) -> serde_json::Value {
    json!({ "spec": { "maintenance": on } })
}

/// What `--wait` prints about the drain, and whether it is over.
pub fn progress(hv: &Hypervisor) -> (bool, String) {
    let status = hv.status.as_ref();
    let Some(m) = status.and_then(|s| s.maintenance.as_ref()) else {
        return (false, "waiting for the operator to start the drain".into());
    };
    let ready = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == MAINTENANCE_READY))
        .is_some_and(|c| c.status == "True");
    let mut line = format!(
        "{}: {} left ({} migrating, {} blocked), {} moved, {} stopped stay",
        if m.phase == MaintenancePhase::Ready {
            "Ready"
        } else {
            "Draining"
        },
        m.vms_remaining,
        m.vms_migrating,
        m.vms_blocked,
        m.vms_moved,
        m.vms_stopped
    );
    for b in &m.blocked {
        line.push_str(&format!(
            "\n  blocked {}/{}: {}",
            b.namespace, b.name, b.reason
        ));
    }
    (ready && m.phase == MaintenancePhase::Ready, line)
}

fn block_on(f: impl Future<Output = Result<(), DrainError>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DrainError::Runtime)
        .and_then(|rt| rt.block_on(f));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn set(
    cluster: &ClusterArgs,
    host: &str,
    on: bool,
) -> Result<(Api<Hypervisor>, Hypervisor), DrainError> {
    let api = Api::<Hypervisor>::all(cluster.client().await?);
    if api.get_opt(host).await?.is_none() {
        return Err(DrainError::NoHost(host.into()));
    }
    let hv = api
        .patch(
            host,
            &PatchParams::default(),
            &Patch::Merge(maintenance_patch(on)),
        )
        .await?;
    Ok((api, hv))
}

/// Run `ivctl host drain`.
pub fn drain(cluster: &ClusterArgs, a: &DrainArgs) -> ExitCode {
    block_on(async {
        let (api, _) = set(cluster, &a.host, true).await?;
        println!(
            "hypervisor.ironvisor.io/{} in maintenance: draining",
            a.host
        );
        if !a.wait {
            return Ok(());
        }
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let hv = api.get(&a.host).await?;
            let (done, line) = progress(&hv);
            if line != last {
                println!("{line}");
                last = line;
            }
            if done {
                println!(
                    "host {} is drained ({} s)",
                    a.host,
                    started.elapsed().as_secs()
                );
                return Ok(());
            }
            if started.elapsed() > a.timeout {
                return Err(DrainError::Timeout {
                    host: a.host.clone(),
                    waited: a.timeout,
                    message: last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

/// Run `ivctl host undrain`.
pub fn undrain(cluster: &ClusterArgs, a: &UndrainArgs) -> ExitCode {
    block_on(async {
        let (_, hv) = set(cluster, &a.host, false).await?;
        let by_node = hv
            .status
            .as_ref()
            .and_then(|s| s.maintenance.as_ref())
            .is_some_and(|m| m.requested_by == MaintenanceRequester::Node);
        if by_node {
            println!(
                "hypervisor.ironvisor.io/{0}: spec.maintenance cleared, but its Node is \
                 cordoned and keeps it in maintenance: kubectl uncordon {0}",
                a.host
            );
        } else {
            println!(
                "hypervisor.ironvisor.io/{} out of maintenance: schedulable again",
                a.host
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::hypervisor::HypervisorStatus;
    use ironvisor_crds::maintenance::{BlockedVm, MaintenanceStatus};

    fn hv(phase: MaintenancePhase, ready: &str) -> Hypervisor {
        let mut h = Hypervisor::new("h1", Default::default());
        h.status = Some(HypervisorStatus {
            maintenance: Some(MaintenanceStatus {
                requested_by: MaintenanceRequester::Hypervisor,
                phase,
                since: None,
                vms_remaining: 2,
                vms_migrating: 1,
                vms_blocked: 1,
                vms_stopped: 0,
                vms_moved: 4,
                blocked: vec![BlockedVm {
                    namespace: "t".into(),
                    name: "db".into(),
                    reason: "drainStrategy None".into(),
                }],
                message: String::new(),
            }),
            conditions: vec![ironvisor_crds::common::new_condition(
                MAINTENANCE_READY,
                ready == "True",
                "R",
                String::new(),
                None,
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            )],
            ..Default::default()
        });
        h
    }

    #[test]
    fn the_patch_sets_only_spec_maintenance() {
        assert_eq!(
            maintenance_patch(true),
            json!({"spec": {"maintenance": true}})
        );
        assert_eq!(
            maintenance_patch(false),
            json!({"spec": {"maintenance": false}})
        );
    }

    #[test]
    fn progress_names_the_blocked_vms_and_ends_only_when_ready() {
        let (done, line) = progress(&hv(MaintenancePhase::Draining, "False"));
        assert!(!done);
        assert!(
            line.starts_with("Draining: 2 left (1 migrating, 1 blocked), 4 moved"),
            "{line}"
        );
        assert!(line.contains("blocked t/db: drainStrategy None"), "{line}");
        assert!(progress(&hv(MaintenancePhase::Ready, "True")).0);
        let (done, line) = progress(&Hypervisor::new("h1", Default::default()));
        assert!(!done);
        assert!(line.contains("waiting for the operator"), "{line}");
    }
}
