//! Verdicts on libvirt: versions against the supported minimum, the capability probe's
//! timing, and the domain test. Pure.

use std::time::Duration;

use super::args::Profile;
use super::facts::{DomainRun, DomainTestFacts, LibvirtUnavailable, ProbeFacts, Version};
use super::verdict::{Check, Status, Timings, millis};

/// Oldest libvirt Ironvisor supports.
pub const MIN_LIBVIRT: Version = Version {
    major: 8,
    minor: 0,
    micro: 0,
};
/// Oldest QEMU Ironvisor supports.
pub const MIN_QEMU: Version = Version {
    major: 6,
    minor: 2,
    micro: 0,
};
/// A call slower than this, once libvirt's cache is warm, means the cache is thrashing.
pub const SLOW_CALL: Duration = Duration::from_secs(1);

/// What fixes a thrashing capability cache.
const THRASH_REMEDY: &str = "let the QEMU user open /dev/kvm (chgrp kvm /dev/kvm && chmod 0660 \
     /dev/kvm, or hack/start-libvirtd.sh) and restart libvirtd; libvirtd's debug log names the \
     reason (virQEMUCapsIsValid)";

/// The check `id` could not run because libvirt could not be asked: a failure in every
/// profile, since no VM runs without it.
pub fn unavailable(id: &'static str, uri: &str, why: &LibvirtUnavailable) -> Check {
    match why {
        LibvirtUnavailable::VirshMissing => Check::problem(
            id,
            Status::Fail,
            "virsh not found on PATH: libvirt cannot be asked",
            "apt-get install libvirt-clients",
        ),
        LibvirtUnavailable::Unreachable(msg) => Check::problem(
            id,
            Status::Fail,
            format!("cannot reach {uri}: {msg}"),
            "start libvirtd (hack/start-libvirtd.sh or systemctl start libvirtd; install \
             libvirt-daemon-system first if it is missing)",
        ),
    }
}

/// `libvirt-version` or `qemu-version`: at least the supported minimum. Older is a failure
/// in production and a warning in development.
pub fn version(
    profile: Profile,
    id: &'static str,
    product: &str,
    found: Option<Version>,
    min: Version,
) -> Check {
    let minimum = format!("{}.{}", min.major, min.minor);
    match found {
        Some(v) if v >= min => Check::pass(id, format!("{product} {v} (minimum {minimum})")),
        Some(v) => Check::problem(
            id,
            Status::required_in_production(profile),
            format!("{product} {v} is older than the supported {minimum}"),
            format!(
                "upgrade {product} to {minimum} or later (Debian 12 ships libvirt 9.0, QEMU 7.2)"
            ),
        ),
        None => Check::problem(
            id,
            Status::required_in_production(profile),
            format!("virsh version reported no {product} version"),
            "point --libvirt-uri at libvirt's QEMU driver (qemu:///system)",
        ),
    }
}

/// `capability-probe`: the second capability call must come from libvirt's cache.
pub fn probe(f: &ProbeFacts) -> Check {
    const ID: &str = "capability-probe";
    match f {
        ProbeFacts::Failed(msg) => Check::problem(
            ID,
            Status::Fail,
            format!("libvirt could not report its capabilities: {msg}"),
            "read libvirtd's log; apt-get install qemu-system-x86 if QEMU is missing",
        ),
        ProbeFacts::Timed {
            command,
            first,
            second,
        } => {
            let timings = Timings {
                first_probe: Some(millis(*first)),
                second_probe: Some(millis(*second)),
                ..Timings::default()
            };
            let (a, b) = (millis(*first), millis(*second));
            let check = if *second > SLOW_CALL {
                Check::problem(
                    ID,
                    Status::Warn,
                    format!(
                        "virsh {command}: {a} ms, again {b} ms: libvirt re-probes QEMU on every \
                         call (capability cache thrash)"
                    ),
                    THRASH_REMEDY,
                )
            } else {
                Check::pass(ID, format!("virsh {command}: {a} ms, then {b} ms (cached)"))
            };
            check.with_timings(timings)
        }
    }
}

/// `domain-test`: the tiny domain was defined, started, destroyed and removed.
pub fn domain_test(uri: &str, f: &DomainTestFacts) -> Check {
    const ID: &str = "domain-test";
    let run = match f {
        DomainTestFacts::Skipped => {
            return Check::problem(
                ID,
                Status::Warn,
                "not run (--skip-domain-test)",
                "run without --skip-domain-test to qualify the host",
            );
        }
        DomainTestFacts::Ran(run) => run,
    };
    let timings = Timings {
        define: run.define.as_ref().ok().map(|d| millis(*d)),
        start: run
            .start
            .as_ref()
            .and_then(|s| s.as_ref().ok())
            .map(|d| millis(*d)),
        destroy: run
            .destroy
            .as_ref()
            .and_then(|s| s.as_ref().ok())
            .map(|d| millis(*d)),
        ..Timings::default()
    };
    let check = run_verdict(ID, uri, run, &timings);
    with_cleanup(check, uri, run).with_timings(timings)
}

/// The verdict on the steps, before the clean-up is considered.
fn run_verdict(id: &'static str, uri: &str, run: &DomainRun, t: &Timings) -> Check {
    let ty = format!("{} (type={})", run.name, run.virt_type.as_str());
    let define = match &run.define {
        Err(msg) => {
            return Check::problem(
                id,
                Status::Fail,
                format!("{ty} could not be defined: {msg}"),
                format!(
                    "fix what libvirt names; virsh -c {uri} domcapabilities shows what it supports"
                ),
            );
        }
        Ok(d) => *d,
    };
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    match (&run.start, &run.destroy) {
        (Some(Err(msg)), _) => Check::problem(
            id,
            Status::Fail,
            format!(
                "{ty} defined in {} ms but did not start: {msg}",
                ms(t.define)
            ),
            format!(
                "fix what libvirt names (apt-get install qemu-system-x86 if QEMU is missing); \
                 /var/log/libvirt/qemu/{}.log has QEMU's side",
                run.name
            ),
        ),
        (_, Some(Err(msg))) => Check::problem(
            id,
            Status::Fail,
            format!("{ty} started but could not be stopped: {msg}"),
            "read libvirtd's log; a guest that cannot be stopped cannot be managed",
        ),
        _ if define > SLOW_CALL => Check::problem(
            id,
            Status::Warn,
            format!(
                "{ty}: define {} ms (over 1 s: capability cache thrash), start {} ms, \
                 destroy {} ms",
                ms(t.define),
                ms(t.start),
                ms(t.destroy)
            ),
            THRASH_REMEDY,
        ),
        _ => Check::pass(
            id,
            format!(
                "{ty}: define {} ms, start {} ms, destroy {} ms",
                ms(t.define),
                ms(t.start),
                ms(t.destroy)
            ),
        ),
    }
}

/// A domain left behind fails the check, whatever the steps did.
fn with_cleanup(check: Check, uri: &str, run: &DomainRun) -> Check {
    let Err(msg) = &run.cleanup else {
        return check;
    };
    let finding = format!(
        "{}; domain {} was left behind: {msg}",
        check.finding, run.name
    );
    let undefine = format!(
        "virsh -c {uri} destroy {0}; virsh -c {uri} undefine {0}",
        run.name
    );
    let remedy = match check.remedy {
        Some(r) => format!("{r}; remove it: {undefine}"),
        None => format!("remove it: {undefine}"),
    };
    Check {
        status: Status::Fail,
        finding,
        remedy: Some(remedy),
        ..check
    }
}

#[cfg(test)]
#[path = "eval_libvirt_tests.rs"]
mod tests;
