//! The system under test as child processes (so their RSS is their own): spawning with logs
//! in files, stopping with SIGTERM then SIGKILL, and finding the sibling binaries.
//!
//! Stopping only ever signals the processes this module started, by their pid.

use crate::rss::{self, Rss};
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is stopped when dropped.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    /// Its stdout+stderr.
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Start `program args…`, output to `log`; `RUST_LOG` from `BENCH_LOG` (default `warn`).
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// [`Proc::spawn`] with more environment variables (e.g. `KUBECONFIG`).
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let level = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", level)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, `None` once it has exited.
    pub fn rss(&self) -> Option<Rss> {
        rss::read(self.pid())
    }

    /// Fails with the tail of its log when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns whether it exited on SIGTERM.
    pub fn stop(mut self, grace: Duration) -> bool {
        self.stop_inner(grace)
    }

    fn stop_inner(&mut self, grace: Duration) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return true;
        }
        // kill(1) rather than a libc call: no unsafe code, and only this child's pid.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_inner(Duration::from_secs(3));
    }
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Where the Ironvisor binaries are: `--bin-dir`, else this program's own directory (cargo
/// puts every binary of a profile side by side).
pub fn bin_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d);
    }
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("this program has no directory")?
        .to_owned())
}

/// `dir/name`, checked to exist.
pub fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p ironvisor-agent -p ironvisor-operator -p ironvisor-devcluster) or pass --bin-dir",
            p.display()
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_process_has_an_rss_and_stops_on_sigterm() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("sleep.log");
        let mut p =
            Proc::spawn("sleep", Path::new("/bin/sleep"), &["30".into()], &log).expect("spawn");
        p.check_alive().expect("alive");
        assert!(p.rss().is_some_and(|r| r.rss_bytes > 0));
        assert!(p.stop(Duration::from_secs(5)), "sleep exits on SIGTERM");
    }

    #[test]
    fn a_process_that_exited_is_reported_with_its_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("false.log");
        let mut p = Proc::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".into(), "echo boom; exit 3".into()],
            &log,
        )
        .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            if let Err(e) = p.check_alive() {
                break e.to_string();
            }
            assert!(Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn a_missing_binary_is_named_in_the_error() {
        let e = binary(Path::new("/nonexistent"), "ironvisor-agent").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ironvisor-agent"));
    }
}
