//! The display on libvirt's `test:///default` driver, which runs no QEMU and hands out no
//! display connection: the console backend refuses a VM with a display with `409` and
//! libvirt's reason, a VM without one with `409` saying so, another uid with `404`, and
//! nothing panics; a guest an earlier agent started with the display socket in its
//! directory keeps running, gets the new definition for its next start, and is reported
//! `RestartRequired`.

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

#[tokio::test]
async fn a_guest_running_with_the_old_socket_display_keeps_running_and_is_told_to_restart() {
    let host = Host::new(URI);
    let ns = "display-upgrade";
    let v = vm(
        ns,
        "old",
        "uid-display-3",
        serde_json::json!({"memory": {"size": "64Mi"}}),
    );
    let (v, o) = step(&host.engine, v).await;
    // What an earlier agent defined and started: the socket in the VM's directory, and the
    // configuration hash of that definition.
    let admin = admin(URI);
    let dom = admin.lookup_domain_by_name(&o.domain).unwrap();
    let new_xml = dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).unwrap();
    let socket = host.vm_dir("uid-display-3").join("display/vnc.sock");
    let old_xml = new_xml
        .replace(
            "<listen type='none'/>",
            &format!("<listen type='socket' socket='{}'/>", socket.display()),
        )
        .replace("configHash=\"", "configHash=\"0ld")
        .replace("configHash='", "configHash='0ld");
    assert_ne!(old_xml, new_xml);
    dom.destroy().unwrap();
    admin.define_domain_xml(&old_xml).unwrap();
    dom.create().unwrap();
    let id = dom.id();

    let (v, _) = step(&host.engine, v).await;
    let status = v.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(dom.id(), id, "the running guest was left alone");
    let live = dom.xml_desc(0).unwrap();
    assert!(live.contains("type='socket'"), "{live}");
    let next = dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).unwrap();
    assert!(
        next.contains("<listen type='none'/>") && !next.contains("vnc.sock"),
        "the next start gets the new display: {next}"
    );
    let restart = status
        .conditions
        .iter()
        .find(|c| c.type_ == "RestartRequired")
        .expect("a RestartRequired condition");
    assert_eq!(restart.status, "True", "{restart:?}");
    dom.destroy().unwrap();
}
