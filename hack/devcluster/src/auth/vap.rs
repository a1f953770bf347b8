//! ValidatingAdmissionPolicy: the stored policies and bindings (admissionregistration.k8s.io/v1)
//! evaluated with CEL on every write they select, after schema validation, as kube-apiserver's
//! validating admission does. Variables: `object`, `oldObject`, `request` (with `userInfo`
//! and its `extra`, so a policy can hold a node-bound agent to its own node), `params`,
//! `namespaceObject`, `variables`. `matchConditions` gate a policy; each failed validation
//! denies (422 unless the validation names another `reason`), warns or is ignored, per the
//! binding's `validationActions`; an expression that errors follows `failurePolicy`.
//!
//! Owns the index of policy/binding pairs and the decision; pure over its inputs (params and
//! the namespace are fetched by the caller, outside the store lock).

use super::UserInfo;
use super::vap_match::{self, Request};
use crate::error::ApiError;
use kube_cel::KubeCelExt;
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Storage keys of policies and bindings.
pub const KEYS: [&str; 2] = [
    "validatingadmissionpolicies.admissionregistration.k8s.io",
    "validatingadmissionpolicybindings.admissionregistration.k8s.io",
];

/// A binding with its policy.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The policy.
    pub policy: Arc<Value>,
    /// The binding.
    pub binding: Arc<Value>,
}

/// Policy/binding pairs, ready to admit requests.
#[derive(Debug, Default)]
pub struct VapIndex {
    /// Key versions this index was built at.
    pub stamp: Vec<u64>,
    /// Pairs in binding-name order.
    pub pairs: Vec<Pair>,
}

impl VapIndex {
    /// Pairs every binding with the policy it names (bindings of missing policies do nothing).
    pub fn build(stamp: Vec<u64>, policies: &[Arc<Value>], bindings: &[Arc<Value>]) -> Self {
        let by_name: HashMap<&str, &Arc<Value>> = policies
            .iter()
            .map(|p| (p["metadata"]["name"].as_str().unwrap_or_default(), p))
            .collect();
        let pairs = bindings
            .iter()
            .filter_map(|b| {
                let p = by_name.get(b["spec"]["policyName"].as_str()?)?;
                Some(Pair {
                    policy: (*p).clone(),
                    binding: b.clone(),
                })
            })
            .collect();
        Self { stamp, pairs }
    }
}

/// One admission request.
#[derive(Debug)]
pub struct Admission<'a> {
    /// What is admitted, for matching (objects, namespace labels).
    pub req: Request<'a>,
    /// Kind of the object.
    pub kind: &'a str,
    /// Namespace ("" for cluster scope).
    pub namespace: &'a str,
    /// Who asks.
    pub user: &'a UserInfo,
    /// `dryRun`.
    pub dry_run: bool,
    /// The request's Namespace object, if any.
    pub namespace_object: Option<&'a Value>,
    /// Params per binding name (fetched by the caller).
    pub params: &'a HashMap<String, Value>,
}

