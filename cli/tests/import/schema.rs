//! Validation of generated manifests the way the API server would: the CRD's
//! openAPIV3Schema (structure, enums, patterns, limits) and its CEL rules.

use std::path::Path;

use ironvisor_crds::VirtualMachine;

/// Every violation of the schema and the CEL rules (empty when valid): ivctl's own check,
/// which the test below holds to what the API server rejects.
pub fn violations(object: &serde_json::Value) -> Vec<String> {
    ivctl::import::validate::violations_of(object)
}

/// Read a manifest file, check it is a VirtualMachine that validates, and return it.
pub fn validated(path: &Path) -> VirtualMachine {
    let text = std::fs::read_to_string(path).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&text).expect("the manifest is YAML");
    assert_eq!(value["apiVersion"], "ironvisor.io/v1alpha1");
    assert_eq!(value["kind"], "VirtualMachine");
    let v = violations(&value);
    assert!(
        v.is_empty(),
        "{} does not validate:\n{}",
        path.display(),
        v.join("\n")
    );
    serde_saphyr::from_str(&text).expect("the manifest deserializes as a VirtualMachine")
}

#[test]
fn the_validator_rejects_what_the_api_server_would() {
    let bad = serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "x"},
        "spec": {
            "memory": {"size": "1Gi"},
            "disks": [{"name": "Bad_Name", "bus": "ide", "source": {}}],
            "networks": [{"name": "n", "macAddress": "01:00:00:00:00:01", "user": {}, "bridge": {"name": "br0"}}]
        }
    });
    let v = violations(&bad);
    let text = v.join("\n");
    assert!(text.contains("Bad_Name"), "pattern not checked: {text}");
    assert!(text.contains("\"ide\""), "enum not checked: {text}");
    assert!(
        text.contains("exactly one of blank, http, hostPath, backup, snapshot or vm"),
        "CEL on the disk source not checked: {text}"
    );
    assert!(
        text.contains("unicast"),
        "CEL on the MAC not checked: {text}"
    );
    assert!(
        text.contains("exactly one of user, network or bridge"),
        "CEL on the network not checked: {text}"
    );
}
