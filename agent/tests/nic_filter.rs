//! Bridged and libvirt-network interfaces carry libvirt's `clean-traffic` nwfilter in the
//! domain libvirt keeps, not only in the XML the agent renders: through the engine on
//! `test:///default`, and defined (never started: no bridge is created on the shared
//! machine) on the real `qemu:///system`, whose nwfilter driver must know the filter.

mod common;

use common::*;
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_agent::domain_xml::{DomainType, Owner, PlanInput, build_plan, render};
use ironvisor_crds::vm::VirtualMachineSpec;

fn spec() -> serde_json::Value {
    serde_json::json!({
        "runStrategy": "Halted",
        "memory": {"size": "128Mi"},
        "networks": [
            {"name": "lan", "bridge": {"name": "br-ivt"}},
            {"name": "nat", "network": {"name": "ivt-net"}},
            {"name": "user", "user": {}}
        ]
    })
}

/// The `<filterref>` of each `<interface>` in a domain XML, in order.
fn filters(xml: &str) -> Vec<Option<String>> {
    xml.split("<interface ")
        .skip(1)
        .map(|i| {
            let body = &i[..i.find("</interface>").expect("closed")];
            body.find("<filterref filter='")
                .or_else(|| body.find("<filterref filter=\""))
                .map(|at| {
                    let rest = &body[at + "<filterref filter='".len()..];
                    rest[..rest.find(['\'', '"']).expect("quoted")].to_owned()
                })
        })
        .collect()
}

#[tokio::test]
async fn the_test_driver_keeps_the_filter_on_both_tap_interfaces() {
    let host = Host::new("test:///default");
    let v = vm("nicfilter", "lan", "uid-nicfilter-1", spec());
    step(&host.engine, v).await;
    let xml = admin("test:///default")
        .lookup_domain_by_name(&domain_name("nicfilter", "lan"))
        .expect("defined")
        .xml_desc(0)
        .expect("xml");
    assert_eq!(
        filters(&xml),
        vec![Some("clean-traffic".into()), Some("clean-traffic".into())],
        "{xml}"
    );
}

#[test]
fn the_system_libvirtd_has_the_filter_and_keeps_it_on_a_defined_domain() {
    let conn = admin("qemu:///system");
    let names = conn.list_nw_filters().expect("nwfilter driver answers");
    assert!(
        names.iter().any(|n| n == "clean-traffic"),
        "libvirt has no clean-traffic filter (libvirt-daemon-config-nwfilter): {names:?}"
    );
    let spec: VirtualMachineSpec = serde_json::from_value(spec()).expect("valid spec");
    let uid = format!("nicfilter-{}", std::process::id());
    let plan = build_plan(&PlanInput {
        owner: Owner {
            uid: uid.clone(),
            namespace: "nicfilter".into(),
            name: uid.clone(),
            generation: 1,
            node: String::new(),
        },
        spec: &spec,
        domain_type: DomainType::Qemu,
        vm_dir: std::path::Path::new("/var/tmp/ironvisor-nicfilter"),
        kernel: None,
        initrd: None,
    })
    .expect("plan");
    let dom = conn.define_domain_xml(&render(&plan).xml).expect("defined");
    let xml = dom.xml_desc(0).expect("xml");
    dom.undefine().expect("undefined");
    assert_eq!(
        filters(&xml),
        vec![Some("clean-traffic".into()), Some("clean-traffic".into())],
        "{xml}"
    );
}
