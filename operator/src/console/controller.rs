//! The console signer, run by the leader: keeps the console CA (Secret, created when
//! absent), publishes its certificate (ConfigMap, and the APIService's caBundle when the
//! APIService exists), keeps the console server's certificate (Secret
//! `ironvisor-console-tls`), and signs each host's request into
//! `Hypervisor.status.consoleCertificate`, renewing before expiry.
//!
//! Level-triggered: every pass reads everything and repairs what is missing, stale or
//! signed by another CA. A refused request leaves the host without a certificate, with a
//! Warning Event and the condition `ConsoleCertificateIssued=False` saying why.

use super::metrics::SignerMetrics;
use super::sign::{self, Pair, SignError};
use crate::leader::Leadership;
use base64::Engine as _;
use ironvisor_crds::console::ConsoleCertificate;
use ironvisor_crds::hypervisor::Hypervisor;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource as _, ResourceExt as _};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The CA Secret (tls.crt, tls.key).
pub const CA_SECRET: &str = "ironvisor-console-ca";
/// The ConfigMap with the CA certificate (ca.crt).
pub const CA_CONFIGMAP: &str = "ironvisor-console-ca";
/// The console server's Secret (tls.crt, tls.key, ca.crt).
pub const CONSOLE_TLS_SECRET: &str = "ironvisor-console-tls";
/// The aggregated API's APIService.
pub const APISERVICE: &str = "v1.subresources.ironvisor.io";
/// The field manager of the signer's writes.
pub const MANAGER: &str = "ironvisor-operator-console";
/// The condition the signer sets on a Hypervisor.
pub const CONDITION: &str = "ConsoleCertificateIssued";

/// Why a pass failed (it is retried at the next one).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused a read or write.
    #[error("API call failed")]
    Api(#[from] kube::Error),
    /// The CA could not be made or used.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The CA Secret exists but holds no usable CA.
    #[error(
        "Secret {CA_SECRET} holds no usable CA (tls.crt, tls.key); delete it to make a new one"
    )]
    BadCaSecret,
}

/// What the signer needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader signs.
    pub leadership: Leadership,
    /// Events on Hypervisors.
    pub recorder: Recorder,
    /// The operator's namespace (where the Secrets and the ConfigMap live).
    pub namespace: String,
    /// How often a pass runs.
    pub period: Duration,
    /// Counters.
    pub metrics: SignerMetrics,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn bytes(s: &Option<BTreeMap<String, ByteString>>, key: &str) -> Option<String> {
    let v = s.as_ref()?.get(key)?;
    String::from_utf8(v.0.clone()).ok()
}

/// Run passes until the task is dropped.
pub async fn run(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(ctx.period);
    loop {
        tick.tick().await;
        if !ctx.leadership.is_leader() {
            continue;
        }
        if let Err(e) = pass(&ctx).await {
            ctx.metrics.errors.inc();
            tracing::warn!(error = %e, "console signer pass failed; retrying");
        }
    }
}

/// One pass over the CA, the console server's certificate and every host.
pub async fn pass(ctx: &Ctx) -> Result<(), Error> {
    let ca = ensure_ca(ctx).await?;
    let issuer = sign::issuer(&ca)?;
    publish_ca(ctx, &ca).await?;
    ensure_console_tls(ctx, &ca, &issuer).await?;
    patch_apiservice(ctx, &ca).await?;
    let hvs: Api<Hypervisor> = Api::all(ctx.client.clone());
    for hv in hvs.list(&ListParams::default()).await? {
        sign_host(ctx, &hvs, &hv, &ca, &issuer).await?;
    }
    Ok(())
}

async fn ensure_ca(ctx: &Ctx) -> Result<Pair, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(s) = api.get_opt(CA_SECRET).await? {
        let pair = Pair {
            cert_pem: bytes(&s.data, "tls.crt").ok_or(Error::BadCaSecret)?,
            key_pem: bytes(&s.data, "tls.key").ok_or(Error::BadCaSecret)?,
        };
        sign::issuer(&pair).map_err(|_| Error::BadCaSecret)?;
        return Ok(pair);
    }
    let pair = sign::new_ca(now())?;
    let secret = tls_secret(CA_SECRET, &ctx.namespace, &pair, None);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            ctx.metrics.issued.with_label_values(&["ca"]).inc();
            tracing::info!(secret = CA_SECRET, "console CA created");
            Ok(pair)
        }
        // Another replica made it meanwhile: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => Box::pin(ensure_ca(ctx)).await,
        Err(e) => Err(e.into()),
    }
}

fn tls_secret(name: &str, ns: &str, pair: &Pair, ca_pem: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([
        (
            "tls.crt".to_owned(),
            ByteString(pair.cert_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_owned(),
            ByteString(pair.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some(ca) = ca_pem {
        data.insert("ca.crt".to_owned(), ByteString(ca.as_bytes().to_vec()));
    }
    let mut s = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(ns.into());
    s.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/part-of".to_owned(),
        "ironvisor".to_owned(),
    )]));
    s
}

async fn publish_ca(ctx: &Ctx, ca: &Pair) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let current = api.get_opt(CA_CONFIGMAP).await?;
    if current
        .and_then(|c| c.data)
        .and_then(|d| d.get("ca.crt").cloned())
        == Some(ca.cert_pem.clone())
    {
        return Ok(());
    }
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIGMAP, "namespace": ctx.namespace,
                     "labels": {"app.kubernetes.io/part-of": "ironvisor"}},
        "data": {"ca.crt": ca.cert_pem},
    });
    api.patch(
        CA_CONFIGMAP,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await?;
    tracing::info!(configmap = CA_CONFIGMAP, "console CA certificate published");
    Ok(())
}

