//! The console CA's rules, pure: making the CA, checking a host's certificate request and
//! signing it, and issuing the console server's certificate.
//!
//! A request is never trusted beyond its public key and the names it asks for: the signed
//! certificate is built from fresh parameters (no CA bit, server use only, our validity),
//! and the names must be exactly the host's own (`hypervisor:<name>`, the host's name and
//! its endpoint's host). Anything else is refused with a reason a person can act on.

use ironvisor_crds::console::CONSOLE_CLIENT_CN;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest as _, Sha256};
use std::net::IpAddr;
use std::time::Duration;

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a host's or the console server's certificate is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The CA certificate's common name.
pub const CA_COMMON_NAME: &str = "ironvisor-console-ca";

/// Why a request is refused or a certificate cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// Not a PEM certificate request, or its signature does not verify.
    #[error("the certificate request is not a valid PKCS#10 request")]
    Malformed,
    /// The request asks for extensions a host certificate never has (a CA bit, say).
    #[error("the certificate request asks for extensions a host may not have")]
    Extensions,
    /// The common name is not `hypervisor:<name>`.
    #[error("the request's common name is {got:?}, not {expected:?}")]
    CommonName {
        /// What the host must ask for.
        expected: String,
        /// What it asked for.
        got: String,
    },
    /// The subject has more than a common name.
    #[error("the request's subject must be the common name alone")]
    Subject,
    /// A subject alternative name that is not the host's.
    #[error("the request names {0:?}, which is not this host's name or endpoint address")]
    ForeignName(String),
    /// The request names nothing at all.
    #[error("the request names no host")]
    NoNames,
    /// The CA's certificate or key is unusable.
    #[error("the console CA is unusable; delete its Secret to make a new one")]
    Ca,
    /// rcgen could not sign.
    #[error("signing failed")]
    Sign,
}

/// A PEM certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// A signed host certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// When it expires (seconds since the epoch).
    pub not_after: i64,
}

/// SHA-256 (hex) of the DER inside a PEM request; the agent compares it with its own.
pub fn csr_sha256(pem: &str) -> Option<String> {
    let parsed = pem_der(pem)?;
    (parsed.label == "CERTIFICATE REQUEST").then(|| hex::encode(Sha256::digest(&parsed.contents)))
}

/// The first PEM block of `pem`.
fn pem_der(pem: &str) -> Option<x509_parser::pem::Pem> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .ok()
        .map(|(_, p)| p)
}

fn validity(params: &mut CertificateParams, now: i64, lifetime: Duration) {
    let at = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(s).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    // Five minutes back: clocks of hosts and the control plane differ a little.
    params.not_before = at(now - 300);
    params.not_after = at(now + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2));
}

/// A new CA (ECDSA P-256), valid from `now`.
pub fn new_ca(now: i64) -> Result<Pair, SignError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|_| SignError::Sign)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, now, CA_VALIDITY);
    let cert = params.self_signed(&key).map_err(|_| SignError::Sign)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The issuer for a stored CA.
pub fn issuer(ca: &Pair) -> Result<Issuer<'static, KeyPair>, SignError> {
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|_| SignError::Ca)?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|_| SignError::Ca)
}

/// The names a host may have in its certificate: its own name and its endpoint's host.
pub fn allowed_names(host: &str, endpoint_address: &str) -> Vec<String> {
    let ep = endpoint_address
        .rsplit_once(':')
        .map_or(endpoint_address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut names = vec![host.to_owned()];
    if !ep.is_empty() && ep != host {
        names.push(ep.to_owned());
    }
    names
}

fn san_text(san: &SanType) -> String {
    match san {
        SanType::DnsName(d) => d.as_str().to_owned(),
        SanType::IpAddress(ip) => ip.to_string(),
        SanType::Rfc822Name(n) => format!("email:{}", n.as_str()),
        SanType::URI(u) => format!("uri:{}", u.as_str()),
        _ => "another kind of name".to_owned(),
    }
}

fn san_is_allowed(san: &SanType, allowed: &[String]) -> bool {
    match san {
        SanType::DnsName(d) => allowed.iter().any(|a| a.eq_ignore_ascii_case(d.as_str())),
        SanType::IpAddress(ip) => allowed
            .iter()
            .any(|a| a.parse::<IpAddr>().ok() == Some(*ip)),
        _ => false,
    }
}

/// Check `host`'s request and sign it for `LEAF_VALIDITY` from `now`.
pub fn sign_host(
    ca: &Issuer<'_, KeyPair>,
    csr_pem: &str,
    host: &str,
    allowed: &[String],
    now: i64,
) -> Result<Signed, SignError> {
    let req = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
        rcgen::Error::UnsupportedExtension => SignError::Extensions,
        _ => SignError::Malformed,
    })?;
    let expected = format!("hypervisor:{host}");
    let dn = &req.params.distinguished_name;
    if dn.iter().count() != 1 {
        return Err(SignError::Subject);
    }
    let got = match dn.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    };
    if got != expected {
        return Err(SignError::CommonName { expected, got });
    }
    if req.params.is_ca != IsCa::NoCa && req.params.is_ca != IsCa::ExplicitNoCa {
        return Err(SignError::Extensions);
    }
    let sans = &req.params.subject_alt_names;
    if sans.is_empty() {
        return Err(SignError::NoNames);
    }
    if let Some(bad) = sans.iter().find(|s| !san_is_allowed(s, allowed)) {
        return Err(SignError::ForeignName(san_text(bad)));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, expected);
    params.subject_alt_names = sans.clone();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, LEAF_VALIDITY);
    let cert = params
        .signed_by(&req.public_key, ca)
        .map_err(|_| SignError::Sign)?;
    Ok(Signed {
        cert_pem: cert.pem(),
        not_after: params.not_after.unix_timestamp(),
    })
}

/// The console server's certificate: client (CN `ironvisor-console`, to the agents) and
/// server (the aggregated API's Service, and loopback for a local control plane).
pub fn issue_console(
    ca: &Issuer<'_, KeyPair>,
    namespace: &str,
    now: i64,
) -> Result<Pair, SignError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|_| SignError::Sign)?;
    let service = "ironvisor-console";
    let names = vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let mut params = CertificateParams::new(names).map_err(|_| SignError::Sign)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CONSOLE_CLIENT_CN);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, LEAF_VALIDITY);
    let cert = params.signed_by(&key, ca).map_err(|_| SignError::Sign)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Validity of a PEM certificate: (not before, not after), seconds since the epoch.
pub fn validity_of(cert_pem: &str) -> Option<(i64, i64)> {
    let parsed = pem_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&parsed.contents).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Whether `cert_pem` was issued by the CA `ca_pem` (its signature verifies).
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> bool {
    let parse = |p: &str| pem_der(p).map(|p| p.contents);
    let (Some(cert), Some(ca)) = (parse(cert_pem), parse(ca_pem)) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(&cert),
        x509_parser::parse_x509_certificate(&ca),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// Whether a certificate should be replaced at `now`: unreadable, or past two thirds of
/// its lifetime.
pub fn needs_renewal(cert_pem: &str, now: i64) -> bool {
    match validity_of(cert_pem) {
        Some((from, to)) => now >= from + (to - from) * 2 / 3,
        None => true,
    }
}
