//! Authentication: the `Authorization: Bearer` header to a user. Static tokens (the token file,
//! the kubeconfig's admin token, tokens made for extra kubeconfigs) first, then service-account
//! tokens this server signed. An invalid token is 401 whatever the anonymous policy says, as in
//! kube-apiserver; a request with no credentials follows [`AnonymousAccess`].
//!
//! Owns the token table and the signing key; never decides what a user may do.

use super::{UserInfo, sa_token};
use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::RwLock;

/// What a request without credentials is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnonymousAccess {
    /// The cluster administrator (`admin`, `system:masters`): how the devcluster behaved before
    /// it had identities, kept as the default so token-less clients and kubeconfigs still work.
    #[default]
    Admin,
    /// `system:anonymous` in `system:unauthenticated`, subject to RBAC (kube-apiserver's
    /// default `--anonymous-auth=true`).
    Anonymous,
    /// 401 Unauthorized (kube-apiserver with `--anonymous-auth=false`).
    Deny,
}

impl std::str::FromStr for AnonymousAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "anonymous" => Ok(Self::Anonymous),
            "deny" => Ok(Self::Deny),
            _ => Err(format!(
                "unknown anonymous access {s:?}: use admin, anonymous or deny"
            )),
        }
    }
}

/// Looks up whether a ServiceAccount exists and its uid (namespace, name).
pub type ServiceAccountLookup<'a> = &'a dyn Fn(&str, &str) -> Option<String>;

/// The authenticator.
pub struct Authenticator {
    tokens: RwLock<HashMap<String, UserInfo>>,
    key: Vec<u8>,
    anonymous: AnonymousAccess,
    admin_token: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

/// A fresh random token (128 bits, hex).
pub fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Authenticator {
    /// An authenticator with static `tokens`, the signing `key`, and a new admin token.
    pub fn new(
        mut tokens: HashMap<String, UserInfo>,
        key: Vec<u8>,
        anonymous: AnonymousAccess,
    ) -> Self {
        let admin_token = random_token();
        tokens.insert(admin_token.clone(), UserInfo::admin());
        Self {
            tokens: RwLock::new(tokens),
            key,
            anonymous,
            admin_token,
        }
    }

    /// The token of `admin` (written into the default kubeconfig).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The service-account signing key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Adds a static token for `user` and returns it.
    pub fn add_user(&self, user: UserInfo) -> String {
        let t = random_token();
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t.clone(), user);
        t
    }

    /// The user a token stands for, checking service-account tokens against `sa` (the
    /// ServiceAccount must still exist with the uid in the token) and `audiences`.
    pub fn token_user(
        &self,
        token: &str,
        audiences: &[String],
        sa: ServiceAccountLookup<'_>,
    ) -> Option<UserInfo> {
        if let Some(u) = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            return Some(u.clone());
        }
        let claims = sa_token::verify(&self.key, token, audiences).ok()?;
        let k = &claims.kubernetes;
        let uid = sa(&k.namespace, &k.serviceaccount.name)?;
        if !k.serviceaccount.uid.is_empty() && uid != k.serviceaccount.uid {
            return None;
        }
        Some(sa_token::user_of(&claims))
    }

    /// The user of a request with this `Authorization` header value.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        sa: ServiceAccountLookup<'_>,
    ) -> Result<UserInfo, ApiError> {
        let Some(h) = authorization.map(str::trim).filter(|h| !h.is_empty()) else {
            return match self.anonymous {
                AnonymousAccess::Admin => Ok(UserInfo::admin()),
                AnonymousAccess::Anonymous => Ok(UserInfo::anonymous()),
                AnonymousAccess::Deny => Err(ApiError::unauthorized()),
            };
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        self.token_user(token, &[sa_token::ISSUER.to_string()], sa)
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_sa(_: &str, _: &str) -> Option<String> {
        None
    }

    #[test]
    fn no_credentials_follow_the_anonymous_policy_and_bad_tokens_are_401() {
        let a = Authenticator::new(HashMap::new(), b"k".to_vec(), AnonymousAccess::Deny);
        assert_eq!(a.authenticate(None, &no_sa).unwrap_err().code, 401);
        assert_eq!(
            a.authenticate(Some("Bearer nope"), &no_sa)
                .unwrap_err()
                .code,
            401
        );
        let admin = format!("Bearer {}", a.admin_token());
        assert_eq!(
            a.authenticate(Some(&admin), &no_sa).unwrap(),
            UserInfo::admin()
        );
        let open = Authenticator::new(HashMap::new(), b"k".to_vec(), AnonymousAccess::Anonymous);
        assert_eq!(
            open.authenticate(None, &no_sa).unwrap(),
            UserInfo::anonymous()
        );
        assert_eq!(
            open.authenticate(Some("Bearer nope"), &no_sa)
                .unwrap_err()
                .code,
            401
        );
    }

    #[test]
    fn a_service_account_token_fails_once_its_account_is_gone_or_replaced() {
        let a = Authenticator::new(HashMap::new(), b"k".to_vec(), AnonymousAccess::Deny);
        let (t, _) = sa_token::mint(
            a.key(),
            &sa_token::TokenSpec {
                namespace: "ns",
                name: "sa",
                uid: "u1",
                audiences: vec![],
                expiration_seconds: 60,
                node: None,
            },
        );
        let h = format!("Bearer {t}");
        let same = |_: &str, _: &str| Some("u1".to_string());
        let other = |_: &str, _: &str| Some("u2".to_string());
        assert_eq!(
            a.authenticate(Some(&h), &same).unwrap().username,
            "system:serviceaccount:ns:sa"
        );
        assert_eq!(a.authenticate(Some(&h), &other).unwrap_err().code, 401);
        assert_eq!(a.authenticate(Some(&h), &no_sa).unwrap_err().code, 401);
    }
}