async fn ensure_console_tls(
    ctx: &Ctx,
    ca: &Pair,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let current = api.get_opt(CONSOLE_TLS_SECRET).await?;
    let fresh = current.as_ref().is_some_and(|s| {
        let cert = bytes(&s.data, "tls.crt").unwrap_or_default();
        bytes(&s.data, "ca.crt").as_deref() == Some(ca.cert_pem.as_str())
            && bytes(&s.data, "tls.key").is_some()
            && sign::issued_by(&cert, &ca.cert_pem)
            && !sign::needs_renewal(&cert, now())
    });
    if fresh {
        return Ok(());
    }
    let pair = sign::issue_console(issuer, &ctx.namespace, now())?;
    let secret = tls_secret(
        CONSOLE_TLS_SECRET,
        &ctx.namespace,
        &pair,
        Some(&ca.cert_pem),
    );
    match current {
        Some(_) => {
            api.replace(CONSOLE_TLS_SECRET, &PostParams::default(), &secret)
                .await?;
        }
        None => {
            api.create(&PostParams::default(), &secret).await?;
        }
    }
    ctx.metrics.issued.with_label_values(&["console"]).inc();
    tracing::info!(
        secret = CONSOLE_TLS_SECRET,
        "console server certificate issued"
    );
    Ok(())
}

async fn patch_apiservice(ctx: &Ctx, ca: &Pair) -> Result<(), Error> {
    let ar = ApiResource {
        group: "apiregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiregistration.k8s.io/v1".into(),
        kind: "APIService".into(),
        plural: "apiservices".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
    let current = match api.get_opt(APISERVICE).await {
        Ok(Some(a)) => a,
        // Absent, or a control plane without aggregation: nothing to patch.
        Ok(None) | Err(kube::Error::Api(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem.as_bytes());
    if current.data["spec"]["caBundle"].as_str() == Some(bundle.as_str()) {
        return Ok(());
    }
    let patch = serde_json::json!({"spec": {"caBundle": bundle}});
    api.patch(APISERVICE, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(apiservice = APISERVICE, "caBundle set to the console CA");
    Ok(())
}

/// Whether `hv`'s current certificate answers its current request and needs nothing.
fn current_is_good(hv: &Hypervisor, ca: &Pair) -> bool {
    let Some(status) = &hv.status else {
        return false;
    };
    let (Some(ep), Some(cert)) = (&status.console_endpoint, &status.console_certificate) else {
        return false;
    };
    sign::csr_sha256(&ep.csr).is_some_and(|h| h.eq_ignore_ascii_case(&cert.csr_sha256))
        && sign::issued_by(&cert.certificate, &ca.cert_pem)
        && !sign::needs_renewal(&cert.certificate, now())
}

async fn sign_host(
    ctx: &Ctx,
    api: &Api<Hypervisor>,
    hv: &Hypervisor,
    ca: &Pair,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> Result<(), Error> {
    let name = hv.name_any();
    let Some(ep) = hv.status.as_ref().and_then(|s| s.console_endpoint.as_ref()) else {
        return Ok(());
    };
    if current_is_good(hv, ca) {
        return Ok(());
    }
    let allowed = sign::allowed_names(&name, &ep.address);
    let result = sign::sign_host(issuer, &ep.csr, &name, &allowed, now());
    let hash = sign::csr_sha256(&ep.csr).unwrap_or_default();
    let (cert, condition) = match &result {
        Ok(signed) => (
            Some(ConsoleCertificate {
                certificate: signed.cert_pem.clone(),
                csr_sha256: hash,
                not_after: jiff::Timestamp::from_second(signed.not_after)
                    .ok()
                    .map(Time),
            }),
            (
                "True",
                "Signed",
                "the console CA signed this host's request".to_owned(),
            ),
        ),
        Err(e) => (None, ("False", "RequestRefused", e.to_string())),
    };
    let previous = hv
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION));
    let unchanged = previous.is_some_and(|c| c.status == condition.0 && c.message == condition.2);
    if result.is_err() && unchanged {
        // Refused before with the same reason: nothing new to say.
        return Ok(());
    }
    let transition = match previous {
        Some(c) if c.status == condition.0 => c.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    let mut status = serde_json::json!({
        "conditions": [{
            "type": CONDITION,
            "status": condition.0,
            "reason": condition.1,
            "message": condition.2,
            "lastTransitionTime": transition,
        }],
    });
    // Left out when refused: this manager's earlier certificate is then removed.
    if let Some(cert) = cert {
        status["consoleCertificate"] = serde_json::json!(cert);
    }
    let patch = serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "Hypervisor",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    match result {
        Ok(_) => {
            ctx.metrics.issued.with_label_values(&["host"]).inc();
            tracing::info!(host = name, "console certificate signed");
        }
        Err(e) => {
            ctx.metrics.refused(&e);
            tracing::warn!(host = name, reason = %e, "console certificate request refused");
            let ev = Event {
                type_: EventType::Warning,
                reason: "ConsoleRequestRefused".into(),
                note: Some(e.to_string()),
                action: "SignConsoleCertificate".into(),
                secondary: None,
            };
            if let Err(err) = ctx.recorder.publish(&ev, &hv.object_ref(&())).await {
                tracing::debug!(error = %err, "console event not published");
            }
        }
    }
    Ok(())
}
