//! Asking libvirt through the `virsh` program (libvirt-clients), so `ivctl` never links
//! libvirt. Each call has a timeout and runs in the C locale, so messages parse the same
//! everywhere.

use std::time::{Duration, Instant};

use tokio::process::Command;

use super::facts::{LibvirtUnavailable, Version, Versions};

/// How long one `virsh` call may take: a thrashing capability cache makes a define take about
/// a minute, which must still be measured rather than cut off.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(180);

/// Why a `virsh` call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum VirshError {
    /// The program is not installed.
    #[error("virsh not found on PATH (apt-get install libvirt-clients)")]
    Missing,
    /// It could not be run.
    #[error("cannot run virsh")]
    Spawn(#[source] std::io::Error),
    /// It ran longer than [`CALL_TIMEOUT`] and was killed.
    #[error("virsh {0} did not finish within {t:?}", t = CALL_TIMEOUT)]
    Timeout(String),
    /// It failed; libvirt's message.
    #[error("{0}")]
    Failed(String),
}

/// A successful call.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Its standard output.
    pub stdout: String,
    /// How long it took, `virsh`'s own connection included (a few milliseconds).
    pub elapsed: Duration,
}

/// libvirt's message from `virsh`'s standard error: its `error:` lines without the prefix.
pub fn message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("error:").trim())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "virsh failed without a message".to_owned()
    } else {
        lines.join(": ")
    }
}

/// `virsh -c <uri> <args>`.
pub async fn run(uri: &str, args: &[&str]) -> Result<Answer, VirshError> {
    let started = Instant::now();
    let child = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CALL_TIMEOUT, child).await {
        Err(_) => return Err(VirshError::Timeout(args.join(" "))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err(VirshError::Missing),
        Ok(Err(e)) => return Err(VirshError::Spawn(e)),
        Ok(Ok(out)) => out,
    };
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(VirshError::Failed(message(&String::from_utf8_lossy(
            &out.stderr,
        ))));
    }
    Ok(Answer {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        elapsed,
    })
}

/// `9.0.0` (a missing micro is 0) from the first word of `s` that starts with a digit.
fn parse_version(s: &str) -> Option<Version> {
    let word = s
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = word.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let micro = parts.next().flatten().unwrap_or(0);
    Some(Version {
        major,
        minor,
        micro,
    })
}

/// The versions in `virsh version --daemon`'s output: the daemon's libvirt (else the
/// library's) and the QEMU the driver runs.
pub fn parse_versions(out: &str) -> Versions {
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(str::trim))
    };
    let qemu = field("Running hypervisor:")
        .and_then(|v| v.strip_prefix("QEMU"))
        .and_then(parse_version);
    let libvirt = field("Running against daemon:")
        .and_then(parse_version)
        .or_else(|| field("Using library:").and_then(parse_version));
    Versions { libvirt, qemu }
}

/// libvirt's versions, or why it cannot be asked.
pub async fn versions(uri: &str) -> Result<Versions, LibvirtUnavailable> {
    match run(uri, &["version", "--daemon"]).await {
        Ok(a) => Ok(parse_versions(&a.stdout)),
        Err(VirshError::Missing) => Err(LibvirtUnavailable::VirshMissing),
        Err(e) => Err(LibvirtUnavailable::Unreachable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_daemon_and_the_hypervisor_lines() {
        let out = "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\n\
                   Using API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.22\n\
                   Running against daemon: 9.0.0\n";
        let v = parse_versions(out);
        assert_eq!(v.libvirt.unwrap().to_string(), "9.0.0");
        assert_eq!(v.qemu.unwrap().to_string(), "7.2.22");
    }

    #[test]
    fn without_a_daemon_line_the_library_counts_and_other_hypervisors_have_no_qemu() {
        let out = "Using library: libvirt 8.0.0\nRunning hypervisor: Test 2.0.0\n";
        let v = parse_versions(out);
        assert_eq!(v.libvirt.unwrap().to_string(), "8.0.0");
        assert_eq!(v.qemu, None);
        assert_eq!(parse_version("6.2").unwrap().to_string(), "6.2.0");
        assert_eq!(parse_version("QEMU 7.2.0-rc1").map(|v| v.minor), Some(2));
    }

    #[test]
    fn libvirts_message_is_its_error_lines() {
        let stderr = "error: failed to connect to the hypervisor\nerror: Failed to connect \
                      socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n";
        assert_eq!(
            message(stderr),
            "failed to connect to the hypervisor: Failed to connect socket to \
             '/var/run/libvirt/libvirt-sock': No such file or directory"
        );
        assert_eq!(message(""), "virsh failed without a message");
    }
}
