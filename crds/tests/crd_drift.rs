//! The committed CRD YAML must be exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let mut stale = Vec::new();
    for (name, expected) in ironvisor_crds::crdgen::render_all().expect("CRDs render") {
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if committed != expected {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "manifests/crds/ is out of date for {stale:?}: run `cargo run -p ironvisor-crds --bin crdgen` and commit the result"
    );
}

#[test]
fn every_crd_has_a_manifest_and_nothing_else_is_there() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let mut expected: Vec<String> = ironvisor_crds::crdgen::render_all()
        .expect("CRDs render")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    expected.sort();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("manifests/crds exists")
        .map(|e| e.expect("readable entry").file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(present, expected, "stray or missing files in manifests/crds/");
}
