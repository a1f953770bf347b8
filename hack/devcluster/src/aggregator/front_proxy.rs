//! The front-proxy identity (kube-apiserver's `--requestheader-*` and `--proxy-client-*`): a
//! CA made at every start, a client certificate with CN `front-proxy-client` the proxy presents
//! to aggregated servers, the `X-Remote-*` headers carrying the caller, and the ConfigMap
//! `kube-system/extension-apiserver-authentication` extension servers read to trust them.
//!
//! Owns the key material (memory only) and the header names; never reads requests.

use crate::auth::UserInfo;
use axum::http::{HeaderName, HeaderValue};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// The CN of the client certificate (kube's `requestheader-allowed-names`).
pub const CLIENT_CN: &str = "front-proxy-client";
/// The header carrying the user name.
pub const USER_HEADER: &str = "X-Remote-User";
/// The header carrying each group (repeated).
pub const GROUP_HEADER: &str = "X-Remote-Group";
/// The prefix of the headers carrying `extra` (`X-Remote-Extra-<escaped key>`).
pub const EXTRA_PREFIX: &str = "X-Remote-Extra-";
/// Namespace and name of the ConfigMap extension servers read.
pub const CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");
/// The Role kube-apiserver bootstraps so extension servers may read that ConfigMap.
pub const READER_ROLE: &str = "extension-apiserver-authentication-reader";

/// The front-proxy CA and client certificate.
pub struct FrontProxy {
    /// The CA certificate (PEM): `requestheader-client-ca-file`.
    pub ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for FrontProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontProxy").finish_non_exhaustive()
    }
}

impl FrontProxy {
    /// A new CA and a client certificate `CN=front-proxy-client` signed by it.
    pub fn generate() -> Result<Self, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "ironvisor-devcluster-front-proxy-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name.push(DnType::CommonName, CLIENT_CN);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// The client certificate chain and key, for a rustls client configuration.
    pub fn client_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }
}

/// Escapes an `extra` key for a header name as kube-apiserver does: every byte that is not an
/// HTTP token character (and `%` itself) is percent-encoded, so `a/b` becomes `a%2Fb`.
pub fn escape_extra_key(key: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if token(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers that carry `user` to an aggregated server. Values that cannot be header
/// values (control characters) are left out rather than sent mangled.
pub fn identity_headers(user: &UserInfo) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = vec![];
    let mut push = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.push((n, v));
        }
    };
    push(USER_HEADER, &user.username);
    for g in &user.groups {
        push(GROUP_HEADER, g);
    }
    for (k, vs) in &user.extra {
        let name = format!("{EXTRA_PREFIX}{}", escape_extra_key(k));
        for v in vs {
            push(&name, v);
        }
    }
    out
}

/// Whether a caller's request header must not reach an aggregated server: its credentials,
/// impersonation requests, and any front-proxy header it tried to set itself.
pub fn is_caller_identity_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "authorization" || n.starts_with("impersonate-") || n.starts_with("x-remote-")
}

/// `kube-system/extension-apiserver-authentication` with kube-apiserver's keys: the CA of
/// client certificates, and the front-proxy CA, names and headers (lists as JSON strings).
pub fn authentication_configmap(client_ca_pem: &str, front_proxy_ca_pem: &str) -> Value {
    let list = |v: &str| json!([v]).to_string();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP.1, "namespace": CONFIGMAP.0},
        "data": {
            "client-ca-file": client_ca_pem,
            "requestheader-client-ca-file": front_proxy_ca_pem,
            "requestheader-allowed-names": list(CLIENT_CN),
            "requestheader-username-headers": list(USER_HEADER),
            "requestheader-group-headers": list(GROUP_HEADER),
            "requestheader-extra-headers-prefix": list(EXTRA_PREFIX),
        },
    })
}

/// kube-apiserver's bootstrap Role that may read the ConfigMap, and its binding to the
/// controller manager and scheduler (extension servers bind their own service accounts).
pub fn reader_role_and_binding() -> [Value; 2] {
    let meta = |name: &str| {
        json!({"name": name, "namespace": CONFIGMAP.0,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": meta(READER_ROLE),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                "resourceNames": [CONFIGMAP.1], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": meta(&format!("system::{READER_ROLE}")),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": READER_ROLE},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-controller-manager"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-scheduler"},
        ]}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn identity_headers_carry_user_groups_and_escaped_extra_keys() {
        let user = UserInfo {
            username: "alice".into(),
            uid: String::new(),
            groups: vec!["tenants".into(), "system:authenticated".into()],
            extra: BTreeMap::from([(
                "authentication.kubernetes.io/node-name".to_string(),
                vec!["host-a".to_string()],
            )]),
        };
        let h: Vec<(String, String)> = identity_headers(&user)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let want = [
            ("x-remote-user", "alice"),
            ("x-remote-group", "tenants"),
            ("x-remote-group", "system:authenticated"),
            (
                "x-remote-extra-authentication.kubernetes.io%2fnode-name",
                "host-a",
            ),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(h, want);
    }

    #[test]
    fn callers_credentials_impersonation_and_forged_identity_are_stripped() {
        for n in [
            "authorization",
            "impersonate-user",
            "impersonate-extra-x",
            "x-remote-user",
            "x-remote-group",
        ] {
            assert!(
                is_caller_identity_header(&HeaderName::from_static(n)),
                "{n}"
            );
        }
        for n in ["accept", "content-type", "upgrade", "x-remotely"] {
            assert!(
                !is_caller_identity_header(&HeaderName::from_static(n)),
                "{n}"
            );
        }
    }

    #[test]
    fn the_configmap_lists_are_json_arrays_as_kube_writes_them() {
        let cm = authentication_configmap("CLIENT", "PROXY");
        assert_eq!(
            cm["data"]["requestheader-allowed-names"],
            "[\"front-proxy-client\"]"
        );
        assert_eq!(
            cm["data"]["requestheader-username-headers"],
            "[\"X-Remote-User\"]"
        );
        assert_eq!(cm["data"]["requestheader-client-ca-file"], "PROXY");
        assert_eq!(cm["data"]["client-ca-file"], "CLIENT");
    }
}
