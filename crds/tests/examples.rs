//! Every Ironvisor object in `manifests/examples/` is valid against the generated CRDs.

mod support;

use std::path::Path;

use ironvisor_crds::{Hypervisor, Quota, Tenant, VirtualMachine};
use kube::CustomResourceExt;

#[test]
fn every_example_is_valid_against_the_crd_schemas() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("manifests/examples exists") {
        let path = entry.expect("readable entry").path();
        let text = std::fs::read_to_string(&path).expect("readable example");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let crd = match doc["kind"].as_str() {
                Some("VirtualMachine") => VirtualMachine::crd(),
                Some("Tenant") => Tenant::crd(),
                Some("Quota") => Quota::crd(),
                Some("Hypervisor") => Hypervisor::crd(),
                _ => continue, // built-in kinds are checked against the Kubernetes schemas
            };
            let errs = support::errors(&crd, &doc, None);
            assert!(errs.is_empty(), "{}: {errs:#?}", path.display());
            // The typed API must read it too: what the controllers will see.
            match doc["kind"].as_str() {
                Some("VirtualMachine") => {
                    drop(serde_json::from_value::<VirtualMachine>(doc).expect("VM parses"))
                }
                Some("Tenant") => {
                    drop(serde_json::from_value::<Tenant>(doc).expect("Tenant parses"))
                }
                Some("Quota") => drop(serde_json::from_value::<Quota>(doc).expect("Quota parses")),
                _ => {}
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected a tenant, a quota and two VMs, checked {checked}"
    );
}
