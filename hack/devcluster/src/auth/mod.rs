//! Identity and authorisation, as kube-apiserver does them: who is asking (bearer tokens from a
//! token file, service-account tokens this server signs), whether RBAC allows it, review APIs
//! (TokenReview, SubjectAccessReview), and ValidatingAdmissionPolicy.
//!
//! Owns the user model and the decisions; never writes objects except through `ops` (token
//! requests and bootstrap roles go through the same write path as any client).

pub mod aggregation;
pub mod attributes;
pub mod authn;
pub mod bootstrap;
pub mod escalation;
pub mod impersonation;
pub mod rbac;
pub mod rbac_index;
pub mod reviews;
pub mod sa_token;
pub mod token_file;
pub mod vap;
pub mod vap_match;

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The group whose members bypass authorisation (kube-apiserver's `system:masters`).
pub const MASTERS: &str = "system:masters";
/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user name of anonymous requests.
pub const ANONYMOUS: &str = "system:anonymous";
/// `userInfo.extra` key carrying the node a service-account token is bound to.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// `userInfo.extra` key carrying the uid of the node a token is bound to.
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
/// `userInfo.extra` key carrying the token's id (`JTI=<uuid>`).
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// An authenticated identity (kube-apiserver's `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name, e.g. `alice` or `system:serviceaccount:ns:name`.
    pub username: String,
    /// Stable id, when the authenticator knows one.
    pub uid: String,
    /// Groups, including `system:authenticated` for authenticated users.
    pub groups: Vec<String>,
    /// Extra attributes (node-bound token claims, credential id).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with these groups plus `system:authenticated` (as every authenticator adds it).
    pub fn new(username: &str, uid: &str, groups: &[String]) -> Self {
        let mut g: Vec<String> = groups.to_vec();
        if !g.iter().any(|x| x == AUTHENTICATED) {
            g.push(AUTHENTICATED.into());
        }
        Self {
            username: username.into(),
            uid: uid.into(),
            groups: g,
            extra: BTreeMap::new(),
        }
    }

    /// The cluster administrator of the written kubeconfig: `admin` in `system:masters`.
    pub fn admin() -> Self {
        Self::new("admin", "", &[MASTERS.into()])
    }

    /// The identity of the server's own writes (default namespaces, bootstrap roles, GC).
    pub fn apiserver() -> Self {
        Self::new("system:apiserver", "", &[MASTERS.into()])
    }

    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        Self {
            username: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The `userInfo` JSON of reviews and admission requests.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }

    /// A user from a review's `spec` (`user`, `groups`, `uid`, `extra`).
    pub fn from_review_spec(spec: &Value) -> Self {
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let extra = spec["extra"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strs(v))).collect())
            .unwrap_or_default();
        Self {
            username: spec["user"].as_str().unwrap_or_default().into(),
            uid: spec["uid"].as_str().unwrap_or_default().into(),
            groups: strs(&spec["groups"]),
            extra,
        }
    }
}
