//! Keeps [`crate::pki::Pki`] current: watches the Secret with the server's certificate and
//! the front-proxy ConfigMap, and feeds each change in (a renewed certificate is served to
//! the next connection without a restart).

use std::sync::Arc;

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

use crate::authn::FrontProxy;
use crate::pki::{Material, Pki};

/// Where the ConfigMap of kube-apiserver's request-header authentication lives.
pub const AUTH_CONFIGMAP_NAMESPACE: &str = "kube-system";
/// Its name.
pub const AUTH_CONFIGMAP: &str = "extension-apiserver-authentication";
/// The Secret with the console server's certificate.
pub const TLS_SECRET: &str = "ironvisor-console-tls";

fn secret_material(s: Option<&Secret>, m: &mut Material) {
    let field = |k: &str| {
        s.and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(k))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    m.cert = field("tls.crt");
    m.key = field("tls.key");
    m.console_ca = field("ca.crt");
}

fn auth_material(c: Option<&ConfigMap>, m: &mut Material) {
    let data = c.and_then(|c| c.data.clone()).unwrap_or_default();
    m.front_proxy_ca = data
        .get("requestheader-client-ca-file")
        .filter(|v| !v.trim().is_empty())
        .cloned();
    m.front_proxy = c.map(|_| FrontProxy::from_configmap(&data));
}

/// Follows one named object, applying `set` to the material at every change (`None` when
/// it is deleted). Runs until the process ends; the watcher retries with backoff.
async fn follow<K>(api: Api<K>, name: &str, pki: Arc<Pki>, set: fn(Option<&K>, &mut Material))
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen_in_relist = false;
    let stream = watcher::watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Apply(o) | Event::InitApply(o))) => {
                seen_in_relist = true;
                pki.update(|m| set(Some(&o), m));
            }
            Ok(Some(Event::Delete(_))) => pki.update(|m| set(None, m)),
            Ok(Some(Event::Init)) => seen_in_relist = false,
            Ok(Some(Event::InitDone)) if !seen_in_relist => pki.update(|m| set(None, m)),
            Ok(Some(Event::InitDone)) => {}
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, name, "watching TLS material failed; retrying"),
        }
    }
}

/// Starts following the Secret (in `namespace`) and the front-proxy ConfigMap.
pub fn spawn(client: kube::Client, namespace: &str, pki: Arc<Pki>) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let cms: Api<ConfigMap> = Api::namespaced(client, AUTH_CONFIGMAP_NAMESPACE);
    tokio::spawn(follow(secrets, TLS_SECRET, pki.clone(), secret_material));
    tokio::spawn(follow(cms, AUTH_CONFIGMAP, pki, auth_material));
}
