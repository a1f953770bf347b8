//! Host health: what makes this host slow or unable to run guests, found out and reported
//! (as `Hypervisor` conditions, metrics and one log line) instead of suffered.
//!
//! Three findings: `KVMAvailable` ([`kvm`]; False is information on a software-emulation
//! host), `LibvirtHealthy` ([`probe`]: capability probes that keep taking seconds) and
//! `StorageAccessible` ([`access`]: the QEMU user can reach the state and images
//! directories). The verdicts are pure; [`Monitor`] gathers the facts. Nothing here changes
//! the host: it reports, with the remedy in the message.

pub mod access;
pub mod kvm;
pub mod probe;

use crate::hypervisor::Hypervisor;
use ironvisor_crds::common::{Condition, condition_status, condition_type};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One verdict: fine or not, a CamelCase reason, a message with the remedy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Whether the condition holds.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What was found, and what to do about it.
    pub message: String,
}

impl Finding {
    /// The condition holds.
    pub fn ok(reason: &'static str, message: String) -> Self {
        Self {
            ok: true,
            reason,
            message,
        }
    }

    /// The condition does not hold.
    pub fn problem(reason: &'static str, message: String) -> Self {
        Self {
            ok: false,
            reason,
            message,
        }
    }
}

/// The user QEMU runs as: libvirt's DAC base label, with that user's groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuUser {
    /// User name (or the uid as text when it has none).
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary and supplementary gids.
    pub groups: Vec<u32>,
}

impl QemuUser {
    /// The user with `uid` and group `gid` (libvirt's label), plus the user's passwd group
    /// and its memberships in the group database, as libvirt gives them to QEMU.
    pub fn lookup(uid: u32, gid: u32) -> Self {
        use nix::unistd::{Gid, Uid, User, getgrouplist};
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let mut groups = vec![gid];
        // libvirt gives QEMU the user's passwd group too (Debian's libvirt-qemu: kvm), which
        // the group database does not list as a membership.
        if let Some(u) = &user {
            groups.push(u.gid.as_raw());
            if let Ok(name) = std::ffi::CString::new(u.name.clone())
                && let Ok(list) = getgrouplist(&name, u.gid)
            {
                groups.extend(list.into_iter().map(Gid::as_raw));
            }
        }
        groups.sort_unstable();
        groups.dedup();
        Self {
            name: user.map_or_else(|| uid.to_string(), |u| u.name),
            uid,
            groups,
        }
    }
}

/// Whether `user` has the `want` bits (4 read, 2 write, 1 search) on an object with `mode`,
/// owner `uid` and group `gid`, as the kernel decides without ACLs: the owner class if the
/// user owns it, else the group class if one of its groups matches, else the other class.
pub fn can_access(mode: u32, uid: u32, gid: u32, user: &QemuUser, want: u32) -> bool {
    if user.uid == 0 {
        return true;
    }
    let class = if user.uid == uid {
        (mode >> 6) & 7
    } else if user.groups.contains(&gid) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    class & want == want
}

/// The DAC base label (`+uid:+gid`) QEMU runs with, from libvirt's capabilities XML; `None`
/// when libvirt has no DAC model (QEMU then runs as libvirtd's own user).
pub fn parse_dac_label(caps_xml: &str) -> Option<(u32, u32)> {
    let start = caps_xml.find("<model>dac</model>")?;
    let rest = &caps_xml[start..];
    let end = rest.find("</secmodel>").unwrap_or(rest.len());
    let section = &rest[..end];
    let label_start = section.find("<baselabel")?;
    let label = &section[label_start..];
    let text = &label[label.find('>')? + 1..label.find("</baselabel>")?];
    let (u, g) = text.split_once(':')?;
    Some((
        u.trim().trim_start_matches('+').parse().ok()?,
        g.trim().trim_start_matches('+').parse().ok()?,
    ))
}

/// The three findings of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `KVMAvailable`.
    pub kvm: Finding,
    /// `LibvirtHealthy`.
    pub libvirt: Finding,
    /// `StorageAccessible`.
    pub storage: Finding,
}