/// Converts JSON into a CEL value (integers stay `int`, as Kubernetes' CEL sees them).
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => n
                .as_u64()
                .map(Cel::UInt)
                .unwrap_or_else(|| Cel::Float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => Cel::Map(Map {
            map: Arc::new(
                m.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

fn request_json(a: &Admission<'_>) -> Value {
    let r = &a.req;
    let gvr = json!({"group": r.group, "version": r.version, "resource": r.resource});
    let gvk = json!({"group": r.group, "version": r.version, "kind": a.kind});
    json!({
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "subResource": r.subresource, "name": r.name, "namespace": a.namespace,
        "operation": r.operation, "userInfo": a.user.to_json(), "dryRun": a.dry_run,
    })
}

/// Why an expression could not give a usable answer.
#[derive(Debug, thiserror::Error)]
enum EvalError {
    #[error("compilation failed: {0}")]
    Compile(String),
    #[error("{0}")]
    Execute(String),
    #[error("expression returned a {0}, not a bool")]
    NotBool(String),
}

fn eval(ctx: &Context<'_>, expr: &str) -> Result<Cel, EvalError> {
    let p = Program::compile(expr).map_err(|e| EvalError::Compile(e.to_string()))?;
    p.execute(ctx)
        .map_err(|e| EvalError::Execute(e.to_string()))
}

fn eval_bool(ctx: &Context<'_>, expr: &str) -> Result<bool, EvalError> {
    match eval(ctx, expr)? {
        Cel::Bool(b) => Ok(b),
        other => Err(EvalError::NotBool(format!("{:?}", other.type_of()))),
    }
}

fn context(a: &Admission<'_>, pair: &Pair) -> Context<'static> {
    let mut ctx = Context::default();
    ctx.register_all();
    ctx.add_variable_from_value("object", to_cel(a.req.object));
    ctx.add_variable_from_value("oldObject", to_cel(a.req.old_object));
    ctx.add_variable_from_value("request", to_cel(&request_json(a)));
    let bname = pair.binding["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    let params = a.params.get(bname).cloned().unwrap_or(Value::Null);
    ctx.add_variable_from_value("params", to_cel(&params));
    let ns = a.namespace_object.cloned().unwrap_or(Value::Null);
    ctx.add_variable_from_value("namespaceObject", to_cel(&ns));
    let mut vars: HashMap<Key, Cel> = HashMap::new();
    for v in pair.policy["spec"]["variables"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(expr)) = (v["name"].as_str(), v["expression"].as_str()) else {
            continue;
        };
        ctx.add_variable_from_value(
            "variables",
            Cel::Map(Map {
                map: Arc::new(vars.clone()),
            }),
        );
        let val = eval(&ctx, expr).unwrap_or(Cel::Null);
        vars.insert(Key::String(Arc::new(name.to_string())), val);
    }
    ctx.add_variable_from_value(
        "variables",
        Cel::Map(Map {
            map: Arc::new(vars),
        }),
    );
    ctx
}

/// What a policy concluded about one request.
enum Verdict {
    Pass,
    Fail { message: String, reason: String },
}

fn judge(ctx: &Context<'_>, policy: &Value) -> Verdict {
    let spec = &policy["spec"];
    let ignore_errors = spec["failurePolicy"].as_str() == Some("Ignore");
    let on_error = |e: EvalError, expr: &str| {
        if ignore_errors {
            Verdict::Pass
        } else {
            Verdict::Fail {
                message: format!("expression '{expr}' resulted in error: {e}"),
                reason: "Invalid".into(),
            }
        }
    };
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        let expr = c["expression"].as_str().unwrap_or("true");
        match eval_bool(ctx, expr) {
            Ok(true) => {}
            Ok(false) => return Verdict::Pass,
            Err(e) => return on_error(e, expr),
        }
    }
    for v in spec["validations"].as_array().into_iter().flatten() {
        let expr = v["expression"].as_str().unwrap_or("true");
        match eval_bool(ctx, expr) {
            Ok(true) => {}
            Ok(false) => {
                let from_expr = v["messageExpression"]
                    .as_str()
                    .and_then(|m| match eval(ctx, m) {
                        Ok(Cel::String(s)) if !s.trim().is_empty() => Some((*s).clone()),
                        _ => None,
                    });
                let message = from_expr
                    .or_else(|| v["message"].as_str().map(String::from))
                    .unwrap_or_else(|| format!("failed expression: {expr}"));
                let reason = v["reason"].as_str().unwrap_or("Invalid").to_string();
                return Verdict::Fail { message, reason };
            }
            Err(e) => return on_error(e, expr),
        }
    }
    Verdict::Pass
}

/// kube-apiserver's denial: `admission.NewForbidden` (message `<resource> "<name>" is
/// forbidden: ...`, details naming the object) with the validation's reason and its code, and
/// the message as the one cause (so kubectl prints `The <resource> "<name>" is invalid: : ...`).
fn denial(r: &Request<'_>, reason: &str, message: String) -> ApiError {
    let (code, reason): (u16, &'static str) = match reason {
        "Forbidden" => (403, "Forbidden"),
        "Unauthorized" => (401, "Unauthorized"),
        "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    };
    let mut e = ApiError::forbidden_resource(r.group, r.resource, r.name, String::new());
    let gr = if r.group.is_empty() {
        r.resource.to_string()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    e.message = if r.name.is_empty() {
        format!("{gr} is forbidden: {message}")
    } else {
        format!("{gr} {:?} is forbidden: {message}", r.name)
    };
    e.code = code;
    e.reason = reason;
    if let Some(d) = e.details.as_mut() {
        d["causes"] = json!([{ "message": message }]);
    }
    e
}

/// Runs every selected policy; returns warnings, or the first denial.
pub fn admit(index: &VapIndex, a: &Admission<'_>) -> Result<Vec<String>, ApiError> {
    let mut warnings = vec![];
    for pair in &index.pairs {
        let policy = &pair.policy;
        let constraints = &policy["spec"]["matchConstraints"];
        if constraints["resourceRules"]
            .as_array()
            .is_none_or(|r| r.is_empty())
            || !vap_match::resources_match(constraints, &a.req)
            || !vap_match::resources_match(&pair.binding["spec"]["matchResources"], &a.req)
        {
            continue;
        }
        let bname = pair.binding["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        if policy["spec"]["paramKind"].is_object() && !a.params.contains_key(bname) {
            if pair.binding["spec"]["paramRef"]["parameterNotFoundAction"].as_str() == Some("Deny")
            {
                return Err(ApiError::forbidden(format!(
                    "policy '{}' with binding '{bname}' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction",
                    policy["metadata"]["name"].as_str().unwrap_or_default()
                )));
            }
            continue;
        }
        let ctx = context(a, pair);
        let Verdict::Fail { message, reason } = judge(&ctx, policy) else {
            continue;
        };
        let pname = policy["metadata"]["name"].as_str().unwrap_or_default();
        let actions: Vec<&str> = pair.binding["spec"]["validationActions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if actions.contains(&"Warn") {
            warnings.push(format!(
                "Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {message}"
            ));
        }
        if actions.contains(&"Deny") {
            return Err(denial(
                &a.req,
                &reason,
                format!(
                    "ValidatingAdmissionPolicy '{pname}' with binding '{bname}' denied request: {message}"
                ),
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(validations: Value, failure: &str, actions: &[&str]) -> VapIndex {
        let policy = Arc::new(json!({"metadata": {"name": "p"}, "spec": {
            "failurePolicy": failure,
            "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                "operations": ["*"], "resources": ["*"]}]},
            "validations": validations}}));
        let binding = Arc::new(json!({"metadata": {"name": "b"},
            "spec": {"policyName": "p", "validationActions": actions}}));
        VapIndex::build(vec![], &[policy], &[binding])
    }

    fn admit_cm(index: &VapIndex, obj: &Value, user: &UserInfo) -> Result<Vec<String>, ApiError> {
        let params = HashMap::new();
        let a = Admission {
            req: Request {
                operation: "CREATE",
                group: "",
                version: "v1",
                resource: "configmaps",
                subresource: "",
                name: "c",
                namespaced: true,
                object: obj,
                old_object: &Value::Null,
                namespace_labels: &Value::Null,
            },
            kind: "ConfigMap",
            namespace: "n",
            user,
            dry_run: false,
            namespace_object: None,
            params: &params,
        };
        admit(index, &a)
    }

    #[test]
    fn a_failed_validation_denies_with_its_message_expression_and_the_users_extra() {
        let idx = pair(
            json!([{"expression": "object.data.size() < 2",
                "messageExpression": "'too big for ' + request.userInfo.extra['authentication.kubernetes.io/node-name'][0]"}]),
            "Fail",
            &["Deny"],
        );
        let mut u = UserInfo::new("agent", "", &[]);
        u.extra
            .insert(super::super::EXTRA_NODE_NAME.into(), vec!["host-a".into()]);
        let e = admit_cm(&idx, &json!({"data": {"a": "1", "b": "2"}}), &u).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "configmaps \"c\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: too big for host-a"
        );
        assert!(admit_cm(&idx, &json!({"data": {"a": "1"}}), &u).is_ok());
    }

    #[test]
    fn errors_follow_failure_policy_and_warn_only_warns() {
        let broken = json!([{"expression": "object.missing.field == 1", "message": "m"}]);
        let u = UserInfo::new("u", "", &[]);
        let obj = json!({"data": {}});
        let fail = pair(broken.clone(), "Fail", &["Deny"]);
        assert!(admit_cm(&fail, &obj, &u).is_err());
        let ignore = pair(broken, "Ignore", &["Deny"]);
        assert!(admit_cm(&ignore, &obj, &u).is_ok());
        let warn = pair(
            json!([{"expression": "false", "message": "careful"}]),
            "Fail",
            &["Warn"],
        );
        assert_eq!(
            admit_cm(&warn, &obj, &u).unwrap(),
            vec!["Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': careful"]
        );
    }
}
