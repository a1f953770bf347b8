//! The API's validation of an imported `VirtualMachine`, offline: the CRD's
//! openAPIV3Schema (types, enums, patterns, limits) through `jsonschema`, and its CEL rules
//! (`x-kubernetes-validations`) through kube's CEL validator, as the API server applies
//! them on create. An import never writes a manifest that fails here, `--force` or not.
//!
//! Pure: the schema is generated from the CRD types compiled into ivctl, so it is the
//! schema of the API version this ivctl writes.

use std::sync::{Arc, OnceLock};

use ironvisor_crds::VirtualMachine;
use kube::CustomResourceExt;

/// The VirtualMachine CRD's openAPIV3Schema (its first, served version).
pub fn crd_schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = VirtualMachine::crd();
        crd.spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_default()
    })
}

/// Every violation of the schema and the CEL rules by `object` (empty when the API server
/// would accept it), each as `where: what`.
pub fn violations_of(object: &serde_json::Value) -> Vec<String> {
    let schema = crd_schema();
    let mut out = match jsonschema::validator_for(schema) {
        Ok(v) => v
            .iter_errors(object)
            .map(|e| format!("{}: {e}", path_or_root(&e.instance_path().to_string())))
            .collect(),
        // The schema is generated from ivctl's own types; a schema that does not compile is
        // a build defect, reported rather than let through.
        Err(e) => vec![format!("the VirtualMachine schema does not compile: {e}")],
    };
    if let Err(errors) = kube::core::cel::Validator::new().validate(schema, object, None) {
        out.extend(errors.into_vec().into_iter().map(|e| e.to_string()));
    }
    out
}

fn path_or_root(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}

/// [`violations_of`] for a VirtualMachine.
pub fn violations(vm: &VirtualMachine) -> Vec<String> {
    match serde_json::to_value(vm) {
        Ok(v) => violations_of(&v),
        Err(e) => vec![format!("the manifest does not serialize: {e}")],
    }
}

/// Why the cluster did not accept a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerVerdict {
    /// The API server answered with a refusal (its message).
    Refused(String),
    /// The API server could not be asked (why).
    Unreachable(String),
}

/// The cluster's own check of a manifest (a server-side dry run), supplied by the caller:
/// this module tree never talks to a cluster.
#[derive(Clone)]
pub struct ServerCheck(pub Arc<CheckFn>);

/// The function behind a [`ServerCheck`].
pub type CheckFn = dyn Fn(&VirtualMachine) -> Result<(), ServerVerdict> + Send + Sync;

impl std::fmt::Debug for ServerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCheck")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_and_cel_violations_are_both_found() {
        let bad = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "x"},
            "spec": {
                "memory": {"size": "1Gi"},
                "disks": [{"name": "Bad_Name", "bus": "ide", "source": {}}],
            }
        });
        let v = violations_of(&bad).join("\n");
        assert!(v.contains("/spec/disks/0/name"), "{v}");
        assert!(
            v.contains("exactly one of blank, http, hostPath, backup, snapshot or vm"),
            "{v}"
        );
        let good = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "x"},
            "spec": {"memory": {"size": "1Gi"}}
        });
        assert_eq!(violations_of(&good), Vec::<String>::new());
    }
}
