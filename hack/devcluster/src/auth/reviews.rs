//! The review APIs: SubjectAccessReview (and its Local and Self forms, so `kubectl auth can-i`
//! works), SelfSubjectRulesReview (`kubectl auth can-i --list`), TokenReview, SelfSubjectReview
//! (`kubectl auth whoami`), and TokenRequest (`kubectl create token`). None is stored, as in
//! kube-apiserver: each answers its request with `status` filled in.
//!
//! Owns the translation between the review bodies and the authenticator/authoriser.

use super::attributes::Attributes;
use super::rbac::Rule;
use super::{UserInfo, sa_token};
use crate::app::App;
use crate::error::ApiError;
use serde_json::{Value, json};

/// Default and bounds of a requested token's lifetime (kube-apiserver: 1 h, at least 10 min).
const DEFAULT_EXPIRY: i64 = 3600;
const MIN_EXPIRY: i64 = 600;
const MAX_EXPIRY: i64 = 48 * 3600;

/// The review endpoints served, by group and resource.
pub fn is_review(group: &str, resource: &str) -> bool {
    matches!(
        (group, resource),
        (
            "authorization.k8s.io",
            "subjectaccessreviews"
                | "selfsubjectaccessreviews"
                | "localsubjectaccessreviews"
                | "selfsubjectrulesreviews"
        ) | (
            "authentication.k8s.io",
            "tokenreviews" | "selfsubjectreviews"
        )
    )
}

fn answer(mut body: Value, api_version: &str, kind: &str, status: Value) -> Value {
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    body["status"] = status;
    body
}

/// Attributes from a review's `resourceAttributes` or `nonResourceAttributes`.
fn review_attributes(spec: &Value) -> Result<Attributes, ApiError> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let r = &spec["resourceAttributes"];
    let n = &spec["nonResourceAttributes"];
    match (r.is_object(), n.is_object()) {
        (true, false) => Ok(Attributes {
            verb: s(&r["verb"]),
            resource_request: true,
            namespace: s(&r["namespace"]),
            api_group: s(&r["group"]),
            api_version: s(&r["version"]),
            resource: s(&r["resource"]),
            subresource: s(&r["subresource"]),
            name: s(&r["name"]),
            path: String::new(),
        }),
        (false, true) => Ok(Attributes {
            verb: s(&n["verb"]),
            path: s(&n["path"]),
            ..Default::default()
        }),
        _ => Err(ApiError::unprocessable(
            "spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

fn decide(app: &App, user: &UserInfo, a: &Attributes) -> Value {
    if app.allows(user, a) {
        json!({"allowed": true})
    } else {
        json!({"allowed": false})
    }
}

/// POST of a review of `resource` in `group` (namespace from the path for the Local form).
pub fn review(
    app: &App,
    caller: &UserInfo,
    group: &str,
    resource: &str,
    path_ns: Option<&str>,
    body: Value,
) -> Result<Value, ApiError> {
    let spec = body["spec"].clone();
    if !is_review(group, resource) {
        return Err(ApiError::no_route());
    }
    match resource {
        "selfsubjectaccessreviews" => {
            let a = review_attributes(&spec)?;
            let st = decide(app, caller, &a);
            Ok(answer(
                body,
                "authorization.k8s.io/v1",
                "SelfSubjectAccessReview",
                st,
            ))
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let user = UserInfo::from_review_spec(&spec);
            if user.username.is_empty() && user.groups.is_empty() {
                return Err(ApiError::unprocessable(
                    "spec.user: Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            let a = review_attributes(&spec)?;
            let kind = if resource == "subjectaccessreviews" {
                "SubjectAccessReview"
            } else {
                if let Some(ns) = path_ns
                    && a.namespace != ns
                {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
                "LocalSubjectAccessReview"
            };
            let st = decide(app, &user, &a);
            Ok(answer(body, "authorization.k8s.io/v1", kind, st))
        }
        "selfsubjectrulesreviews" => {
            let ns = spec["namespace"].as_str().unwrap_or_default();
            let rules = if caller.in_group(super::MASTERS) {
                crate::auth::bootstrap::cluster_roles()
                    .first()
                    .map(Rule::list_from)
                    .unwrap_or_default()
            } else {
                app.rbac().rules_for(caller, ns)
            };
            Ok(answer(
                body,
                "authorization.k8s.io/v1",
                "SelfSubjectRulesReview",
                rules_status(&rules),
            ))
        }
        "tokenreviews" => Ok(token_review(app, body)),
        "selfsubjectreviews" => {
            let st = json!({"userInfo": caller.to_json()});
            Ok(answer(
                body,
                "authentication.k8s.io/v1",
                "SelfSubjectReview",
                st,
            ))
        }
        _ => Err(ApiError::no_route()),
    }
}

fn rules_status(rules: &[Rule]) -> Value {
    let mut resource = vec![];
    let mut non_resource = vec![];
    for r in rules {
        if r.non_resource_urls.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource.push(v);
        } else {
            non_resource.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
}

fn token_review(app: &App, body: Value) -> Value {
    let token = body["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let wanted: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let audiences = if wanted.is_empty() {
        vec![sa_token::ISSUER.to_string()]
    } else {
        wanted
    };
    let user = app.auth.token_user(&token, &audiences, &|ns, name| {
        app.service_account_uid(ns, name)
    });
    let st = match user {
        Some(u) => json!({"authenticated": true, "user": u.to_json(), "audiences": audiences}),
        None => json!({"authenticated": false, "error": "invalid bearer token", "user": {}}),
    };
    answer(body, "authentication.k8s.io/v1", "TokenReview", st)
}

/// POST `serviceaccounts/<name>/token` in `ns`: a signed token for that ServiceAccount.
pub fn token_request(app: &App, ns: &str, name: &str, body: Value) -> Result<Value, ApiError> {
    let uid = app
        .service_account_uid(ns, name)
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let spec = &body["spec"];
    let expiry = spec["expirationSeconds"].as_i64().unwrap_or(DEFAULT_EXPIRY);
    if expiry < MIN_EXPIRY {
        return Err(ApiError::unprocessable(format!(
            "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {expiry}: may not specify a duration less than 10 minutes"
        )));
    }
    let bound = &spec["boundObjectRef"];
    let node = match bound["kind"].as_str() {
        None => None,
        Some("Node") => Some(sa_token::Ref {
            name: bound["name"].as_str().unwrap_or_default().into(),
            uid: bound["uid"].as_str().unwrap_or_default().into(),
        }),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "cannot bind a token to a {other}: this control plane serves no {other}s; bind to a Node or to nothing"
            )));
        }
    };
    let ts = sa_token::TokenSpec {
        namespace: ns,
        name,
        uid: &uid,
        audiences: spec["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        expiration_seconds: expiry.min(MAX_EXPIRY),
        node,
    };
    let (token, exp) = sa_token::mint(app.auth.key(), &ts);
    let exp_ts = jiff::Timestamp::from_second(exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut out = answer(
        body,
        "authentication.k8s.io/v1",
        "TokenRequest",
        json!({"token": token, "expirationTimestamp": exp_ts}),
    );
    out["metadata"]["name"] = json!(name);
    out["metadata"]["namespace"] = json!(ns);
    if out["spec"]["expirationSeconds"].is_null() {
        out["spec"]["expirationSeconds"] = json!(ts.expiration_seconds);
    }
    if out["spec"]["audiences"].is_null() {
        out["spec"]["audiences"] = json!([sa_token::ISSUER]);
    }
    Ok(out)
}
