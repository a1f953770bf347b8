//! Whether a `BackupLocation` can be used on this host, checked on the host itself: the path
//! exists and is a directory, an NFS location is an NFS mount of the named export exactly
//! there (so a missing mount never fills the host's own disk), and a file can be written,
//! synced and removed under it. Each agent reports its own entry of the location's status.
//!
//! The checks run on a blocking thread with a time limit: a hung NFS server makes the
//! location unavailable, never the agent stuck.

use super::paths::backups_root;
use futures::StreamExt;
use ironvisor_crds::backup::{BackupLocation, BackupLocationSpec, LocationOnHost};
use ironvisor_crds::labels::agent_manager;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often a location is checked again.
const RECHECK: Duration = Duration::from_secs(60);
/// Longest a check may take before the location counts as not responding.
const CHECK_LIMIT: Duration = Duration::from_secs(15);

/// Reasons of a location's availability on a host.
pub mod reason {
    /// Mounted (when NFS) and writable.
    pub const AVAILABLE: &str = "Available";
    /// The path does not exist.
    pub const NOT_FOUND: &str = "NotFound";
    /// The path is not a directory.
    pub const NOT_A_DIRECTORY: &str = "NotADirectory";
    /// No NFS mount of the export at the path.
    pub const NOT_MOUNTED: &str = "NotMounted";
    /// A file cannot be written there.
    pub const NOT_WRITABLE: &str = "NotWritable";
    /// The check did not finish in time (a hung NFS server).
    pub const NOT_RESPONDING: &str = "NotResponding";
}

/// One mount from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
    /// The file system type.
    pub fstype: String,
    /// What is mounted (`server:/export` for NFS).
    pub source: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of a mountinfo text (lines it cannot read are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            Some(Mount {
                point: unescape(point),
                fstype: fstype.to_owned(),
                source: unescape(source),
            })
        })
        .collect()
}

/// Whether the last mount at `path` (the one in effect) is an NFS mount of `server:export`.
pub fn nfs_mounted(mounts: &[Mount], path: &str, server: &str, export: &str) -> bool {
    let trim = |s: &str| s.trim_end_matches('/').to_owned();
    let want = format!("{server}:{}", trim(export));
    mounts
        .iter()
        .rfind(|m| trim(&m.point) == trim(path))
        .is_some_and(|m| m.fstype.starts_with("nfs") && trim(&m.source) == want)
}

/// What a host found at a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// One of [`reason`].
    pub reason: &'static str,
    /// For people.
    pub message: String,
    /// Free bytes, when available.
    pub free_bytes: Option<i64>,
}

impl Found {
    fn no(reason: &'static str, message: String) -> Self {
        Found {
            reason,
            message,
            free_bytes: None,
        }
    }

    /// Whether backups can be written and read there.
    pub fn available(&self) -> bool {
        self.reason == reason::AVAILABLE
    }
}

/// What this host finds at a location now (blocking: file system calls).
pub fn check_now(spec: &BackupLocationSpec, probe_name: &str) -> Found {
    let path = Path::new(&spec.path);
    match std::fs::metadata(path) {
        Err(e) => {
            let msg = format!("{} cannot be read on this host: {e}", spec.path);
            return Found::no(reason::NOT_FOUND, msg);
        }
        Ok(m) if !m.is_dir() => {
            let msg = format!("{} is not a directory", spec.path);
            return Found::no(reason::NOT_A_DIRECTORY, msg);
        }
        Ok(_) => {}
    }
    if let Some(nfs) = &spec.nfs {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if !nfs_mounted(
            &parse_mountinfo(&mounts),
            &spec.path,
            &nfs.server,
            &nfs.export,
        ) {
            let msg = format!(
                "{}:{} is not mounted at {} on this host (mount it, e.g. from /etc/fstab)",
                nfs.server, nfs.export, spec.path
            );
            return Found::no(reason::NOT_MOUNTED, msg);
        }
    }
    if let Err(e) = probe(&backups_root(path), probe_name) {
        let msg = format!("cannot write under {}: {e}", spec.path);
        return Found::no(reason::NOT_WRITABLE, msg);
    }
    let free_bytes = nix::sys::statvfs::statvfs(path).ok().and_then(|s| {
        let bytes = u128::from(s.blocks_available()) * u128::from(s.fragment_size());
        i64::try_from(bytes).ok()
    });
    Found {
        reason: reason::AVAILABLE,
        message: format!("{} is writable", spec.path),
        free_bytes,
    }
}

/// Write, sync and remove a small file under `dir` (made when missing).
fn probe(dir: &Path, name: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(name);
    let mut f = std::fs::File::create(&file)?;
    f.write_all(b"ironvisor")?;
    f.sync_all()?;
    std::fs::remove_file(&file)
}

