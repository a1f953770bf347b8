//! The reconcile engine on libvirt's `test:///default` driver: create, stop, start, restart,
//! delete, drift repair, adoption, and never touching foreign domains.
//!
//! Every test uses its own namespace: under `cargo test` the tests share one process, and
//! with it the test driver's state.

mod common;

use common::*;
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_agent::hypervisor::Hypervisor;
use ironvisor_agent::lifecycle::{StopReason, VmState};
use ironvisor_agent::reconcile::engine::CloudInitData;
use ironvisor_crds::labels::RESTART_REQUESTED_AT;
use ironvisor_crds::vm::{Phase, RunStrategy};
use std::collections::HashSet;

const URI: &str = "test:///default";

fn spec() -> serde_json::Value {
    serde_json::json!({
        "memory": {"size": "128Mi"},
        "disks": [{"name": "root", "size": "16Mi", "source": {"blank": {}}}],
        "networks": [{"name": "default", "user": {"portForwards": [{"hostPort": 2222, "guestPort": 22}]}}],
        "cloudInit": {"userData": "#cloud-config\n"}
    })
}

fn condition<'a>(
    vm: &'a ironvisor_crds::vm::VirtualMachine,
    t: &str,
) -> &'a ironvisor_crds::common::Condition {
    vm.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap()
}

async fn state(host: &Host, ns: &str, name: &str) -> Option<VmState> {
    host.libvirt
        .observe(&domain_name(ns, name))
        .await
        .unwrap()
        .map(|o| o.state)
}

#[tokio::test]
async fn a_new_vm_gets_a_running_domain_with_its_disks_seed_and_metadata() {
    let host = Host::new(URI);
    let v = vm("create", "web", "uid-create-1", spec());
    let (v, o) = step(&host.engine, v).await;
    let status = v.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(condition(&v, "Ready").status, "True");
    assert!(status.started_at.is_some() && status.domain_uuid.is_some());
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.interfaces[0].name, "default");
    assert_eq!(
        o.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec!["Started"]
    );
    let observed = host.libvirt.observe(&o.domain).await.unwrap().unwrap();
    let meta = observed.config.unwrap();
    assert_eq!(
        (
            meta.uid.as_str(),
            meta.namespace.as_str(),
            meta.name.as_str()
        ),
        ("uid-create-1", "create", "web")
    );
    let dir = host.vm_dir("uid-create-1");
    assert!(dir.join("disk-root.qcow2").exists());
    assert!(dir.join("seed.iso").exists());
}

#[tokio::test]
async fn a_second_reconcile_of_a_converged_vm_changes_nothing() {
    let host = Host::new(URI);
    let (v, o1) = step(&host.engine, vm("idem", "web", "uid-idem-1", spec())).await;
    let (v2, o2) = step(&host.engine, v.clone()).await;
    assert_eq!(o1.status.domain_uuid, o2.status.domain_uuid);
    assert_eq!(
        v.status.as_ref().unwrap().started_at,
        v2.status.as_ref().unwrap().started_at
    );
    assert_eq!(
        condition(&v, "Ready").last_transition_time,
        condition(&v2, "Ready").last_transition_time
    );
    assert!(o2.events.is_empty(), "{:?}", o2.events);
}

#[tokio::test]
async fn halted_stops_the_guest_and_always_starts_it_again() {
    let host = Host::new(URI);
    let (mut v, _) = step(&host.engine, vm("halt", "web", "uid-halt-1", spec())).await;
    v.spec.run_strategy = RunStrategy::Halted;
    v.spec.termination_grace_period_seconds = 0;
    let (v, o) = step(&host.engine, v).await;
    // The test driver powers off at once on an ACPI request.
    assert_eq!(
        state(&host, "halt", "web").await,
        Some(VmState::Stopped(StopReason::Shutdown))
    );
    assert_eq!(v.status.as_ref().unwrap().phase, Some(Phase::Stopped));
    assert_eq!(
        o.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec!["Stopped"]
    );
    let mut v = v;
    v.spec.run_strategy = RunStrategy::Always;
    let (v, o) = step(&host.engine, v).await;
    assert_eq!(v.status.as_ref().unwrap().phase, Some(Phase::Running));
    assert_eq!(
        o.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec!["Started"]
    );
}

