//! A VirtualMachine as the watch delivers it: parsed, or kept aside as malformed with the
//! path of the field that failed, so one bad object never breaks the watch for the others
//! (as operator-rs' `DeserializeGuard`, plus the field path).
//!
//! Owns only deserialization; what to do with a malformed VM is the controller's business.

use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

/// A stored VirtualMachine the agent cannot parse.
#[derive(Clone, Debug)]
pub struct Malformed {
    /// The failing field (`spec.cpu.cores`), or `.` when the object as a whole failed.
    pub field: String,
    /// What is wrong with it, from the deserializer.
    pub reason: String,
    /// The object's metadata (it parsed; otherwise the object is not delivered at all).
    pub metadata: ObjectMeta,
    /// The raw `status`, to keep the agent's previous status fields where they parse.
    pub status: Option<serde_json::Value>,
}

impl Malformed {
    /// `spec.cpu.cores: invalid type: string "two", expected u32`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.reason)
    }
}

/// A watched VirtualMachine, parsed or malformed.
#[derive(Clone, Debug)]
pub struct VmObject(pub Result<VirtualMachine, Malformed>);

impl VmObject {
    /// Parse a raw object: the VM, or what is wrong with it. Fails only when even the
    /// metadata does not parse (the API server never stores such an object).
    pub fn from_value(raw: serde_json::Value) -> Result<Self, serde_json::Error> {
        match serde_path_to_error::deserialize::<_, VirtualMachine>(&raw) {
            Ok(vm) => Ok(Self(Ok(vm))),
            Err(e) => {
                let field = e.path().to_string();
                let reason = e.inner().to_string();
                let metadata: ObjectMeta =
                    serde_json::from_value(raw.get("metadata").cloned().unwrap_or_default())?;
                Ok(Self(Err(Malformed {
                    field,
                    reason,
                    metadata,
                    status: raw.get("status").cloned(),
                })))
            }
        }
    }
}

impl<'de> Deserialize<'de> for VmObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(d)?;
        Self::from_value(raw).map_err(serde::de::Error::custom)
    }
}

impl Resource for VmObject {
    type DynamicType = ();
    type Scope = <VirtualMachine as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        VirtualMachine::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        VirtualMachine::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        VirtualMachine::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        VirtualMachine::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(vm) => vm.meta(),
            Err(m) => &m.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(vm) => vm.meta_mut(),
            Err(m) => &mut m.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(spec: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "n", "uid": "u-1"},
            "spec": spec,
            "status": {"phase": "Running"},
        })
    }

    #[test]
    fn a_valid_vm_parses() {
        let o = VmObject::from_value(raw(serde_json::json!({"memory": {"size": "64Mi"}})))
            .expect("metadata parses");
        assert!(o.0.is_ok());
    }

    #[test]
    fn a_malformed_vm_names_the_failing_field_and_keeps_its_metadata() {
        let o = VmObject::from_value(raw(serde_json::json!({
            "memory": {"size": "64Mi"}, "cpu": {"cores": "two"}
        })))
        .expect("metadata parses");
        let m = o.0.expect_err("malformed");
        assert_eq!(m.field, "spec.cpu.cores");
        assert!(
            m.message().starts_with("spec.cpu.cores: invalid type"),
            "{}",
            m.message()
        );
        assert_eq!(m.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(m.status, Some(serde_json::json!({"phase": "Running"})));
    }

    #[test]
    fn a_list_with_one_malformed_vm_still_yields_the_others() {
        let list = serde_json::json!([
            raw(serde_json::json!({"memory": {"size": "64Mi"}})),
            raw(serde_json::json!({"memory": {}})),
        ]);
        let objs: Vec<VmObject> = serde_json::from_value(list).expect("the list parses");
        assert!(objs[0].0.is_ok());
        let bad = objs[1].0.as_ref().expect_err("bad");
        assert_eq!(bad.field, "spec.memory");
        assert!(
            bad.reason.contains("missing field `size`"),
            "{}",
            bad.reason
        );
    }
}
