//! The console backend's VNC path on libvirt's `test:///default` driver, which runs no QEMU
//! and hands out no display connection: a VM with a display is refused with `409` and
//! libvirt's reason, a VM without one with `409` saying so, another uid with `404`, and
//! nothing panics.

mod common;

use common::*;
use ironvisor_agent::console::backend::{Backend as _, LibvirtBackend, OpenError};
use ironvisor_agent::console::request::{Kind, Target};
use ironvisor_crds::vm::Phase;

const URI: &str = "test:///default";

fn target(ns: &str, name: &str, uid: &str) -> Target {
    Target {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        kind: Kind::Vnc,
    }
}

async fn open_vnc(backend: &LibvirtBackend, t: &Target) -> OpenError {
    match backend.open(t).await {
        Ok(_) => panic!("the test driver bridged a display"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn without_a_display_connection_from_libvirt_the_vnc_path_is_a_conflict_with_the_reason() {
    let host = Host::new(URI);
    let ns = "display-test-driver";
    let with = vm(
        ns,
        "desk",
        "uid-display-1",
        serde_json::json!({"memory": {"size": "64Mi"}}),
    );
    let without = vm(
        ns,
        "text",
        "uid-display-2",
        serde_json::json!({"memory": {"size": "64Mi"}, "graphics": "none"}),
    );
    for v in [with, without] {
        let (_, o) = step(&host.engine, v).await;
        assert_eq!(o.status.phase, Some(Phase::Running), "{:?}", o.status);
    }
    let backend = LibvirtBackend {
        libvirt: host.libvirt.clone(),
        uri: URI.into(),
        node: String::new(),
    };

    let e = open_vnc(&backend, &target(ns, "desk", "uid-display-1")).await;
    assert!(
        matches!(e, OpenError::DisplayUnsupported(..)),
        "a display the driver cannot connect: {e:?}"
    );
    assert_eq!(e.status(), 409);
    let text = e.to_string();
    assert!(
        text.contains("cannot be reached on this host") && text.contains("not supported"),
        "{text}"
    );

    let e = open_vnc(&backend, &target(ns, "text", "uid-display-2")).await;
    assert!(
        matches!(e, OpenError::NoDisplay(_)),
        "graphics: none: {e:?}"
    );
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("without a graphical display"), "{e}");

    let e = open_vnc(&backend, &target(ns, "desk", "uid-someone-else")).await;
    assert_eq!(e.status(), 404, "{e}");
}