#[tokio::test]
async fn manual_starts_and_stops_on_request() {
    let host = Host::new(URI);
    let mut s = spec();
    s["runStrategy"] = "Manual".into();
    s["terminationGracePeriodSeconds"] = 0.into();
    let (mut v, _) = step(&host.engine, vm("manual", "web", "uid-manual-1", s)).await;
    assert_eq!(
        v.status.as_ref().unwrap().phase,
        Some(Phase::Stopped),
        "defined, not started"
    );
    let ann = ironvisor_crds::labels::REQUESTED_STATE.to_owned();
    v.metadata.annotations = Some([(ann.clone(), "Running".to_owned())].into());
    let (mut v, _) = step(&host.engine, v).await;
    assert_eq!(state(&host, "manual", "web").await, Some(VmState::Running));
    v.metadata.annotations = Some([(ann, "Stopped".to_owned())].into());
    let (v, _) = step(&host.engine, v).await;
    assert_eq!(v.status.as_ref().unwrap().phase, Some(Phase::Stopped));
}

#[tokio::test]
async fn a_restart_request_restarts_once_per_value() {
    let host = Host::new(URI);
    let (mut v, _) = step(&host.engine, vm("restart", "web", "uid-restart-1", spec())).await;
    let first_start = v.status.as_ref().unwrap().started_at.clone();
    v.metadata.annotations = Some(
        [(
            RESTART_REQUESTED_AT.to_owned(),
            "2026-11-25T09:00:00Z".to_owned(),
        )]
        .into(),
    );
    let (v, o) = step(&host.engine, v).await;
    let s = v.status.as_ref().unwrap();
    assert_eq!(
        s.last_restart_request.as_deref(),
        Some("2026-11-25T09:00:00Z")
    );
    assert_ne!(s.started_at, first_start, "the guest was started again");
    assert_eq!(
        s.restart_count,
        Some(0),
        "a requested restart is not an automatic one"
    );
    assert_eq!(
        o.events.len(),
        0,
        "Running before and after: no phase change to report"
    );
    let (v2, _) = step(&host.engine, v.clone()).await;
    assert_eq!(
        v2.status.as_ref().unwrap().started_at,
        s.started_at,
        "the same value is not acted on twice"
    );
}

