//! The signer's rules against good and hostile requests.

use super::sign::*;
use rcgen::{CertificateParams, DnType, KeyPair};

const NOW: i64 = 1_800_000_000;

fn new_test_ca() -> (Pair, rcgen::Issuer<'static, KeyPair>) {
    let pair = new_ca(NOW).unwrap();
    let issuer = issuer(&pair).unwrap();
    (pair, issuer)
}

fn request(cn: &str, names: &[&str], tweak: impl FnOnce(&mut CertificateParams)) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    tweak(&mut params);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn allowed() -> Vec<String> {
    allowed_names("host-a", "192.0.2.10:9443")
}

#[test]
fn a_hosts_own_request_is_signed_for_server_use_by_the_ca() {
    let (ca_pair, ca) = new_test_ca();
    let csr = request("hypervisor:host-a", &["host-a", "192.0.2.10"], |_| {});
    let signed = sign_host(&ca, &csr, "host-a", &allowed(), NOW).unwrap();
    assert!(issued_by(&signed.cert_pem, &ca_pair.cert_pem));
    let (from, to) = validity_of(&signed.cert_pem).unwrap();
    assert_eq!(to, signed.not_after);
    assert!(from < NOW && to > NOW + 80 * 24 * 3600);
    let der = x509_parser::pem::parse_x509_pem(signed.cert_pem.as_bytes())
        .unwrap()
        .1;
    let cert = der.parse_x509().unwrap();
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["hypervisor:host-a"]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(!cert.is_ca());
    assert_eq!(csr_sha256(&csr).unwrap().len(), 64);
}

#[test]
fn a_request_for_another_hosts_name_is_refused() {
    let (_, ca) = new_test_ca();
    let csr = request("hypervisor:host-b", &["host-a"], |_| {});
    assert_eq!(
        sign_host(&ca, &csr, "host-a", &allowed(), NOW),
        Err(SignError::CommonName {
            expected: "hypervisor:host-a".into(),
            got: "hypervisor:host-b".into()
        })
    );
    // The console server's CN is never given to a host.
    let csr = request("ironvisor-console", &["host-a"], |_| {});
    assert!(matches!(
        sign_host(&ca, &csr, "host-a", &allowed(), NOW),
        Err(SignError::CommonName { .. })
    ));
}

#[test]
fn extra_names_are_refused_and_named() {
    let (_, ca) = new_test_ca();
    for (extra, shown) in [
        (
            "ironvisor-console.ironvisor-system.svc",
            "ironvisor-console.ironvisor-system.svc",
        ),
        ("host-b", "host-b"),
        ("10.0.0.1", "10.0.0.1"),
        ("*.example.com", "*.example.com"),
    ] {
        let csr = request("hypervisor:host-a", &["host-a", extra], |_| {});
        assert_eq!(
            sign_host(&ca, &csr, "host-a", &allowed(), NOW),
            Err(SignError::ForeignName(shown.into())),
            "{extra}"
        );
    }
    let csr = request("hypervisor:host-a", &[], |_| {});
    assert_eq!(
        sign_host(&ca, &csr, "host-a", &allowed(), NOW),
        Err(SignError::NoNames)
    );
}

#[test]
fn a_request_asking_to_be_a_ca_or_with_extra_subject_fields_is_refused() {
    let (_, ca) = new_test_ca();
    let csr = request("hypervisor:host-a", &["host-a"], |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    assert_eq!(
        sign_host(&ca, &csr, "host-a", &allowed(), NOW),
        Err(SignError::Extensions)
    );
    let csr = request("hypervisor:host-a", &["host-a"], |p| {
        p.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
    });
    assert_eq!(
        sign_host(&ca, &csr, "host-a", &allowed(), NOW),
        Err(SignError::Subject)
    );
}

#[test]
fn garbage_and_tampered_requests_are_malformed() {
    let (_, ca) = new_test_ca();
    for garbage in [
        "",
        "not pem at all",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        assert_eq!(
            sign_host(&ca, garbage, "host-a", &allowed(), NOW),
            Err(SignError::Malformed),
            "{garbage:?}"
        );
    }
    // A certificate is not a request.
    let (ca_pair, _) = new_test_ca();
    assert_eq!(
        sign_host(&ca, &ca_pair.cert_pem, "host-a", &allowed(), NOW),
        Err(SignError::Malformed)
    );
    // One flipped byte in the signed part: the signature no longer verifies.
    let csr = request("hypervisor:host-a", &["host-a"], |_| {});
    let der = x509_parser::pem::parse_x509_pem(csr.as_bytes())
        .unwrap()
        .1
        .contents;
    let mut tampered = der.clone();
    let at = tampered.len() / 3;
    tampered[at] ^= 0x01;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &tampered)
    );
    assert!(sign_host(&ca, &pem, "host-a", &allowed(), NOW).is_err());
}

#[test]
fn the_console_server_gets_one_client_and_server_certificate_for_its_service() {
    let (ca_pair, ca) = new_test_ca();
    let pair = issue_console(&ca, "ironvisor-system", NOW).unwrap();
    assert!(issued_by(&pair.cert_pem, &ca_pair.cert_pem));
    let der = x509_parser::pem::parse_x509_pem(pair.cert_pem.as_bytes())
        .unwrap()
        .1;
    let cert = der.parse_x509().unwrap();
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["ironvisor-console"]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let sans = format!(
        "{:?}",
        cert.subject_alternative_name().unwrap().unwrap().value
    );
    for name in ["ironvisor-console.ironvisor-system.svc", "localhost"] {
        assert!(sans.contains(name), "{sans}");
    }
}

#[test]
fn certificates_are_renewed_after_two_thirds_of_their_life_or_when_unreadable() {
    let (ca_pair, ca) = new_test_ca();
    let pair = issue_console(&ca, "ns", NOW).unwrap();
    let (from, to) = validity_of(&pair.cert_pem).unwrap();
    assert!(!needs_renewal(&pair.cert_pem, NOW));
    assert!(needs_renewal(
        &pair.cert_pem,
        from + (to - from) * 2 / 3 + 1
    ));
    assert!(needs_renewal("garbage", NOW));
    // Another CA's certificate is not ours.
    let (other_pair, _) = new_test_ca();
    assert!(!issued_by(&pair.cert_pem, &other_pair.cert_pem));
    assert!(issued_by(&pair.cert_pem, &ca_pair.cert_pem));
}

#[test]
fn the_allowed_names_are_the_host_and_its_endpoint_host() {
    assert_eq!(allowed_names("h", "h:9443"), vec!["h"]);
    assert_eq!(allowed_names("h", "[fd00::1]:9443"), vec!["h", "fd00::1"]);
    assert_eq!(allowed_names("h", "192.0.2.1:1"), vec!["h", "192.0.2.1"]);
}
