//! Keeps guests away from the host's own services.
//!
//! A user-mode interface (QEMU's SLIRP) maps the guest's gateway address (10.0.2.2) to the
//! host's 127.0.0.1, and reaches every other address of the host too: any service listening
//! on the host's loopback (the agent's metrics, a kubelet, another VM's forwarded port) would
//! be open to every guest. QEMU 7.2 offers no switch that keeps outbound access but drops the
//! host mapping (`restrict=on` cuts both; libslirp's `disable_host_loopback` is not exposed;
//! libvirt 9.0's passt backend maps the gateway to the host and cannot pass `--no-map-gw`).
//!
//! What every user-mode connection has in common is the process that opens it: QEMU, running
//! as libvirt's QEMU user. So the host refuses *new* connections that this user opens over the
//! loopback interface — where every packet to any of the host's own addresses goes — with an
//! iptables and ip6tables rule in a chain of ours (`IRONVISOR-GUEST-HOST`, jumped to first
//! from `OUTPUT`). Outbound traffic leaves through other interfaces and is untouched; a
//! forwarded port still works because the host side opens that connection and QEMU only
//! answers it (conntrack state ESTABLISHED).
//!
//! Owns the rules (pure) and their idempotent installation; never removes rules of others.

use std::process::{Command, Output};

/// Our chain in the filter table.
pub const CHAIN: &str = "IRONVISOR-GUEST-HOST";

/// Why the rules could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The firewall tool could not be run at all.
    #[error("cannot run {tool} (install iptables; the agent needs CAP_NET_ADMIN on the host)")]
    Spawn {
        /// `iptables` or `ip6tables`.
        tool: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tool refused a change.
    #[error(
        "{tool} {args} failed: {stderr} (the agent needs CAP_NET_ADMIN in the host's network namespace)"
    )]
    Refused {
        /// `iptables` or `ip6tables`.
        tool: &'static str,
        /// The arguments, space-separated.
        args: String,
        /// What the tool printed.
        stderr: String,
    },
}

/// The rule in our chain for QEMU's uid (arguments after `-A CHAIN` / `-C CHAIN`).
pub fn guard_rule(qemu_uid: u32) -> Vec<String> {
    [
        "-o",
        "lo",
        "-m",
        "owner",
        "--uid-owner",
        &qemu_uid.to_string(),
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "REJECT",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// How to run the firewall tools: directly, or behind a prefix (`ip netns exec NS` in tests).
#[derive(Clone, Debug, Default)]
pub struct Firewall {
    /// Program and arguments put before the tool, if any.
    pub prefix: Vec<String>,
}

impl Firewall {
    fn output(&self, tool: &'static str, args: &[String]) -> Result<Output, GuardError> {
        let mut cmd = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(tool);
                c
            }
            None => Command::new(tool),
        };
        cmd.arg("-w")
            .args(args)
            .output()
            .map_err(|source| GuardError::Spawn { tool, source })
    }

    /// Whether the command succeeds (a check such as `-C`).
    fn holds(&self, tool: &'static str, args: &[String]) -> Result<bool, GuardError> {
        Ok(self.output(tool, args)?.status.success())
    }

    /// Run a change that must succeed.
    fn change(&self, tool: &'static str, args: &[String]) -> Result<(), GuardError> {
        let out = self.output(tool, args)?;
        if out.status.success() {
            return Ok(());
        }
        Err(GuardError::Refused {
            tool,
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }

    /// Make sure the chain, its rule for `qemu_uid` and the jump from `OUTPUT` exist, for
    /// IPv4 and IPv6. Idempotent: checks each piece first and adds only what is missing.
    pub fn ensure(&self, qemu_uid: u32) -> Result<(), GuardError> {
        let chain = CHAIN.to_owned();
        let rule = guard_rule(qemu_uid);
        for tool in ["iptables", "ip6tables"] {
            if !self.holds(tool, &["-n".into(), "-L".into(), chain.clone()])? {
                self.change(tool, &["-N".into(), chain.clone()])?;
            }
            let mut check = vec!["-C".to_owned(), chain.clone()];
            check.extend(rule.iter().cloned());
            if !self.holds(tool, &check)? {
                check[0] = "-A".into();
                self.change(tool, &check)?;
            }
            let jump = |op: &str| vec![op.to_owned(), "OUTPUT".into(), "-j".into(), chain.clone()];
            if !self.holds(tool, &jump("-C"))? {
                let mut insert = jump("-I");
                insert.insert(2, "1".into());
                self.change(tool, &insert)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_rejects_only_new_loopback_connections_of_the_qemu_user() {
        assert_eq!(
            guard_rule(64055).join(" "),
            "-o lo -m owner --uid-owner 64055 -m conntrack --ctstate NEW -j REJECT"
        );
    }
}
