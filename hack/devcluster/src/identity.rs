//! Identities for clients of a running [`DevCluster`]: kube clients and kubeconfigs acting as
//! the administrator, as any user and groups, or with a service-account token.
//!
//! Owns the kubeconfig text; tokens come from the authenticator.

use crate::ClientError;
use crate::{AnonymousAccess, DevCluster, UserInfo, auth};
use base64::Engine;
use std::path::Path;

impl DevCluster {
    /// A kube client for this server acting as `admin` (default namespace `default`).
    pub fn client(&self) -> Result<kube::Client, ClientError> {
        self.client_with_token(self.app.auth.admin_token())
    }

    /// A kube client acting as the user of `token` (default namespace `default`).
    pub fn client_with_token(&self, token: &str) -> Result<kube::Client, ClientError> {
        let uri: axum::http::Uri = self
            .url()
            .parse()
            .map_err(|_| ClientError::Url(self.url()))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        config.auth_info.token = Some(secrecy::SecretString::from(token.to_string()));
        Ok(kube::Client::try_from(config)?)
    }

    /// A kube client acting as `user` in `groups` (a static token is made for it).
    pub fn client_for(&self, user: &str, groups: &[&str]) -> Result<kube::Client, ClientError> {
        self.client_with_token(&self.token_for(user, groups))
    }

    /// The admin kubeconfig text (context `devcluster`, user `admin` in `system:masters`).
    /// While token-less requests are admin (the default) it points at the plain port, where
    /// kubectl sends no token; otherwise at the TLS port with the admin token.
    pub fn kubeconfig(&self) -> String {
        let token = self.app.auth.admin_token();
        match (self.anonymous, self.tls_url()) {
            (AnonymousAccess::Admin, _) | (_, None) => {
                kubeconfig_text(&self.url(), "admin", token, None)
            }
            (_, Some(url)) => kubeconfig_text(&url, "admin", token, Some(&self.ca_pem)),
        }
    }

    /// The admin kubeconfig for the TLS port with the admin token (`None` without TLS).
    pub fn tls_admin_kubeconfig(&self) -> Option<String> {
        let url = self.tls_url()?;
        Some(kubeconfig_text(
            &url,
            "admin",
            self.app.auth.admin_token(),
            Some(&self.ca_pem),
        ))
    }

    /// Writes the admin kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// A new bearer token for `user` in `groups` (plus `system:authenticated`), as a line of
    /// a token file would give.
    pub fn token_for(&self, user: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.app.auth.add_user(UserInfo::new(user, "", &groups))
    }

    /// A kubeconfig acting as `user` in `groups` (a tenant, an agent, the operator). It points
    /// at the TLS port (kubectl sends tokens only over TLS), or the plain one without TLS.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> String {
        self.kubeconfig_with_token(user, &self.token_for(user, groups))
    }

    /// A kubeconfig acting as whoever `token` stands for (e.g. a service-account token).
    pub fn kubeconfig_with_token(&self, user: &str, token: &str) -> String {
        match self.tls_url() {
            Some(url) => kubeconfig_text(&url, user, token, Some(&self.ca_pem)),
            None => kubeconfig_text(&self.url(), user, token, None),
        }
    }

    /// `https://127.0.0.1:PORT` of the TLS port, when served.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_addr.map(|a| format!("https://{a}"))
    }

    /// The PEM of the CA that signed the TLS port's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A token for ServiceAccount `namespace/name` (it must exist), optionally bound to a node
    /// as kube-apiserver binds the tokens of pods on that node: the user's `extra` then carries
    /// `authentication.kubernetes.io/node-name`.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        node: Option<&str>,
    ) -> Option<String> {
        let uid = self.app.service_account_uid(namespace, name)?;
        let spec = auth::sa_token::TokenSpec {
            namespace,
            name,
            uid: &uid,
            audiences: vec![],
            expiration_seconds: 3600,
            node: node.map(|n| auth::sa_token::Ref {
                name: n.into(),
                uid: String::new(),
            }),
        };
        Some(auth::sa_token::mint(self.app.auth.key(), &spec).0)
    }
}

/// A kubeconfig for `url` acting with bearer `token` (its user entry named `user`), trusting
/// `ca_pem` for an `https` URL.
pub fn kubeconfig_text(url: &str, user: &str, token: &str, ca_pem: Option<&str>) -> String {
    let user = serde_json::Value::String(user.to_string());
    let ca = ca_pem
        .map(|p| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(p)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: devcluster\n  cluster:\n    server: {url}\n{ca}\
         contexts:\n- name: devcluster\n  context:\n    cluster: devcluster\n    user: {user}\n    namespace: default\n\
         current-context: devcluster\nusers:\n- name: {user}\n  user:\n    token: {token}\npreferences: {{}}\n"
    )
}
