use super::*;
use crate::host::facts::{Step, VirtType};

const URI: &str = "qemu:///system";

fn v(major: u32, minor: u32, micro: u32) -> Version {
    Version {
        major,
        minor,
        micro,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn run(define: Step, start: Option<Step>, destroy: Option<Step>) -> DomainTestFacts {
    DomainTestFacts::Ran(DomainRun {
        name: "ironvisor-hostcheck-1a2b3c4d".into(),
        virt_type: VirtType::Qemu,
        define,
        start,
        destroy,
        cleanup: Ok(()),
    })
}

#[test]
fn a_missing_virsh_fails_with_the_package_to_install() {
    let c = unavailable("libvirt-version", URI, &LibvirtUnavailable::VirshMissing);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.remedy.as_deref(), Some("apt-get install libvirt-clients"));
    let down = unavailable(
        "domain-test",
        URI,
        &LibvirtUnavailable::Unreachable("Failed to connect socket".into()),
    );
    assert_eq!(
        down.finding,
        "cannot reach qemu:///system: Failed to connect socket"
    );
    assert!(down.remedy.unwrap().contains("hack/start-libvirtd.sh"));
}

#[test]
fn versions_below_the_minimum_fail_production_and_warn_development() {
    let ok = version(
        Profile::Production,
        "libvirt-version",
        "libvirt",
        Some(v(9, 0, 0)),
        MIN_LIBVIRT,
    );
    assert_eq!(
        (ok.status, ok.finding.as_str()),
        (Status::Pass, "libvirt 9.0.0 (minimum 8.0)")
    );
    let exact = version(
        Profile::Production,
        "qemu-version",
        "QEMU",
        Some(v(6, 2, 0)),
        MIN_QEMU,
    );
    assert_eq!(exact.status, Status::Pass);
    let old = version(
        Profile::Production,
        "qemu-version",
        "QEMU",
        Some(v(6, 1, 9)),
        MIN_QEMU,
    );
    assert_eq!(old.status, Status::Fail);
    assert_eq!(old.finding, "QEMU 6.1.9 is older than the supported 6.2");
    let dev = version(
        Profile::Development,
        "libvirt-version",
        "libvirt",
        Some(v(7, 10, 0)),
        MIN_LIBVIRT,
    );
    assert_eq!(dev.status, Status::Warn);
    let unknown = version(Profile::Production, "qemu-version", "QEMU", None, MIN_QEMU);
    assert_eq!(unknown.status, Status::Fail);
}

#[test]
fn a_slow_second_probe_is_the_thrash_finding_and_a_slow_first_one_is_not() {
    let warm = probe(&ProbeFacts::Timed {
        command: "domcapabilities".into(),
        first: ms(4146),
        second: ms(23),
    });
    assert_eq!(warm.status, Status::Pass);
    assert_eq!(
        warm.finding,
        "virsh domcapabilities: 4146 ms, then 23 ms (cached)"
    );
    let t = warm.timings_ms.unwrap();
    assert_eq!((t.first_probe, t.second_probe), (Some(4146), Some(23)));
    let thrash = probe(&ProbeFacts::Timed {
        command: "domcapabilities".into(),
        first: ms(4000),
        second: ms(3900),
    });
    assert_eq!(thrash.status, Status::Warn);
    assert!(thrash.finding.contains("capability cache thrash"));
    assert!(thrash.remedy.unwrap().contains("chmod 0660 /dev/kvm"));
    assert_eq!(
        probe(&ProbeFacts::Failed("no QEMU".into())).status,
        Status::Fail
    );
}

#[test]
fn a_fast_domain_test_passes_with_its_timings() {
    let c = domain_test(URI, &run(Ok(ms(19)), Some(Ok(ms(537))), Some(Ok(ms(1257)))));
    assert_eq!(c.status, Status::Pass);
    assert_eq!(
        c.finding,
        "ironvisor-hostcheck-1a2b3c4d (type=qemu): define 19 ms, start 537 ms, destroy 1257 ms"
    );
    let t = c.timings_ms.unwrap();
    assert_eq!(
        (t.define, t.start, t.destroy),
        (Some(19), Some(537), Some(1257))
    );
}

#[test]
fn a_define_over_a_second_warns_of_the_cache_thrash() {
    let c = domain_test(
        URI,
        &run(Ok(ms(56_000)), Some(Ok(ms(400))), Some(Ok(ms(900)))),
    );
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.finding.contains("define 56000 ms (over 1 s"),
        "{}",
        c.finding
    );
}

#[test]
fn a_domain_that_does_not_start_fails_with_libvirts_message() {
    let msg = "internal error: process exited while connecting to monitor: Could not access KVM kernel module";
    let c = domain_test(URI, &run(Ok(ms(20)), Some(Err(msg.into())), None));
    assert_eq!(c.status, Status::Fail);
    assert!(c.finding.ends_with(msg), "{}", c.finding);
    assert!(
        c.remedy
            .unwrap()
            .contains("ironvisor-hostcheck-1a2b3c4d.log")
    );
    let undefinable = domain_test(URI, &run(Err("XML error".into()), None, None));
    assert_eq!(undefinable.status, Status::Fail);
    assert!(
        undefinable
            .finding
            .contains("could not be defined: XML error")
    );
}

#[test]
fn a_domain_left_behind_fails_and_says_how_to_remove_it() {
    let DomainTestFacts::Ran(mut r) = run(Ok(ms(20)), Some(Ok(ms(400))), Some(Ok(ms(900)))) else {
        unreachable!()
    };
    r.cleanup = Err("operation timed out".into());
    let c = domain_test(URI, &DomainTestFacts::Ran(r));
    assert_eq!(c.status, Status::Fail);
    assert!(c.finding.contains("was left behind: operation timed out"));
    assert!(
        c.remedy
            .unwrap()
            .contains("virsh -c qemu:///system undefine ironvisor-hostcheck-1a2b3c4d")
    );
}

#[test]
fn a_skipped_domain_test_warns() {
    let c = domain_test(URI, &DomainTestFacts::Skipped);
    assert_eq!(c.status, Status::Warn);
    assert_eq!(c.timings_ms, None);
}
