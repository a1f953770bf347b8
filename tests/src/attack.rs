//! Acting as someone other than the admin, and checking that the API server refused: the
//! privilege tests run real kubectl with another identity's kubeconfig (a tenant user, a
//! node-bound agent token, a token without its node claim) and assert the refusal's words.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Run kubectl with `args` as whoever `kubeconfig` authenticates.
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    crate::run(
        Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(args),
    )
}

/// `kubectl apply -f -` of `yaml` as whoever `kubeconfig` authenticates.
pub fn apply_as(kubeconfig: &Path, yaml: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl (run hack/install-deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write the manifest");
    child.wait_with_output().expect("kubectl apply")
}

/// Panics unless kubectl failed with every one of `words` in its error output; returns it.
pub fn assert_refused(what: &str, out: &Output, words: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} was allowed; it must be refused (stdout: {})",
        String::from_utf8_lossy(&out.stdout)
    );
    for w in words {
        assert!(
            err.contains(w),
            "{what}: the refusal does not say {w:?}: {err}"
        );
    }
    err
}

/// Panics with kubectl's error unless it succeeded; returns stdout.
pub fn assert_allowed(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
