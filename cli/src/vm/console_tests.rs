use super::*;
use pretty_assertions::assert_eq;
use serde_json::json;

const UUID: &str = "87fd9463-0d86-4566-b980-798b7898ff2a";

fn vm(phase: Option<&str>, node: Option<&str>) -> VirtualMachine {
    let mut status = json!({});
    if let Some(p) = phase {
        status["phase"] = json!(p);
        status["printableStatus"] = json!(p);
        status["domainUUID"] = json!(UUID);
    }
    if let Some(n) = node {
        status["nodeName"] = json!(n);
    }
    serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "team", "uid": "u-1"},
        "spec": {"memory": {"size": "1Gi"}},
        "status": status,
    }))
    .unwrap()
}

fn here(node: &str) -> Here<'_> {
    Here {
        node,
        state_dir: Path::new("/state"),
        log_exists: true,
        interactive: true,
        want_log: false,
        remote: false,
    }
}

const LOG: &str = "/state/vms/u-1/console.log";

#[test]
fn on_its_host_a_running_vm_gets_the_live_console_by_domain_uuid() {
    let p = plan(&vm(Some("Running"), Some("host-a")), &here("host-a"));
    assert_eq!(
        p,
        ConsolePlan::Attach {
            domain: UUID.into()
        }
    );
    assert_eq!(
        virsh_args("qemu:///system", UUID),
        ["-c", "qemu:///system", "console", UUID]
    );
}

#[test]
fn on_its_host_the_log_is_shown_when_asked_not_running_or_without_a_terminal() {
    let running = vm(Some("Running"), Some("host-a"));
    let mut h = here("host-a");
    h.want_log = true;
    assert_eq!(
        plan(&running, &h),
        ConsolePlan::Log {
            path: LOG.into(),
            note: None
        }
    );
    let mut h = here("host-a");
    h.interactive = false;
    let ConsolePlan::Log { note: Some(n), .. } = plan(&running, &h) else {
        panic!("a log with a note");
    };
    assert!(n.starts_with("not a terminal"), "{n}");
    let stopped = vm(Some("Stopped"), Some("host-a"));
    assert_eq!(
        plan(&stopped, &here("host-a")),
        ConsolePlan::Log {
            path: LOG.into(),
            note: Some(
                "team/web is not running (Stopped); showing its serial log read-only".into()
            )
        }
    );
}

#[test]
fn elsewhere_the_live_console_goes_through_the_api_and_the_log_only_when_asked() {
    let running = vm(Some("Running"), Some("host-a"));
    assert_eq!(plan(&running, &here("host-b")), ConsolePlan::Remote);
    let mut h = here("host-b");
    h.want_log = true;
    assert_eq!(
        plan(&running, &h),
        ConsolePlan::Log {
            path: PathBuf::from(LOG),
            note: None
        }
    );
    h.log_exists = false;
    let ConsolePlan::Unavailable(m) = plan(&running, &h) else {
        panic!("no log here");
    };
    assert!(m.contains("is on host host-a (this host is host-b)"), "{m}");
}

#[test]
fn remote_is_used_on_the_vms_own_host_when_asked() {
    let running = vm(Some("Running"), Some("host-a"));
    let mut h = here("host-a");
    h.remote = true;
    assert_eq!(plan(&running, &h), ConsolePlan::Remote);
}

#[test]
fn an_unplaced_vm_or_a_missing_log_is_explained() {
    let mut pending = vm(None, None);
    pending.status = Some(ironvisor_crds::vm::VirtualMachineStatus {
        printable_status: Some("QuotaExceeded".into()),
        ..Default::default()
    });
    assert_eq!(
        plan(&pending, &here("host-a")),
        ConsolePlan::Unavailable(
            "team/web is not placed on a host yet (QuotaExceeded); it has no console".into()
        )
    );
    let mut h = here("host-a");
    h.log_exists = false;
    let ConsolePlan::Unavailable(m) = plan(&vm(Some("Scheduled"), Some("host-a")), &h) else {
        panic!("no log yet");
    };
    assert!(
        m.contains("has no serial log at /state/vms/u-1/console.log yet"),
        "{m}"
    );
}

#[test]
fn the_node_label_places_a_vm_whose_status_does_not_say_yet() {
    let mut v = vm(None, None);
    v.metadata.labels = Some([(NODE.to_owned(), "host-a".to_owned())].into());
    assert_eq!(placed_on(&v).as_deref(), Some("host-a"));
}

#[test]
fn a_hostile_uid_never_names_a_path() {
    for uid in ["", "../etc", "a/b", "-rf", &"x".repeat(200)] {
        assert_eq!(log_path(Path::new("/state"), uid), None, "{uid}");
    }
    assert_eq!(
        log_path(Path::new("/state"), "0f6c-11"),
        Some(PathBuf::from("/state/vms/0f6c-11/console.log"))
    );
}