impl Report {
    /// The Hypervisor conditions.
    pub fn conditions(&self, generation: Option<i64>, now: &Time) -> Vec<Condition> {
        [
            (condition_type::KVM_AVAILABLE, &self.kvm),
            (condition_type::LIBVIRT_HEALTHY, &self.libvirt),
            (condition_type::STORAGE_ACCESSIBLE, &self.storage),
        ]
        .into_iter()
        .map(|(type_, f)| Condition {
            type_: type_.into(),
            status: if f.ok {
                condition_status::TRUE
            } else {
                condition_status::FALSE
            }
            .into(),
            reason: f.reason.into(),
            message: f.message.clone(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        })
        .collect()
    }

    /// `OK`, or the reasons of the findings that keep VMs off the host (and KVM's, which
    /// does not), for the HEALTH column.
    pub fn summary(&self) -> String {
        let problems: Vec<&str> = [&self.libvirt, &self.storage, &self.kvm]
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| f.reason)
            .collect();
        if problems.is_empty() {
            "OK".into()
        } else {
            problems.join(",")
        }
    }

    /// One line for the log at start.
    pub fn log_line(&self) -> String {
        let part = |name: &str, f: &Finding| {
            if f.ok {
                format!("{name}: ok")
            } else {
                format!("{name}: {} ({})", f.reason, f.message)
            }
        };
        [
            part("KVM", &self.kvm),
            part("libvirt", &self.libvirt),
            part("storage", &self.storage),
        ]
        .join("; ")
    }

    /// Whether the host can take new VMs (KVM is not needed: software emulation works).
    pub fn schedulable(&self) -> bool {
        self.libvirt.ok && self.storage.ok
    }
}

/// Where the facts come from.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// The KVM device (/dev/kvm).
    pub kvm_device: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// The directory hostPath images resolve under.
    pub images_dir: PathBuf,
    /// CPU flags from /proc/cpuinfo.
    pub cpu_flags: Vec<String>,
    /// libvirt's DAC label for QEMU (from [`crate::hypervisor::HostInfo`]).
    pub qemu_label: Option<(u32, u32)>,
}

/// Gathers the facts and keeps the probe's hysteresis between checks.
pub struct Monitor {
    config: MonitorConfig,
    tracker: probe::ProbeTracker,
    last_probe_error: Option<String>,
    qemu: Option<QemuUser>,
    caps: Option<crate::hypervisor::caps::HostCaps>,
}

impl Monitor {
    /// A monitor with no probe recorded yet.
    pub fn new(config: MonitorConfig) -> Self {
        let qemu = config.qemu_label.map(|(u, g)| QemuUser::lookup(u, g));
        Self {
            config,
            tracker: probe::ProbeTracker::default(),
            last_probe_error: None,
            qemu,
            caps: None,
        }
    }

    /// Time one capability probe. Returns the duration, `None` when the call failed.
    pub async fn probe(&mut self, hv: &dyn Hypervisor) -> Option<Duration> {
        let start = Instant::now();
        match hv.probe_capabilities().await {
            Ok(caps) => {
                let took = start.elapsed();
                self.tracker.record(took);
                self.last_probe_error = None;
                self.caps = Some(caps);
                Some(took)
            }
            Err(e) => {
                self.last_probe_error = Some(e.to_string());
                None
            }
        }
    }

    /// Guest devices the host can provide, from the last probe that answered; `None`
    /// before any did (a failed probe keeps what the last one found: a slow libvirt does
    /// not make swtpm go away).
    pub fn caps(&self) -> Option<crate::hypervisor::caps::HostCaps> {
        self.caps
    }

    /// The findings now (the probe's from the probes recorded so far).
    pub fn report(&self, connected: bool) -> Report {
        let kvm_facts = kvm::KvmFacts::read(&self.config.kvm_device, &self.config.cpu_flags);
        Report {
            kvm: kvm::verdict(&kvm_facts, self.qemu.as_ref()),
            libvirt: self.libvirt_finding(connected),
            storage: access::check(
                &[
                    ("state", &self.config.state_dir),
                    ("images", &self.config.images_dir),
                ],
                self.qemu.as_ref(),
            ),
        }
    }

