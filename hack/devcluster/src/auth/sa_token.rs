//! Service-account tokens: JWTs this server signs (HS256 with a key of its own) with the claims
//! kube-apiserver's bound tokens carry (`sub`, `kubernetes.io.namespace`, `.serviceaccount`,
//! optionally `.node`), and their verification.
//!
//! Pure apart from the clock; whether the ServiceAccount still exists is the caller's check.

use super::{EXTRA_CREDENTIAL_ID, EXTRA_NODE_NAME, EXTRA_NODE_UID, UserInfo};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer and default audience (kube-apiserver's usual `--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A name and uid pair in the `kubernetes.io` claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ref {
    /// Object name.
    pub name: String,
    /// Object uid.
    #[serde(default)]
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubeClaim {
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: Ref,
    /// The node the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
}

/// All claims of a service-account token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: String,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Kubernetes claims.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaim,
}

/// What to mint.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    /// Namespace of the ServiceAccount.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its uid.
    pub uid: &'a str,
    /// Audiences (empty: the issuer).
    pub audiences: Vec<String>,
    /// Lifetime in seconds.
    pub expiration_seconds: i64,
    /// Node binding (name, uid).
    pub node: Option<Ref>,
}

/// A token that does not verify.
#[derive(Debug, thiserror::Error)]
#[error("the service account token is invalid")]
pub struct InvalidToken(#[source] jsonwebtoken::errors::Error);

/// The user name of a ServiceAccount.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Signs a token for `spec`; returns it and its expiry (seconds since the epoch).
pub fn mint(key: &[u8], spec: &TokenSpec<'_>) -> (String, i64) {
    let iat = now();
    let exp = iat + spec.expiration_seconds;
    let aud = if spec.audiences.is_empty() {
        vec![ISSUER.to_string()]
    } else {
        spec.audiences.clone()
    };
    let claims = Claims {
        aud,
        exp,
        iat,
        nbf: iat,
        iss: ISSUER.into(),
        jti: uuid::Uuid::new_v4().to_string(),
        sub: username(spec.namespace, spec.name),
        kubernetes: KubeClaim {
            namespace: spec.namespace.into(),
            serviceaccount: Ref {
                name: spec.name.into(),
                uid: spec.uid.into(),
            },
            node: spec.node.clone(),
        },
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
    // HS256 over serializable claims cannot fail.
    .unwrap_or_default();
    (token, exp)
}

/// Verifies signature, issuer, expiry and that one of `audiences` is in the token's.
pub fn verify(key: &[u8], token: &str, audiences: &[String]) -> Result<Claims, InvalidToken> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(audiences);
    v.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &v)
        .map(|d| d.claims)
        .map_err(InvalidToken)
}

/// The user a verified token stands for, with kube-apiserver's groups and extra.
pub fn user_of(c: &Claims) -> UserInfo {
    let ns = &c.kubernetes.namespace;
    let mut u = UserInfo::new(
        &c.sub,
        &c.kubernetes.serviceaccount.uid,
        &[
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ],
    );
    u.extra
        .insert(EXTRA_CREDENTIAL_ID.into(), vec![format!("JTI={}", c.jti)]);
    if let Some(n) = &c.kubernetes.node {
        u.extra.insert(EXTRA_NODE_NAME.into(), vec![n.name.clone()]);
        if !n.uid.is_empty() {
            u.extra.insert(EXTRA_NODE_UID.into(), vec![n.uid.clone()]);
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(node: Option<&str>) -> TokenSpec<'static> {
        TokenSpec {
            namespace: "ironvisor-system",
            name: "ironvisor-agent",
            uid: "sa-uid",
            audiences: vec![],
            expiration_seconds: 3600,
            node: node.map(|n| Ref {
                name: n.into(),
                uid: String::new(),
            }),
        }
    }

    #[test]
    fn a_node_bound_token_names_the_service_account_and_its_node() {
        let (t, _) = mint(b"k", &spec(Some("host-a")));
        let c = verify(b"k", &t, &[ISSUER.into()]).unwrap();
        let u = user_of(&c);
        assert_eq!(
            u.username,
            "system:serviceaccount:ironvisor-system:ironvisor-agent"
        );
        assert_eq!(
            u.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ironvisor-system",
                "system:authenticated"
            ]
        );
        assert_eq!(u.extra[EXTRA_NODE_NAME], vec!["host-a"]);
        assert_eq!(u.uid, "sa-uid");
    }

    #[test]
    fn another_key_another_audience_or_expiry_is_refused() {
        let (t, _) = mint(b"k", &spec(None));
        assert!(verify(b"other", &t, &[ISSUER.into()]).is_err());
        assert!(verify(b"k", &t, &["vault".into()]).is_err());
        let mut s = spec(None);
        s.expiration_seconds = -10;
        let (old, _) = mint(b"k", &s);
        assert!(verify(b"k", &old, &[ISSUER.into()]).is_err());
    }
}