/// [`check_now`] on a blocking thread, within [`CHECK_LIMIT`].
pub async fn check(spec: &BackupLocationSpec, node: &str) -> Found {
    let spec = spec.clone();
    // Unique per check: the location controller, a backup and a restore may check at once,
    // and one's removal of a shared name would fail the other's probe.
    static CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe_name = format!(".probe-{}-{n}", std::process::id());
    let work = tokio::task::spawn_blocking(move || check_now(&spec, &probe_name));
    match tokio::time::timeout(CHECK_LIMIT, work).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => Found::no(reason::NOT_RESPONDING, format!("the check failed: {e}")),
        Err(_) => Found::no(
            reason::NOT_RESPONDING,
            format!("the check on {node} did not finish in {CHECK_LIMIT:?} (NFS server down?)"),
        ),
    }
}

/// What the location controller needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// This node.
    pub node: String,
}

/// Check one location and report this host's entry.
async fn reconcile(loc: Arc<BackupLocation>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let found = check(&loc.spec, &ctx.node).await;
    let entry = LocationOnHost {
        node: ctx.node.clone(),
        available: found.available(),
        reason: found.reason.to_owned(),
        message: found.message,
        free_bytes: found.free_bytes,
        last_check_time: Time(jiff::Timestamp::now()),
    };
    let patch = serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "BackupLocation",
        "status": {"hosts": [entry]},
    });
    let api = Api::<BackupLocation>::all(ctx.client.clone());
    let params = PatchParams::apply(&agent_manager(&ctx.node)).force();
    api.patch_status(&loc.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(Action::requeue(RECHECK))
}

fn error_policy(loc: Arc<BackupLocation>, e: &kube::Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(location = %loc.name_any(), error = %e, "reporting a backup location failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Check every location now and then, until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let api = Api::<BackupLocation>::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::backup::NfsExport;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:52 / /mnt/backups rw,relatime shared:40 - nfs4 filer:/exports/vm rw,vers=4.2
91 22 0:53 / /mnt/with\\040space rw - nfs filer:/x rw
";

    #[test]
    fn mountinfo_lines_give_point_type_and_source() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].point, "/mnt/backups");
        assert_eq!(m[1].fstype, "nfs4");
        assert_eq!(m[1].source, "filer:/exports/vm");
        assert_eq!(m[2].point, "/mnt/with space");
    }

    #[test]
    fn only_the_named_export_mounted_exactly_there_counts() {
        let m = parse_mountinfo(MOUNTINFO);
        assert!(nfs_mounted(&m, "/mnt/backups", "filer", "/exports/vm"));
        assert!(nfs_mounted(&m, "/mnt/backups/", "filer", "/exports/vm/"));
        assert!(!nfs_mounted(&m, "/mnt/backups", "other", "/exports/vm"));
        assert!(!nfs_mounted(&m, "/mnt/backups/sub", "filer", "/exports/vm"));
        // The root file system is mounted at /, not NFS.
        assert!(!nfs_mounted(&m, "/", "filer", "/exports/vm"));
    }

    #[test]
    fn a_later_mount_over_the_same_point_wins() {
        let text = format!("{MOUNTINFO}92 90 0:60 / /mnt/backups rw - tmpfs tmpfs rw\n");
        assert!(!nfs_mounted(
            &parse_mountinfo(&text),
            "/mnt/backups",
            "filer",
            "/exports/vm"
        ));
    }

    #[test]
    fn a_writable_directory_is_available_and_the_probe_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spec = BackupLocationSpec {
            path: dir.path().to_str().unwrap().into(),
            nfs: None,
            bandwidth_limit: None,
        };
        let found = check_now(&spec, ".probe-test");
        assert!(found.available(), "{found:?}");
        assert!(found.free_bytes.unwrap() > 0);
        let root = backups_root(dir.path());
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
    }

    /// The backup and location controllers check one location at once after a restart; a
    /// shared probe file made one of them fail with "No such file or directory".
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn checks_of_one_location_at_once_all_find_it_available() {
        let dir = tempfile::tempdir().unwrap();
        let spec = BackupLocationSpec {
            path: dir.path().to_str().unwrap().into(),
            nfs: None,
            bandwidth_limit: None,
        };
        for _ in 0..20 {
            let checks = (0..8).map(|_| check(&spec, "node"));
            for found in futures::future::join_all(checks).await {
                assert!(found.available(), "{found:?}");
            }
        }
        let root = backups_root(dir.path());
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_path_a_file_and_an_unmounted_export_are_not_available() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let at = |p: &Path, nfs: Option<NfsExport>| {
            check_now(
                &BackupLocationSpec {
                    path: p.to_str().unwrap().into(),
                    nfs,
                    bandwidth_limit: None,
                },
                ".probe-test",
            )
            .reason
        };
        assert_eq!(at(&dir.path().join("missing"), None), reason::NOT_FOUND);
        assert_eq!(at(&file, None), reason::NOT_A_DIRECTORY);
        let nfs = NfsExport {
            server: "filer".into(),
            export: "/exports/vm".into(),
        };
        assert_eq!(at(dir.path(), Some(nfs)), reason::NOT_MOUNTED);
        // Nothing was written into a location that is not mounted.
        assert!(!backups_root(dir.path()).exists());
    }
}
