//! The graphical display in the domain XML: VNC listening nowhere (the agent asks libvirt
//! for a connected socket), never a TCP listener or a socket path, and nothing at all with
//! `graphics: none`.

use super::*;
use ironvisor_crds::vm::VirtualMachineSpec;
use std::path::Path;

fn spec(graphics: Option<&str>) -> VirtualMachineSpec {
    let mut v = serde_json::json!({"memory": {"size": "128Mi"}});
    if let Some(g) = graphics {
        v["graphics"] = g.into();
    }
    serde_json::from_value(v).unwrap()
}

fn plan(spec: &VirtualMachineSpec, vm_dir: &str) -> DomainPlan {
    build_plan(&PlanInput {
        owner: Owner {
            node: String::new(),
            uid: "u-1".into(),
            namespace: "ns".into(),
            name: "vm".into(),
            generation: 1,
        },
        spec,
        domain_type: DomainType::Qemu,
        vm_dir: Path::new(vm_dir),
        kernel: None,
        initrd: None,
    })
    .unwrap()
}

#[test]
fn a_vm_gets_a_vnc_display_listening_nowhere_and_a_vga_adapter_by_default() {
    let xml = render(&plan(&spec(None), "/state/vms/u-1")).xml;
    let expected = concat!(
        "    <graphics type=\"vnc\">\n",
        "      <listen type=\"none\"/>\n",
        "    </graphics>\n",
        "    <video>\n",
        "      <model type=\"vga\" heads=\"1\" primary=\"yes\"/>\n",
        "    </video>\n",
        "    <input type=\"tablet\" bus=\"usb\"/>\n",
    );
    assert!(xml.contains(expected), "{xml}");
    assert_eq!(xml.matches("<graphics").count(), 1, "{xml}");
    // `vnc` spelt out is the same domain.
    assert_eq!(
        render(&plan(&spec(Some("vnc")), "/state/vms/u-1")),
        render(&plan(&spec(None), "/state/vms/u-1"))
    );
}

#[test]
fn the_display_never_listens_on_a_network_address_or_a_socket_path() {
    let xml = render(&plan(&spec(Some("vnc")), "/state/vms/u-1")).xml;
    let start = xml.find("<graphics").unwrap();
    let graphics = &xml[start..start + xml[start..].find("</graphics>").unwrap()];
    for forbidden in [
        "type=\"address\"",
        "type=\"network\"",
        "type=\"socket\"",
        "socket=",
        "port=",
        "autoport",
        "passwd",
        "listen=\"",
    ] {
        assert!(!graphics.contains(forbidden), "{forbidden} in {graphics}");
    }
    assert!(
        !xml.contains("vnc.sock") && !xml.contains("/display"),
        "{xml}"
    );
}

#[test]
fn graphics_none_renders_no_display_and_no_video_and_another_config_hash() {
    let none = render(&plan(&spec(Some("none")), "/state/vms/u-1"));
    for absent in ["<graphics", "<video", "tablet"] {
        assert!(!none.xml.contains(absent), "{absent} in {}", none.xml);
    }
    // A display cannot be added to or removed from a running guest: the hash tells so.
    let vnc = render(&plan(&spec(None), "/state/vms/u-1"));
    assert_ne!(none.config_hash, vnc.config_hash);
}

#[test]
fn the_display_does_not_depend_on_the_state_directory() {
    // Nothing of the display lives in the VM's directory: another state directory (a VM
    // migrated to another host) renders the same display and keeps the configuration.
    let display = |xml: &str| {
        let start = xml.find("<graphics").unwrap();
        xml[start..start + xml[start..].find("<rng").unwrap()].to_owned()
    };
    let here = render(&plan(&spec(None), "/state/vms/u-1"));
    let there = render(&plan(
        &spec(None),
        "/srv/a/much/deeper/state/directory/vms/u-1",
    ));
    assert_eq!(display(&here.xml), display(&there.xml));
    assert_eq!(here.config_hash, there.config_hash);
}
