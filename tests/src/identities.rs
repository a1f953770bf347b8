//! Identities other than the admin's for a [`System`]: kubeconfigs for test users (static
//! tokens) and for ServiceAccounts (tokens from the TokenRequest API, optionally bound to a
//! node as the kubelet's projected token of a pod on that node is), all on the TLS port.

use std::path::PathBuf;

use serde_json::Value;

use crate::system::{System, path};

/// The static token of a test user (of [`System::start_with_users`]).
pub fn user_token(user: &str) -> String {
    format!("token-of-{user}")
}

impl System {
    /// A kubeconfig acting with `token` (its user entry named `user`), on the TLS port.
    fn kubeconfig_with_token(&self, file: &str, user: &str, token: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.tls_kubeconfig).expect("the TLS kubeconfig");
        let mut config: Value = serde_saphyr::from_str(&text).expect("kubeconfig YAML");
        config["users"] = serde_json::json!([{"name": user, "user": {"token": token}}]);
        config["contexts"][0]["context"]["user"] = Value::String(user.into());
        let path = self.dir.path().join(file);
        std::fs::write(&path, config.to_string()).expect("write a kubeconfig");
        path
    }

    /// A kubeconfig acting as `user` (one of [`System::start_with_users`]').
    pub fn user_kubeconfig(&self, user: &str) -> PathBuf {
        self.kubeconfig_with_token(&format!("user-{user}.kubeconfig"), user, &user_token(user))
    }

    /// A kubeconfig acting as ServiceAccount `ironvisor-system/<name>`, with a token from the
    /// TokenRequest API bound to `node` when given (as the kubelet's projected token of a pod
    /// on that node carries its node name), or to nothing.
    pub fn service_account_kubeconfig(&self, name: &str, node: Option<&str>) -> PathBuf {
        let mut spec = serde_json::json!({"expirationSeconds": 7200});
        if let Some(n) = node {
            spec["boundObjectRef"] =
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "name": n});
        }
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec,
        });
        let file = format!("sa-{name}-{}", node.unwrap_or("unbound"));
        let request = self.dir.path().join(format!("{file}.json"));
        std::fs::write(&request, body.to_string()).expect("write the TokenRequest");
        let uri = format!("/api/v1/namespaces/ironvisor-system/serviceaccounts/{name}/token");
        let out = self.kubectl_ok(&["create", "--raw", &uri, "-f", path(&request)]);
        let answer: Value = serde_json::from_str(&out).expect("a TokenRequest answer");
        let token = answer["status"]["token"]
            .as_str()
            .expect("status.token in the TokenRequest answer");
        self.kubeconfig_with_token(&format!("{file}.kubeconfig"), name, token)
    }
}