    fn libvirt_finding(&self, connected: bool) -> Finding {
        let ms = |d: Duration| d.as_millis();
        if !connected {
            return Finding::problem(
                probe::reason::DISCONNECTED,
                "the agent has no connection to libvirtd: check that libvirtd runs (hack/\
                 start-libvirtd.sh, or systemctl status libvirtd)"
                    .into(),
            );
        }
        if let Some(e) = &self.last_probe_error {
            return Finding::problem(
                probe::reason::FAILED,
                format!("libvirt's capability probe failed: {e}"),
            );
        }
        let last = self.tracker.last().unwrap_or_default();
        if self.tracker.healthy() {
            Finding::ok(
                probe::reason::HEALTHY,
                format!("capability probe took {} ms", ms(last)),
            )
        } else {
            Finding::problem(
                probe::reason::SLOW,
                format!(
                    "libvirt's capability probes keep taking seconds (last {} ms): its QEMU \
                     capability cache is invalidated on every call, so every define and start \
                     waits for a fresh probe of QEMU. The usual cause is /dev/kvm usable by \
                     root but not by the QEMU user (see KVMAvailable); fix it, then restart \
                     libvirtd",
                    ms(last)
                ),
            )
        }
    }

    /// The last probe's duration.
    pub fn last_probe(&self) -> Option<Duration> {
        self.tracker.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dac_label_names_the_qemu_user() {
        let xml = "<capabilities><host><secmodel><model>none</model><doi>0</doi></secmodel>\
                   <secmodel><model>dac</model><doi>0</doi>\
                   <baselabel type='kvm'>+64055:+64055</baselabel>\
                   <baselabel type='qemu'>+64055:+64055</baselabel></secmodel></host>\
                   </capabilities>";
        assert_eq!(parse_dac_label(xml), Some((64055, 64055)));
        assert_eq!(parse_dac_label("<capabilities/>"), None);
        assert_eq!(
            parse_dac_label("<secmodel><model>dac</model><baselabel>+x:+1</baselabel>"),
            None
        );
    }

    #[test]
    fn access_follows_the_owner_then_group_then_other_class() {
        let u = QemuUser {
            name: "q".into(),
            uid: 5,
            groups: vec![5, 7],
        };
        assert!(can_access(0o600, 5, 0, &u, 6));
        assert!(
            !can_access(0o060, 5, 7, &u, 6),
            "owner class wins even if empty"
        );
        assert!(can_access(0o060, 0, 7, &u, 6));
        assert!(!can_access(0o660, 0, 0, &u, 6));
        assert!(can_access(0o001, 0, 0, &u, 1));
        let root = QemuUser {
            name: "root".into(),
            uid: 0,
            groups: vec![0],
        };
        assert!(can_access(0o000, 1, 1, &root, 6));
    }

    #[test]
    fn a_slow_libvirt_or_unreachable_storage_makes_the_host_unschedulable_but_no_kvm_does_not() {
        let ok = |r| Finding::ok(r, String::new());
        let bad = |r| Finding::problem(r, String::new());
        let mut r = Report {
            kvm: bad(kvm::reason::NO_HARDWARE),
            libvirt: ok(probe::reason::HEALTHY),
            storage: ok(access::reason::ACCESSIBLE),
        };
        assert!(r.schedulable());
        assert_eq!(r.summary(), "NoHardwareVirtualization");
        r.libvirt = bad(probe::reason::SLOW);
        assert!(!r.schedulable());
        assert_eq!(r.summary(), "CapabilityProbeSlow,NoHardwareVirtualization");
        let conds = r.conditions(Some(1), &Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(conds.len(), 3);
        assert_eq!(conds[1].type_, "LibvirtHealthy");
        assert_eq!(conds[1].status, "False");
    }
}
