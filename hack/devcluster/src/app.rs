//! Shared server state: the store, the registry of served resources, and request parameters.
//!
//! Owns keeping the registry in step with stored CRDs. Never speaks HTTP.

use crate::aggregator::front_proxy::FrontProxy;
use crate::auth::UserInfo;
use crate::auth::attributes::Attributes;
use crate::auth::authn::Authenticator;
use crate::auth::rbac_index::{self, RbacIndex};
use crate::auth::vap::{self, VapIndex};
use crate::error::ApiError;
use crate::registry::{Registry, Served};
use crate::resource::ResourceInfo;
use crate::store::Store;
use crate::validation::FieldValidation;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// Storage key of CRDs.
pub const CRD_KEY: &str = "customresourcedefinitions.apiextensions.k8s.io";
/// Storage key of namespaces.
pub const NS_KEY: &str = "namespaces.";
/// Storage key of service accounts.
pub const SA_KEY: &str = "serviceaccounts.";

/// Server state.
pub struct App {
    /// Objects and events.
    pub store: Store,
    registry: RwLock<Arc<Registry>>,
    /// Poked after deletions so garbage collection runs promptly.
    pub gc_wake: Notify,
    /// Tokens and the service-account signing key.
    pub auth: Authenticator,
    rbac: RwLock<Arc<RbacIndex>>,
    vap: RwLock<Arc<VapIndex>>,
    /// The front-proxy CA and client certificate of API aggregation.
    pub front_proxy: FrontProxy,
}

/// What admission needs from the store, fetched before the store lock is taken.
#[derive(Debug, Default)]
pub struct AdmissionInputs {
    /// Policies and bindings.
    pub vap: Arc<VapIndex>,
    /// The request's Namespace object.
    pub namespace: Option<Arc<Value>>,
    /// Params of bindings with a `paramRef` (by binding name; absent when not found).
    pub params: HashMap<String, Value>,
    /// The RBAC index, for writes of RBAC objects by users outside `system:masters`
    /// (escalation prevention).
    pub rbac: Option<Arc<RbacIndex>>,
}

impl App {
    /// State over `store`; the registry is built from the CRDs it holds.
    pub fn new(store: Store, auth: Authenticator, front_proxy: FrontProxy) -> Self {
        let app = Self {
            store,
            registry: RwLock::new(Arc::new(Registry::default())),
            gc_wake: Notify::new(),
            auth,
            rbac: RwLock::new(Arc::new(RbacIndex::default())),
            vap: RwLock::new(Arc::new(VapIndex::default())),
            front_proxy,
        };
        app.refresh_registry();
        app
    }

    /// The current registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds the registry from the stored CRDs.
    pub fn refresh_registry(&self) {
        let (crds, _) = self.store.list(CRD_KEY, None);
        let r = Arc::new(Registry::build(&crds));
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = r;
    }

    /// The RBAC index, rebuilt first when a role or binding changed since it was built.
    pub fn rbac(&self) -> Arc<RbacIndex> {
        let stamp = self.store.key_versions(&rbac_index::KEYS);
        let cur = self.rbac.read().unwrap_or_else(|e| e.into_inner()).clone();
        if cur.stamp == stamp {
            return cur;
        }
        let [r, cr, rb, crb] = rbac_index::KEYS.map(|k| self.store.list(k, None).0);
        let built = Arc::new(RbacIndex::build(stamp, &r, &cr, &rb, &crb));
        *self.rbac.write().unwrap_or_else(|e| e.into_inner()) = built.clone();
        built
    }

    /// The admission policy index, rebuilt first when a policy or binding changed.
    pub fn vap(&self) -> Arc<VapIndex> {
        let stamp = self.store.key_versions(&vap::KEYS);
        let cur = self.vap.read().unwrap_or_else(|e| e.into_inner()).clone();
        if cur.stamp == stamp {
            return cur;
        }
        let [p, b] = vap::KEYS.map(|k| self.store.list(k, None).0);
        let built = Arc::new(VapIndex::build(stamp, &p, &b));
        *self.vap.write().unwrap_or_else(|e| e.into_inner()) = built.clone();
        built
    }

