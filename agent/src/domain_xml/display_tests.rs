//! The graphical display in the domain XML: a VNC socket in the VM's directory, never a TCP
//! listener, and nothing at all with `graphics: none`.

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
fn graphics_vnc_gives_a_vnc_display_on_a_unix_socket_in_its_directory_and_a_vga_adapter() {
    let xml = render(&plan(&spec(Some("vnc")), "/state/vms/u-1")).xml;
    let expected = concat!(
        "    <graphics type=\"vnc\">\n",
        "      <listen type=\"socket\" socket=\"/state/vms/u-1/display/vnc.sock\"/>\n",
        "    </graphics>\n",
        "    <video>\n",
        "      <model type=\"vga\" heads=\"1\" primary=\"yes\"/>\n",
        "    </video>\n",
        "    <input type=\"tablet\" bus=\"usb\"/>\n",
    );
    assert!(xml.contains(expected), "{xml}");
    assert_eq!(xml.matches("<graphics").count(), 1, "{xml}");
}

#[test]
fn the_display_never_listens_on_a_network_address() {
    let xml = render(&plan(&spec(Some("vnc")), "/state/vms/u-1")).xml;
    let start = xml.find("<graphics").unwrap();
    let graphics = &xml[start..start + xml[start..].find("</graphics>").unwrap()];
    for forbidden in [
        "type=\"address\"",
        "type=\"network\"",
        "port=",
        "autoport",
        "passwd",
        "listen=\"",
    ] {
        assert!(!graphics.contains(forbidden), "{forbidden} in {graphics}");
    }
    assert_eq!(xml.matches("socket=").count(), 1, "{xml}");
}

#[test]
fn graphics_none_renders_no_display_and_no_video_and_another_config_hash() {
    let none = render(&plan(&spec(Some("none")), "/state/vms/u-1"));
    for absent in ["<graphics", "<video", "vnc.sock", "tablet"] {
        assert!(!none.xml.contains(absent), "{absent} in {}", none.xml);
    }
    // A display cannot be added to or removed from a running guest: the hash tells so.
    let vnc = render(&plan(&spec(Some("vnc")), "/state/vms/u-1"));
    assert_ne!(none.config_hash, vnc.config_hash);
    // The default, for now, is none: the same domain as the explicit value.
    assert_eq!(render(&plan(&spec(None), "/state/vms/u-1")), none);
}

#[test]
fn the_socket_moves_with_the_vm_directory_without_changing_the_config_hash() {
    // A VM migrated to a host with another state directory keeps its configuration.
    let here = render(&plan(&spec(Some("vnc")), "/state/vms/u-1"));
    let there = render(&plan(&spec(Some("vnc")), "/srv/ironvisor/vms/u-1"));
    assert!(
        there
            .xml
            .contains("/srv/ironvisor/vms/u-1/display/vnc.sock")
    );
    assert_eq!(here.config_hash, there.config_hash);
}
