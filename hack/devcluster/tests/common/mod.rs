//! Shared helpers for the devcluster integration tests: a running server, a kubeconfig,
//! and a `kubectl` runner.
#![allow(dead_code)]

use ironvisor_devcluster::DevCluster;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A started cluster with a kubeconfig on disk.
pub struct Harness {
    pub cluster: DevCluster,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(ironvisor_devcluster::Options::default()).await
    }

    /// A cluster started with `opts`.
    pub async fn start_with(opts: ironvisor_devcluster::Options) -> Self {
        let cluster = DevCluster::start(opts).await.expect("devcluster starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        cluster
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Self {
            cluster,
            dir,
            kubeconfig,
        }
    }

    /// Runs kubectl with this cluster's kubeconfig (and an isolated cache dir).
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None).await
    }

    /// Runs kubectl feeding `stdin`.
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_as(&self.kubeconfig, args, stdin).await
    }

    /// Writes a kubeconfig acting as `user` in `groups` and returns its path.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        let p = self.dir.path().join(format!("{user}.kubeconfig"));
        std::fs::write(&p, self.cluster.kubeconfig_for(user, groups)).expect("kubeconfig written");
        p
    }

    /// Runs kubectl with another kubeconfig (another identity).
    pub async fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("KUBECTL_EXTERNAL_DIFF", "diff -u -N")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("kubectl runs");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).await.expect("stdin written");
        }
        drop(input);
        tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes within a minute")
            .expect("kubectl output")
    }

    /// Runs kubectl and returns stdout, failing the test (with stderr) on a non-zero exit.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies our CRDs from manifests/crds.
    pub async fn apply_crds(&self) {
        let crds = crds_dir();
        for f in [
            "virtualmachines.ironvisor.io.yaml",
            "hypervisors.ironvisor.io.yaml",
            "tenants.ironvisor.io.yaml",
            "quotas.ironvisor.io.yaml",
        ] {
            self.ok(&["apply", "-f", crds.join(f).to_str().unwrap()])
                .await;
        }
    }

    /// Writes a file into the temp dir and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("file written");
        p.to_string_lossy().into_owned()
    }
}

/// manifests/crds of the repository.
pub fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds")
}

/// Replaces the AGE-like trailing column values (`0s`, `12s`, `1m3s`) by `<age>` so tables
/// can be compared exactly.
pub fn mask_ages(s: &str) -> String {
    let re = regex::Regex::new(r"\b\d+(s|m\d*s?|h\d*m?|d\d*h?)\b").unwrap();
    re.replace_all(s, "<age>").into_owned()
}
