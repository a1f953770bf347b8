//! Command-line options of the VM verbs (`start`, `stop`, `restart`, `status`, `console`).
//! The cluster options (`-n`, `--kubeconfig`, `--context`) are global: see
//! [`crate::cluster::ClusterArgs`].

use std::path::PathBuf;
use std::time::Duration;

/// Options of `start`, `stop` and `restart`.
#[derive(Clone, Debug, clap::Args)]
pub struct PowerArgs {
    /// Name of the VirtualMachine.
    pub name: String,
    /// Wait until the VM is Running (start, restart) or stopped (stop), showing its phase.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 90s, 5m, 1h; a bare number is seconds).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Output of `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// The report as one JSON document.
    Json,
    /// The report as YAML.
    Yaml,
}

/// Options of `status`.
#[derive(Clone, Debug, clap::Args)]
pub struct StatusArgs {
    /// Name of the VirtualMachine.
    pub name: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Options of `console`.
#[derive(Clone, Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Name of the VirtualMachine.
    pub name: String,
    /// Name of this host as the agent knows it (default: the machine's host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// libvirt URI of this host's agent.
    #[arg(long, env = "LIBVIRT_DEFAULT_URI", default_value = "qemu:///system")]
    pub libvirt_uri: String,
    /// The agent's --state-dir (the serial log is <state-dir>/vms/<uid>/console.log).
    #[arg(long, default_value = "/var/lib/ironvisor", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Print the serial log (read-only) even when the console could be attached.
    #[arg(long)]
    pub log: bool,
    /// Print the serial log and keep printing what the guest writes (implies --log).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Reach the console through the Kubernetes API even on the VM's own host (away from
    /// it, that is what ivctl does anyway).
    #[arg(long, conflicts_with_all = ["log", "follow"])]
    pub remote: bool,
}

/// Options of `vnc`.
#[derive(Clone, Debug, clap::Args)]
pub struct VncArgs {
    /// Name of the VirtualMachine.
    pub name: String,
    /// Local address to listen on for VNC clients (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Print the browser console's URL of the display instead of opening a local port.
    #[arg(long)]
    pub url: bool,
    /// The browser console's address (https://HOST[:PORT]), for --url.
    #[arg(long, env = "IRONVISOR_CONSOLE_URL", value_name = "URL")]
    pub console_url: Option<String>,
}

/// `90s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s or 5m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?} has an unknown unit (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_minutes_hours_or_a_bare_number() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