#[tokio::test]
async fn a_spec_change_needing_a_restart_sets_restart_required_until_restarted() {
    let host = Host::new(URI);
    let (mut v, _) = step(&host.engine, vm("rr", "web", "uid-rr-1", spec())).await;
    v.spec.memory.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("256Mi".into());
    v.metadata.generation = Some(2);
    let (mut v, _) = step(&host.engine, v).await;
    assert_eq!(condition(&v, "RestartRequired").status, "True");
    assert_eq!(
        v.status.as_ref().unwrap().phase,
        Some(Phase::Running),
        "no restart on its own"
    );
    v.metadata.annotations = Some([(RESTART_REQUESTED_AT.to_owned(), "t1".to_owned())].into());
    let (v, _) = step(&host.engine, v).await;
    assert_eq!(condition(&v, "RestartRequired").status, "False");
    assert_eq!(v.status.as_ref().unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn an_out_of_band_destroy_is_repaired_and_counted_as_a_restart() {
    let host = Host::new(URI);
    let (v, o) = step(&host.engine, vm("drift", "web", "uid-drift-1", spec())).await;
    let admin = admin(URI);
    admin
        .lookup_domain_by_name(&o.domain)
        .unwrap()
        .destroy()
        .unwrap();
    let (v, o) = step(&host.engine, v).await;
    assert_eq!(state(&host, "drift", "web").await, Some(VmState::Running));
    assert_eq!(v.status.as_ref().unwrap().restart_count, Some(1));
    assert_eq!(
        o.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec!["Stopped", "Started"]
    );
}

#[tokio::test]
async fn an_out_of_band_undefine_is_repaired() {
    let host = Host::new(URI);
    let (v, o) = step(&host.engine, vm("undef", "web", "uid-undef-1", spec())).await;
    let admin = admin(URI);
    let dom = admin.lookup_domain_by_name(&o.domain).unwrap();
    dom.undefine().unwrap(); // Running: it becomes transient.
    assert!(!dom.is_persistent().unwrap());
    let (_, o2) = step(&host.engine, v.clone()).await;
    let observed = host.libvirt.observe(&o2.domain).await.unwrap().unwrap();
    assert!(observed.config.is_some(), "the definition is back");
    dom.destroy().unwrap();
    let _ = step(&host.engine, v).await;
    assert_eq!(state(&host, "undef", "web").await, Some(VmState::Running));
}

#[tokio::test]
async fn deleting_a_vm_removes_its_domain_and_directory_but_never_an_image() {
    let host = Host::new(URI);
    let image = host.images_dir.join("base.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let mut s = spec();
    s["disks"] = serde_json::json!([{"name": "root", "source": {"hostPath": {"path": image.to_str().unwrap()}}}]);
    let (v, o) = step(&host.engine, vm("delete", "web", "uid-delete-1", s)).await;
    assert!(host.vm_dir("uid-delete-1").join("disk-root.qcow2").exists());
    host.engine.remove(&v).await.unwrap();
    assert!(host.libvirt.observe(&o.domain).await.unwrap().is_none());
    assert!(!host.vm_dir("uid-delete-1").exists());
    assert_eq!(std::fs::read(&image).unwrap().len(), 1 << 20);
    host.engine.remove(&v).await.unwrap(); // Idempotent.
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_domains_instead_of_recreating_them() {
    // Keep the test driver's state alive across the agent restart.
    let _keeper = admin(URI);
    let host = Host::new(URI);
    let (v, o) = step(&host.engine, vm("adopt", "web", "uid-adopt-1", spec())).await;
    let uuid = o.status.domain_uuid.clone();
    let host = host.restart();
    // Everything the shared driver holds is alive here (other tests run beside this one).
    let live: HashSet<String> = host
        .libvirt
        .list_owned()
        .await
        .unwrap()
        .iter()
        .map(|o| o.owner().unwrap().uid.clone())
        .collect();
    assert!(live.contains("uid-adopt-1"), "found by its metadata");
    assert!(host.engine.leftovers(&live).await.unwrap().is_empty());
    let (v2, o2) = step(&host.engine, v.clone()).await;
    assert_eq!(o2.status.domain_uuid, uuid);
    assert_eq!(
        v2.status.as_ref().unwrap().started_at,
        v.status.as_ref().unwrap().started_at,
        "not restarted"
    );
    assert!(o2.events.is_empty());
}

/// A private test-driver instance (a custom node file): nothing else runs on it, and it
/// holds one domain that Ironvisor does not manage.
fn private_driver(dir: &std::path::Path) -> String {
    let node = dir.join("node.xml");
    std::fs::write(
        &node,
        "<node><cpu><mhz>2000</mhz><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>\
         <active>2</active><model>x86_64</model></cpu><memory>8388608</memory>\
         <domain type='test'><name>foreign</name><memory>65536</memory><os><type>hvm</type></os></domain></node>",
    )
    .unwrap();
    format!("test://{}", node.display())
}

#[tokio::test]
async fn leftovers_of_deleted_vms_are_removed_and_foreign_domains_are_not_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let uri = private_driver(tmp.path());
    let host = Host::in_dir(&uri, tmp);
    let (_, gone) = step(
        &host.engine,
        vm("orphans", "gone", "uid-orphan-gone", spec()),
    )
    .await;
    let (_, kept) = step(
        &host.engine,
        vm("orphans", "kept", "uid-orphan-kept", spec()),
    )
    .await;
    std::fs::create_dir_all(host.vm_dir("uid-orphan-stray")).unwrap();
    let owned: Vec<String> = host
        .libvirt
        .list_owned()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(
        owned.len(),
        2,
        "the foreign domain is not listed: {owned:?}"
    );
    let foreign_before = host.libvirt.observe("foreign").await.unwrap().unwrap();
    let leftovers = host
        .engine
        .leftovers(&HashSet::from(["uid-orphan-kept".to_owned()]))
        .await
        .unwrap();
    let found: Vec<(&str, Option<(String, String)>)> = leftovers
        .iter()
        .map(|l| (l.uid.as_str(), l.owner.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "uid-orphan-gone",
                Some(("orphans".to_owned(), "gone".to_owned()))
            ),
            ("uid-orphan-stray", None),
        ],
        "candidates only, each with the owner to ask the API about"
    );
    // The API confirmed "gone" (404); the stray directory records no owner: it stays.
    host.engine.remove_leftover(&leftovers[0]).await.unwrap();
    assert!(host.vm_dir("uid-orphan-stray").exists());
    assert!(host.libvirt.observe(&gone.domain).await.unwrap().is_none());
    assert!(host.libvirt.observe(&kept.domain).await.unwrap().is_some());
    assert!(host.vm_dir("uid-orphan-kept").exists() && !host.vm_dir("uid-orphan-gone").exists());
    assert_eq!(
        host.libvirt.observe("foreign").await.unwrap().unwrap(),
        foreign_before
    );
}

/// The leftovers an agent finds when no VM is placed on it, removed as if the API had
/// answered 404 for every one that records its owner (the controller asks it).
async fn remove_all_gone(engine: &ironvisor_agent::reconcile::engine::Engine) -> Vec<String> {
    let mut removed = vec![];
    for l in engine.leftovers(&HashSet::new()).await.unwrap() {
        if l.owner.is_some() {
            engine.remove_leftover(&l).await.unwrap();
            removed.push(l.uid);
        }
    }
    removed
}

#[tokio::test]
async fn another_agents_domains_on_a_shared_libvirtd_are_not_taken_for_orphans() {
    let mine = Host::new(URI);
    let other = Host::new(URI);
    let (_, theirs) = step(
        &other.engine,
        vm("shared-libvirtd", "theirs", "uid-shared-theirs", spec()),
    )
    .await;
    let removed = remove_all_gone(&mine.engine).await;
    assert!(
        !removed.contains(&"uid-shared-theirs".to_owned()),
        "{removed:?}"
    );
    assert!(
        mine.libvirt
            .observe(&theirs.domain)
            .await
            .unwrap()
            .is_some()
    );
    // Its own agent, which made its directory, does remove it once the VM is gone.
    let removed = remove_all_gone(&other.engine).await;
    assert!(
        removed.contains(&"uid-shared-theirs".to_owned()),
        "{removed:?}"
    );
    assert!(
        other
            .libvirt
            .observe(&theirs.domain)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_foreign_domain_with_our_name_fails_the_vm_and_is_left_alone() {
    let host = Host::new(URI);
    let name = domain_name("foreign", "web");
    let admin = admin(URI);
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
    );
    admin.define_domain_xml(&xml).unwrap();
    let (v, _) = step(&host.engine, vm("foreign", "web", "uid-foreign-1", spec())).await;
    assert_eq!(
        v.status.as_ref().unwrap().printable_status.as_deref(),
        Some("DomainConflict")
    );
    host.engine.remove(&v).await.unwrap();
    assert!(
        admin.lookup_domain_by_name(&name).is_ok(),
        "still there after the VM's cleanup"
    );
    assert!(
        host.libvirt
            .list_owned()
            .await
            .unwrap()
            .iter()
            .all(|o| o.name != name)
    );
}

#[tokio::test]
async fn an_invalid_spec_fails_the_vm_without_defining_anything() {
    let host = Host::new(URI);
    let mut s = spec();
    s["secureBoot"] = true.into();
    let (v, o) = step(&host.engine, vm("invalid", "web", "uid-invalid-1", s)).await;
    assert_eq!(v.status.as_ref().unwrap().phase, Some(Phase::Failed));
    assert_eq!(condition(&v, "Ready").reason, "InvalidSpec");
    assert_eq!(o.events[0].reason, "Failed");
    assert!(host.libvirt.observe(&o.domain).await.unwrap().is_none());
}

#[tokio::test]
async fn a_bad_image_checksum_fails_the_vm_with_a_clear_reason() {
    let host = Host::new(URI);
    let app = axum::Router::new().route("/img", axum::routing::get(|| async { vec![1u8; 4096] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut s = spec();
    s["disks"] = serde_json::json!([{"name": "root", "source": {"http": {
        "url": format!("http://{addr}/img"), "sha256": "0".repeat(64)}}}]);
    let mut v = vm("checksum", "web", "uid-checksum-1", s);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (next, o) = step(&host.engine, v).await;
        v = next;
        if o.status.phase == Some(Phase::Failed) {
            break;
        }
        // The download runs in the background; the condition says so meanwhile.
        assert_eq!(condition(&v, "ImagesReady").reason, "Downloading");
        assert!(std::time::Instant::now() < deadline, "never failed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let images = condition(&v, "ImagesReady");
    assert_eq!(
        (images.status.as_str(), images.reason.as_str()),
        ("False", "ChecksumMismatch")
    );
    let st = v.status.as_ref().unwrap();
    assert_eq!(
        st.printable_status.as_deref(),
        Some("ImageChecksumMismatch")
    );
    assert!(condition(&v, "Ready").message.contains("checksum mismatch"));
    let cache = host.state_dir.join("images");
    assert_eq!(
        std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0),
        0,
        "no partial file"
    );
}

#[tokio::test]
async fn a_started_domain_emits_a_libvirt_lifecycle_event() {
    let host = Host::new(URI);
    let mut events = host.libvirt.subscribe();
    let v = vm("events", "web", "uid-events-1", spec());
    let o = host
        .engine
        .converge(&v, &CloudInitData::default(), now())
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.name == o.domain {
                return ev;
            }
        }
    })
    .await
    .expect("a lifecycle event for the domain arrives");
    assert_eq!(got.name, o.domain);
}

#[tokio::test]
async fn host_info_reports_cpus_memory_and_versions() {
    let host = Host::new(URI);
    let info = host.libvirt.host_info().await.unwrap();
    assert!(info.cpus > 0 && info.memory_kib > 0);
    assert!(
        info.libvirt_version.starts_with("9."),
        "{}",
        info.libvirt_version
    );
}

#[tokio::test]
async fn a_running_domain_reports_usage_to_metrics() {
    let host = Host::new(URI);
    let (_, o) = step(&host.engine, vm("metrics", "web", "uid-metrics-1", spec())).await;
    let stats = host.libvirt.stats(&o.domain).await.unwrap();
    assert!(stats.memory_bytes > 0);
    let text = host.engine.metrics.render();
    assert!(
        text.contains("ironvisor_vm_memory_bytes{name=\"web\",namespace=\"metrics\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn an_agent_collects_only_the_leftovers_recorded_for_its_own_node() {
    let mut host = Host::new(URI);
    host.engine.node = "node-one".into();
    let (_, o) = step(&host.engine, vm("nodes", "web", "uid-node-one", spec())).await;
    let other_dirs = tempfile::tempdir().unwrap();
    let (_, mut other) = engine(
        URI,
        &other_dirs.path().join("state"),
        &other_dirs.path().join("images"),
    );
    other.node = "node-two".into();
    let removed = remove_all_gone(&other).await;
    assert!(removed.is_empty(), "{removed:?}");
    assert!(
        host.libvirt.observe(&o.domain).await.unwrap().is_some(),
        "another node's domain on a shared libvirt is left alone"
    );
    let removed = remove_all_gone(&host.engine).await;
    assert_eq!(removed, vec!["uid-node-one".to_owned()]);
    assert!(host.libvirt.observe(&o.domain).await.unwrap().is_none());
}
