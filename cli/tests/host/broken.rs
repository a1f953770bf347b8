//! Broken inputs: each makes the check fail with its remedy, without touching the host.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn a_state_dir_under_a_private_directory_fails_the_traversal_check_with_the_remedy() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let out = host_check(
        &[
            "--profile",
            "development",
            "-o",
            "json",
            "--skip-domain-test",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        None,
    );
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["qualifies"], false);
    let access = check(&r, "state-dir-access");
    assert_eq!(access["status"], "fail", "{access:#}");
    let private = tmp.path().canonicalize().unwrap();
    let finding = access["finding"].as_str().unwrap();
    assert!(
        finding.contains(&format!("{} (drwx------", private.display())),
        "{finding}"
    );
    let remedy = access["remedy"].as_str().unwrap();
    assert!(
        remedy.starts_with(&format!("chmod o+x {}", private.display())),
        "{remedy}"
    );
    assert_eq!(check(&r, "images-dir-access")["status"], "pass");
}

#[test]
fn without_virsh_the_libvirt_checks_fail_and_say_what_to_install() {
    let empty = tempfile::tempdir().unwrap();
    let out = host_check(
        &["--profile", "development", "-o", "json"],
        Some(empty.path().to_str().unwrap()),
    );
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    for id in [
        "libvirt-version",
        "qemu-version",
        "capability-probe",
        "domain-test",
    ] {
        let c = check(&r, id);
        assert_eq!(c["status"], "fail", "{c:#}");
        assert_eq!(c["remedy"], "apt-get install libvirt-clients");
    }
    assert_ne!(
        check(&r, "numa")["status"],
        "fail",
        "the local checks still run"
    );
}

#[test]
fn an_unreachable_libvirt_fails_with_its_message_and_how_to_start_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .args(["host", "check", "--profile", "development", "-o", "json"])
        .args([
            "--libvirt-uri",
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
        ])
        .output()
        .unwrap();
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    let c = check(&r, "libvirt-version");
    assert_eq!(c["status"], "fail");
    let finding = c["finding"].as_str().unwrap();
    assert!(finding.contains("/nonexistent/libvirt-sock"), "{finding}");
    assert!(
        c["remedy"]
            .as_str()
            .unwrap()
            .contains("hack/start-libvirtd.sh")
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = host_check(&["--profile", "staging"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("production, development"));
}

#[test]
fn a_qemu_user_that_cannot_open_dev_kvm_fails_the_kvm_check_with_the_chgrp_remedy() {
    // Not a change to the host: qemu.conf is the test's own, naming a user outside every
    // group /dev/kvm could have.
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("qemu.conf");
    std::fs::write(&conf, "user = \"nobody\"\ngroup = \"nogroup\"\n").unwrap();
    let out = host_check(
        &[
            "--profile",
            "production",
            "-o",
            "json",
            "--skip-domain-test",
            "--qemu-conf",
            conf.to_str().unwrap(),
        ],
        None,
    );
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    let kvm = check(&r, "kvm");
    assert_eq!(kvm["status"], "fail", "{kvm:#}");
    let finding = kvm["finding"].as_str().unwrap();
    if !std::path::Path::new("/dev/kvm").exists() {
        assert!(finding.starts_with("no /dev/kvm"), "{finding}");
        return;
    }
    assert!(finding.starts_with("crw-"), "{finding}");
    assert!(
        finding.contains(": nobody cannot open it; libvirt re-probes QEMU"),
        "{finding}"
    );
    let remedy = kvm["remedy"].as_str().unwrap();
    assert!(
        remedy.starts_with("chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (what udev's rule does)"),
        "{remedy}"
    );
}
