//! `ivctl migrate VM [--to HOST] [--wait]`: create a `VirtualMachineMigration` for a running
//! VM and, with `--wait`, follow it with a progress bar until it ends (exit 1 unless it
//! completed). The pure parts (the object, the progress line, the verdict) are tested here;
//! the round trips run against the devcluster in the system tests.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ironvisor_crds::migration::{
    MigrationPhase, VirtualMachineMigration, VirtualMachineMigrationSpec,
    VirtualMachineMigrationStatus,
};
use kube::api::{Api, PostParams};

use crate::cluster::ClusterArgs;
use crate::vm::cmd::{VmError, get_vm};
use crate::vm::wait::WaitError;

/// How often `--wait` reads the migration.
const POLL: Duration = Duration::from_millis(500);

/// `ivctl migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The VM to move (in the namespace of -n).
    pub name: String,
    /// The host to move it to; without it the operator chooses with the placement scores.
    #[arg(long = "to", value_name = "HOST")]
    pub to: Option<String>,
    /// Follow the migration with a progress bar until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Longest --wait, e.g. 90s, 10m.
    #[arg(long, default_value = "10m", value_parser = crate::vm::args::parse_duration)]
    pub timeout: Duration,
    /// Most bytes per second QEMU may send, in MiB/s.
    #[arg(long, value_name = "MIB_PER_S")]
    pub bandwidth: Option<u64>,
}

/// The migration object `ivctl migrate` creates (a generated name: one VM may be migrated
/// many times).
pub fn migration(vm: &str, a: &MigrateArgs) -> VirtualMachineMigration {
    let mut m = VirtualMachineMigration::new(
        "",
        VirtualMachineMigrationSpec {
            vm_name: vm.to_owned(),
            target_node: a.to.clone(),
            bandwidth_mib_per_second: a.bandwidth,
            completion_timeout_seconds: None,
            mode: None,
        },
    );
    m.metadata.name = None;
    m.metadata.generate_name = Some(format!("{}-", truncate(vm, 50)));
    m
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The progress bar's message: the phase and what the source agent last reported.
pub fn progress_line(s: &VirtualMachineMigrationStatus) -> (u64, String) {
    let hosts = match (&s.source_node, &s.target_node) {
        (Some(a), Some(b)) => format!("{a} → {b}"),
        (Some(a), None) => format!("{a} → ?"),
        _ => String::new(),
    };
    let Some(p) = s.source.as_ref().and_then(|x| x.progress.as_ref()) else {
        let done = if s.phase == MigrationPhase::Completed {
            100
        } else {
            0
        };
        return (done, format!("{} {hosts}", s.phase.as_str()));
    };
    let mib = |b: u64| b >> 20;
    let line = format!(
        "{} {hosts}: {} of {} MiB left, {} MiB/s, pass {}",
        s.phase.as_str(),
        mib(p.memory_remaining_bytes + p.disk_remaining_bytes),
        mib(p.memory_total_bytes + p.disk_total_bytes),
        mib(p.memory_bytes_per_second),
        p.iteration
    );
    let done = if s.phase == MigrationPhase::Completed {
        100
    } else {
        p.percent_done()
    };
    (done, line)
}

/// The end of a migration as a result: `Ok(summary)` when completed.
pub fn verdict(s: &VirtualMachineMigrationStatus) -> Option<Result<String, String>> {
    if !s.phase.is_terminal() {
        return None;
    }
    let why = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default();
    Some(match s.phase {
        MigrationPhase::Completed => Ok(why),
        _ => Err(format!("{} ({why})", s.phase.as_str())),
    })
}

/// Run `ivctl migrate`.
pub async fn run(cluster: &ClusterArgs, a: &MigrateArgs) -> Result<(), VmError> {
    let client = cluster.client().await?;
    let ns = cluster.namespace().await;
    let vms = Api::namespaced(client.clone(), &ns);
    get_vm(&vms, &ns, &a.name).await?;
    let api: Api<VirtualMachineMigration> = Api::namespaced(client, &ns);
    let created = api
        .create(&PostParams::default(), &migration(&a.name, a))
        .await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    println!("virtualmachinemigration.ironvisor.io/{name} created");
    if !a.wait {
        return Ok(());
    }
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    loop {
        let m = api.get(&name).await?;
        let status = m.status.unwrap_or_default();
        let (pos, msg) = progress_line(&status);
        bar.set_position(pos);
        bar.set_message(msg);
        if let Some(v) = verdict(&status) {
            bar.finish();
            return match v {
                Ok(summary) => {
                    println!("{name}: {summary}");
                    Ok(())
                }
                Err(why) => Err(VmError::Wait(WaitError::Failed {
                    key: format!("{ns}/{name}"),
                    reason: format!("the migration ended {why}"),
                })),
            };
        }
        if started.elapsed() > a.timeout {
            bar.abandon();
            return Err(VmError::Wait(WaitError::Failed {
                key: format!("{ns}/{name}"),
                reason: format!(
                    "the migration did not end within {:?}; it goes on (delete it to cancel)",
                    a.timeout
                ),
            }));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::migration::{MigrationProgress, MigrationSource, SourceState};

    fn args(to: Option<&str>) -> MigrateArgs {
        MigrateArgs {
            name: "web".into(),
            to: to.map(Into::into),
            wait: false,
            timeout: Duration::from_secs(1),
            bandwidth: None,
        }
    }

    #[test]
    fn the_migration_names_the_vm_and_the_host_with_a_generated_name() {
        let m = migration("web", &args(Some("h2")));
        assert_eq!(m.spec.vm_name, "web");
        assert_eq!(m.spec.target_node.as_deref(), Some("h2"));
        assert_eq!(m.metadata.generate_name.as_deref(), Some("web-"));
        assert!(m.metadata.name.is_none());
        let long = "a".repeat(80);
        assert_eq!(
            migration(&long, &args(None))
                .metadata
                .generate_name
                .unwrap()
                .len(),
            51
        );
    }

    #[test]
    fn progress_shows_what_is_left_and_the_verdict_only_at_the_end() {
        let mut s = VirtualMachineMigrationStatus {
            phase: MigrationPhase::Migrating,
            source_node: Some("h1".into()),
            target_node: Some("h2".into()),
            source: Some(MigrationSource {
                state: SourceState::Running,
                progress: Some(MigrationProgress {
                    memory_total_bytes: 128 << 20,
                    memory_remaining_bytes: 32 << 20,
                    memory_bytes_per_second: 64 << 20,
                    iteration: 2,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (pos, line) = progress_line(&s);
        assert_eq!(pos, 75);
        assert_eq!(
            line,
            "Migrating h1 → h2: 32 of 128 MiB left, 64 MiB/s, pass 2"
        );
        assert_eq!(verdict(&s), None);
        s.phase = MigrationPhase::Failed;
        assert!(verdict(&s).unwrap().is_err());
        s.phase = MigrationPhase::Completed;
        assert_eq!(progress_line(&s).0, 100);
        assert!(verdict(&s).unwrap().is_ok());
    }
}