    /// The policies, namespace, params and RBAC a write to `t` by `user` is admitted with.
    pub fn admission_inputs(&self, t: &Target, user: &UserInfo) -> AdmissionInputs {
        let rbac = (t.info().group == "rbac.authorization.k8s.io"
            && !user.in_group(crate::auth::MASTERS))
        .then(|| self.rbac());
        let vap = self.vap();
        if vap.pairs.is_empty() {
            return AdmissionInputs {
                rbac,
                ..Default::default()
            };
        }
        let namespace = t
            .info()
            .namespaced
            .then(|| self.store.get(NS_KEY, "", t.ns()))
            .flatten();
        let reg = self.registry();
        let mut params = HashMap::new();
        for pair in &vap.pairs {
            let pk = &pair.policy["spec"]["paramKind"];
            let pr = &pair.binding["spec"]["paramRef"];
            let (Some(av), Some(kind), Some(name)) = (
                pk["apiVersion"].as_str(),
                pk["kind"].as_str(),
                pr["name"].as_str(),
            ) else {
                continue;
            };
            let Some(served) = reg
                .all()
                .iter()
                .find(|s| s.info.api_version() == av && s.info.kind == kind)
            else {
                continue;
            };
            let ns = match (served.info.namespaced, pr["namespace"].as_str()) {
                (false, _) => "",
                (true, Some(n)) => n,
                (true, None) => t.ns(),
            };
            if let Some(o) = self.store.get(&served.info.storage_key(), ns, name) {
                let bname = pair.binding["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default();
                params.insert(bname.to_string(), (*o).clone());
            }
        }
        AdmissionInputs {
            vap,
            namespace,
            params,
            rbac,
        }
    }

    /// Whether `user` may do `a` (members of `system:masters` without looking at RBAC).
    pub fn allows(&self, user: &UserInfo, a: &Attributes) -> bool {
        user.in_group(crate::auth::MASTERS) || self.rbac().allows(user, a)
    }

    /// Ok when `user` may do `a`, else kube-apiserver's 403.
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Result<(), ApiError> {
        if self.allows(user, a) {
            return Ok(());
        }
        Err(rbac_index::forbidden(user, a))
    }

    /// The uid of ServiceAccount `ns/name`, if it exists.
    pub fn service_account_uid(&self, ns: &str, name: &str) -> Option<String> {
        let sa = self.store.get(SA_KEY, ns, name)?;
        Some(
            sa["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// The user of a request with this `Authorization` header value (or 401).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<UserInfo, ApiError> {
        self.auth.authenticate(authorization, &|ns, name| {
            self.service_account_uid(ns, name)
        })
    }

    /// Whether namespace `ns` exists, and whether it is terminating.
    pub fn namespace_state(&self, ns: &str) -> Option<bool> {
        self.store
            .get(NS_KEY, "", ns)
            .map(|o| o["metadata"]["deletionTimestamp"].is_string())
    }
}

/// The resource a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is served there.
    pub served: Arc<Served>,
    /// Namespace from the path (None: cluster scope or all namespaces).
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource (`status`).
    pub subresource: Option<String>,
}

impl Target {
    /// The resource description.
    pub fn info(&self) -> &ResourceInfo {
        &self.served.info
    }

    /// The storage key.
    pub fn key(&self) -> String {
        self.served.info.storage_key()
    }

    /// Namespace to store under ("" for cluster-scoped).
    pub fn ns(&self) -> &str {
        if self.served.info.namespaced {
            self.namespace.as_deref().unwrap_or_default()
        } else {
            ""
        }
    }
}

/// Query parameters of an API request.
#[derive(Debug, Clone)]
pub struct Params {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (apply).
    pub force: bool,
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `watch`.
    pub watch: bool,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `propagationPolicy`.
    pub propagation_policy: Option<String>,
    /// `includeObject` for tables.
    pub include_object: Option<String>,
    /// Who asks (the HTTP layer sets it after authentication; the server's own writes are
    /// `system:apiserver`).
    pub user: UserInfo,
}

impl Params {
    /// Parses a query map. Unknown keys are ignored, as the apiserver does.
    pub fn from_query(q: &HashMap<String, String>) -> Self {
        let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
        let fv = match q.get("fieldValidation").map(String::as_str) {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        };
        Self {
            dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
            field_manager: q.get("fieldManager").cloned(),
            field_validation: fv,
            force: flag("force"),
            label_selector: q.get("labelSelector").filter(|s| !s.is_empty()).cloned(),
            field_selector: q.get("fieldSelector").filter(|s| !s.is_empty()).cloned(),
            limit: q
                .get("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0),
            continue_token: q.get("continue").filter(|s| !s.is_empty()).cloned(),
            watch: flag("watch"),
            resource_version: q.get("resourceVersion").filter(|s| !s.is_empty()).cloned(),
            timeout_seconds: q.get("timeoutSeconds").and_then(|t| t.parse().ok()),
            bookmarks: flag("allowWatchBookmarks"),
            propagation_policy: q.get("propagationPolicy").cloned(),
            include_object: q.get("includeObject").cloned(),
            user: UserInfo::apiserver(),
        }
    }
}

/// Whether a resource is one of the two built-in Event APIs (one storage, two shapes).
pub fn is_event(info: &ResourceInfo) -> bool {
    !info.custom && info.plural == "events"
}

/// Presents a stored object at the requested version (no conversion: the schemas are
/// assumed compatible, as with a CRD's `None` conversion strategy).
pub fn present(obj: &Value, info: &ResourceInfo) -> Value {
    if is_event(info) {
        let mut o = crate::events::convert(obj, &info.group);
        o["apiVersion"] = Value::String(info.api_version());
        return o;
    }
    let mut o = obj.clone();
    o["apiVersion"] = Value::String(info.api_version());
    o
}
