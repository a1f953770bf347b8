use super::*;
use crate::placement::CloneSource;
use ironvisor_crds::vm::VirtualMachine;

fn snapshot(ns: &str, name: &str, node: Option<&str>, phase: &str) -> VirtualMachineSnapshot {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"vmName": "src"},
        "status": {"phase": phase, "readyToUse": phase == "Succeeded", "nodeName": node}
    }))
    .unwrap()
}

fn vm(ns: &str, name: &str, spec: serde_json::Value, node: Option<&str>) -> VirtualMachine {
    let mut spec = spec;
    spec["memory"] = serde_json::json!({"size": "64Mi"});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": spec,
        "status": {"nodeName": node}
    }))
    .unwrap()
}

fn clone_of(kind: &str, name: &str) -> serde_json::Value {
    serde_json::json!({"disks": [{"name": "root", "size": "1Gi", "source": {kind: {"name": name}}}]})
}

fn key(ns: &str, name: &str) -> VmKey {
    VmKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn a_clone_of_a_snapshot_goes_to_the_snapshots_host_once_it_is_ready() {
    let mut ix = Index::new();
    ix.apply_vm(&vm("a", "c", clone_of("snapshot", "gold"), None));
    let refs = ix.vm(&key("a", "c")).unwrap().clones.clone();
    assert_eq!(refs, [CloneRef::Snapshot("gold".into())]);
    assert_eq!(
        ix.clone_source(&key("a", "c"), &refs),
        CloneSource::NotReady
    );
    ix.apply_snapshot(&snapshot("a", "gold", Some("h1"), "InProgress"));
    assert_eq!(
        ix.clone_source(&key("a", "c"), &refs),
        CloneSource::NotReady
    );
    ix.apply_snapshot(&snapshot("a", "gold", Some("h1"), "Succeeded"));
    assert_eq!(
        ix.clone_sources().get(&key("a", "c")),
        Some(&CloneSource::On("h1".into()))
    );
    ix.delete_snapshot(&snapshot("a", "gold", Some("h1"), "Succeeded"));
    assert_eq!(
        ix.clone_source(&key("a", "c"), &refs),
        CloneSource::NotReady
    );
}

#[test]
fn a_clone_never_finds_a_source_in_another_namespace() {
    let mut ix = Index::new();
    ix.apply_snapshot(&snapshot("other", "gold", Some("h1"), "Succeeded"));
    ix.apply_vm(&vm(
        "other",
        "tpl",
        serde_json::json!({"template": true, "runStrategy": "Halted"}),
        Some("h1"),
    ));
    for (kind, name) in [("snapshot", "gold"), ("vm", "tpl")] {
        ix.apply_vm(&vm("a", "c", clone_of(kind, name), None));
        let refs = ix.vm(&key("a", "c")).unwrap().clones.clone();
        assert_eq!(
            ix.clone_source(&key("a", "c"), &refs),
            CloneSource::NotReady,
            "{kind}"
        );
    }
}

#[test]
fn only_a_placed_template_is_a_source() {
    let mut ix = Index::new();
    ix.apply_vm(&vm("a", "plain", serde_json::json!({}), Some("h2")));
    ix.apply_vm(&vm(
        "a",
        "tpl",
        serde_json::json!({"template": true, "runStrategy": "Halted"}),
        Some("h2"),
    ));
    let refs = |n: &str| vec![CloneRef::Template(n.into())];
    assert_eq!(
        ix.clone_source(&key("a", "c"), &refs("plain")),
        CloneSource::NotReady
    );
    assert_eq!(
        ix.clone_source(&key("a", "c"), &refs("tpl")),
        CloneSource::On("h2".into())
    );
    assert_eq!(ix.clone_source(&key("a", "c"), &[]), CloneSource::None);
}

#[test]
fn sources_on_two_hosts_cannot_be_cloned_together() {
    let mut ix = Index::new();
    ix.apply_snapshot(&snapshot("a", "s1", Some("h1"), "Succeeded"));
    ix.apply_snapshot(&snapshot("a", "s2", Some("h2"), "Succeeded"));
    let refs = [
        CloneRef::Snapshot("s1".into()),
        CloneRef::Snapshot("s2".into()),
    ];
    assert_eq!(
        ix.clone_source(&key("a", "c"), &refs),
        CloneSource::NotReady
    );
}

#[test]
fn a_storage_refusal_of_a_clone_says_how_clones_count() {
    use crate::quota::ExceededResource;
    use crate::units::Resource;
    let e = Exceeded {
        quota: "q".into(),
        resources: vec![ExceededResource {
            resource: Resource::Storage,
            requested: 1 << 30,
            used: 1 << 30,
            limited: 1 << 30,
        }],
    };
    let msg = quota_message(&e, true);
    assert!(
        msg.starts_with("exceeded quota: q, requested: storage=1Gi"),
        "{msg}"
    );
    assert!(
        msg.contains("clone disks count their declared size"),
        "{msg}"
    );
    assert_eq!(quota_message(&e, false), e.to_string());
}
