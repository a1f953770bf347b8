//! This machine as it is: development qualifies, production does not.

use ivctl::host::evaluate::CHECK_IDS;
use serde_json::Value;

use crate::common::*;

#[test]
fn development_qualifies_with_warnings_and_the_test_domain_is_removed() {
    require_libvirtd();
    let out = host_check(&["--profile", "development", "-o", "json"], None);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["qualifies"], true);
    assert_eq!(r["profile"], "development");
    for c in r["checks"].as_array().unwrap() {
        assert_ne!(c["status"], "fail", "{c:#}");
    }
    let d = check(&r, "domain-test");
    assert!(d["status"] == "pass" || d["status"] == "warn", "{d:#}");
    for step in ["define", "start", "destroy"] {
        assert!(d["timingsMs"][step].is_u64(), "{step} not timed: {d:#}");
    }
    if !cpu_has_virt_flags() {
        assert!(
            d["finding"].as_str().unwrap().contains("(type=qemu)"),
            "without vmx/svm the test domain must use TCG: {d:#}"
        );
    }
    assert_domain_gone(&domain_name(&r));
}

#[test]
fn the_json_report_parses_and_has_every_check_with_a_remedy_unless_it_passed() {
    require_libvirtd();
    let out = host_check(&["-o", "json", "--skip-domain-test"], None);
    let r = report(&out);
    assert_eq!(
        r["profile"], "production",
        "production is the default profile"
    );
    assert!(r["qualifies"].is_boolean());
    assert_eq!(r["libvirtUri"], URI);
    let ids: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, CHECK_IDS);
    for c in r["checks"].as_array().unwrap() {
        let status = c["status"].as_str().unwrap();
        assert!(["pass", "warn", "fail"].contains(&status), "{c:#}");
        assert!(!c["finding"].as_str().unwrap().is_empty(), "{c:#}");
        assert_eq!(c["remedy"].is_string(), status != "pass", "{c:#}");
    }
    assert_eq!(check(&r, "domain-test")["status"], "warn");
    let failed = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "fail");
    assert_eq!(r["qualifies"], Value::Bool(!failed));
    assert_eq!(out.status.code(), Some(if failed { 1 } else { 0 }));
}

#[test]
fn production_fails_here_with_exit_1_and_the_table_names_the_remedy() {
    require_libvirtd();
    let json = report(&host_check(
        &["--profile", "production", "-o", "json"],
        None,
    ));
    assert_domain_gone(&domain_name(&json));
    let out = host_check(&["--profile", "production", "--skip-domain-test"], None);
    let table = stdout(&out);
    assert!(table.lines().all(|l| l.chars().count() <= 120), "{table}");
    assert!(table.starts_with("CHECK"), "{table}");
    if cpu_has_virt_flags() {
        assert_eq!(check(&json, "cpu-flags")["status"], "pass");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("does NOT qualify for the production profile"),
        "{table}"
    );
    let kvm = check(&json, "kvm");
    assert_eq!(kvm["status"], "fail", "{kvm:#}");
    let remedy = kvm["remedy"].as_str().unwrap();
    assert!(remedy.contains("vmx/svm"), "{remedy}");
    // The table wraps cells, so look for the remedy's words on the kvm rows.
    let words: Vec<&str> = table.split_whitespace().collect();
    for w in remedy.split_whitespace() {
        assert!(
            words.contains(&w),
            "{w:?} of the remedy is missing from\n{table}"
        );
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("kvm ") && l.contains(" fail "))
    );
}
