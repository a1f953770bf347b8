//! `/openapi/v2`: what kubectl 1.28 and older download before `apply` (gnostic protobuf), read
//! here by kubectl 1.32's `explain --output plaintext-openapiv2`, which still uses it.

mod common;

use common::Harness;
use pretty_assertions::assert_eq;
use serde_json::Value;

async fn ready() -> Harness {
    let h = Harness::start().await;
    h.apply_crds().await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explains_a_custom_resource_field_from_the_v2_document() {
    let h = ready().await;
    // kubectl's first explain after a CRD appears misses it in its discovery cache
    // (kubernetes/kubernetes#95601, same on a real cluster); any get refreshes the cache.
    h.ok(&["get", "vm"]).await;
    let out = h
        .ok(&["explain", "vm.spec.memory", "--output=plaintext-openapiv2"])
        .await;
    assert!(
        out.starts_with("KIND:     VirtualMachine\nVERSION:  ironvisor.io/v1alpha1\n\nRESOURCE: memory <Object>\n"),
        "{out}"
    );
    assert!(
        out.contains("Memory size as a Kubernetes quantity"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explains_a_built_in_kind_from_the_v2_document() {
    let h = Harness::start().await;
    let out = h
        .ok(&["explain", "secret.type", "--output=plaintext-openapiv2"])
        .await;
    assert!(
        out.starts_with("KIND:     Secret\nVERSION:  v1\n\nFIELD:    type <string>\n"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_form_tags_kinds_and_lists_patch_query_parameters() {
    let h = ready().await;
    let doc: Value = serde_json::from_str(&h.ok(&["get", "--raw", "/openapi/v2"]).await)
        .expect("JSON by default");
    assert_eq!(doc["swagger"], "2.0");
    let vm = &doc["definitions"]["io.ironvisor.v1alpha1.VirtualMachine"];
    assert_eq!(
        vm["x-kubernetes-group-version-kind"][0]["kind"],
        "VirtualMachine"
    );
    assert_eq!(
        vm["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    let patch = &doc["paths"]["/apis/ironvisor.io/v1alpha1/namespaces/{namespace}/virtualmachines/{name}"]
        ["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "VirtualMachine"
    );
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        params.contains(&"dryRun") && params.contains(&"fieldValidation"),
        "{params:?}"
    );
}
