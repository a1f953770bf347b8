//! Network admission through whole passes: allowed bridges and networks, privileged host
//! ports, duplicate MACs, host ports as a per-host placement resource.

use ironvisor_crds::common::condition_status;
use ironvisor_crds::vm::Protocol;
use pretty_assertions::assert_eq;

use super::*;
use crate::index::{Index, REASON_CHANGE_NOT_ADMITTED};
use crate::plan::tests::{cluster, key, limits, run, t, vm};
use crate::plan::{Config, Plan, plan};

fn allow(ix: &mut Index, tenant: &str, bridges: &[&str], networks: &[&str]) {
    ix.tenant_nets.insert(
        tenant.into(),
        TenantNets {
            bridges: bridges.iter().map(|s| (*s).to_owned()).collect(),
            networks: networks.iter().map(|s| (*s).to_owned()).collect(),
        },
    );
}

fn with_net(mut e: VmEntry, bridges: &[&str], networks: &[&str], macs: &[&str]) -> VmEntry {
    e.net.bridges = bridges.iter().map(|s| (*s).to_owned()).collect();
    e.net.networks = networks.iter().map(|s| (*s).to_owned()).collect();
    e.net.macs = macs.iter().map(|s| (*s).to_owned()).collect();
    e
}

fn with_ports(mut e: VmEntry, ports: &[u16]) -> VmEntry {
    e.request.host_ports = ports.iter().map(|p| (Protocol::TCP, *p)).collect();
    e
}

/// (status, reason, message) of the Scheduled condition a pass wrote for the VM.
fn scheduled(p: &Plan, ns: &str, name: &str) -> (String, String, String) {
    let w = p
        .vms
        .iter()
        .find(|w| w.key == key(ns, name))
        .unwrap_or_else(|| panic!("no write for {ns}/{name}: {:?}", p.vms));
    let c = &w.status.scheduled;
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn a_bridge_the_tenant_does_not_allow_is_not_admitted_with_network_not_allowed() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    allow(&mut ix, "fin", &["br-fin"], &["fin-net"]);
    ix.apply_vm_entry(with_net(
        vm("fin", "ok", 0, 1, 1),
        &["br-fin"],
        &["fin-net"],
        &[],
    ));
    ix.apply_vm_entry(with_net(vm("fin", "other", 1, 1, 1), &["br-ops"], &[], &[]));
    ix.apply_vm_entry(with_net(vm("fin", "net", 2, 1, 1), &[], &["default"], &[]));
    let p = run(&mut ix, 1);
    assert_eq!(p.placed, vec![key("fin", "ok")]);
    assert_eq!(
        scheduled(&p, "fin", "other"),
        (
            condition_status::FALSE.into(),
            REASON_NETWORK_NOT_ALLOWED.into(),
            "bridge \"br-ops\" is not allowed for tenant fin (its spec.allowedBridges: br-fin); \
             a cluster administrator adds it to the Tenant, or use a user-mode interface"
                .into()
        )
    );
    let (_, reason, msg) = scheduled(&p, "fin", "net");
    assert_eq!(reason, REASON_NETWORK_NOT_ALLOWED);
    assert!(msg.starts_with("libvirt network \"default\" is not allowed for tenant fin (its spec.allowedNetworks: fin-net)"), "{msg}");
    assert_eq!(p.pending.get(REASON_NETWORK_NOT_ALLOWED), Some(&2));
    let ann = p
        .vms
        .iter()
        .find(|w| w.key == key("fin", "other"))
        .and_then(|w| w.announce.clone());
    assert!(ann.is_some_and(|a| a.warning && a.reason == REASON_NETWORK_NOT_ALLOWED));
}

#[test]
fn a_tenant_that_allows_nothing_and_a_namespace_without_tenant_refuse_every_bridge() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_vm_entry(with_net(vm("fin", "a", 0, 1, 1), &["br0"], &[], &[]));
    ix.apply_vm_entry(with_net(vm("loose", "b", 1, 1, 1), &["br0"], &[], &[]));
    let p = run(&mut ix, 1);
    assert!(p.placed.is_empty());
    let (_, _, msg) = scheduled(&p, "fin", "a");
    assert!(msg.contains("(its spec.allowedBridges: none)"), "{msg}");
    let (_, reason, msg) = scheduled(&p, "loose", "b");
    assert_eq!(reason, REASON_NETWORK_NOT_ALLOWED);
    assert!(
        msg.contains("namespace loose belongs to no Tenant"),
        "{msg}"
    );
}

#[test]
fn allowing_the_bridge_on_the_tenant_admits_the_waiting_vm_on_the_next_pass() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_vm_entry(with_net(vm("fin", "a", 0, 1, 1), &["br0"], &[], &[]));
    assert!(run(&mut ix, 1).placed.is_empty());
    allow(&mut ix, "fin", &["br0"], &[]);
    assert_eq!(run(&mut ix, 2).placed, vec![key("fin", "a")]);
}

#[test]
fn a_privileged_host_port_needs_the_admin_setting() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_vm_entry(with_ports(vm("fin", "web", 0, 1, 1), &[8080, 80]));
    let p = plan(&ix, Config::default(), t(1));
    let (status, reason, msg) = scheduled(&p, "fin", "web");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", REASON_HOST_PORT_NOT_ALLOWED)
    );
    assert_eq!(
        msg,
        "host port 80/TCP is below 1024: forward a port from 1024-65535 instead (privileged \
         host ports need the operator's --allow-privileged-host-ports)"
    );
    let cfg = Config {
        allow_privileged_host_ports: true,
        ..Config::default()
    };
    assert_eq!(plan(&ix, cfg, t(1)).placed, vec![key("fin", "web")]);
}

#[test]
fn two_vms_forwarding_the_same_host_port_never_share_a_host() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8), ("h2", 8, 8)]);
    ix.apply_vm_entry(with_ports(vm("fin", "a", 0, 1, 1), &[2222]));
    ix.apply_vm_entry(with_ports(vm("fin", "b", 1, 1, 1), &[2222, 3333]));
    let p = run(&mut ix, 1);
    let node = |n: &str| {
        p.vms
            .iter()
            .find(|w| w.key == key("fin", n))
            .and_then(|w| w.status.node_name.clone())
    };
    assert!(node("a").is_some() && node("b").is_some());
    assert_ne!(node("a"), node("b"));
    // A third with the port finds no host, and says why in its Scheduled condition.
    ix.apply_vm_entry(with_ports(vm("fin", "c", 2, 1, 1), &[2222]));
    let p = run(&mut ix, 2);
    let (status, reason, msg) = scheduled(&p, "fin", "c");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unschedulable")
    );
    assert_eq!(
        msg,
        "0/2 hosts available: 2 host port already forwarded by another VM"
    );
    // Another port, or the same port over UDP, still fits.
    let mut udp = vm("fin", "d", 3, 1, 1);
    udp.request.host_ports = vec![(Protocol::UDP, 2222)];
    ix.apply_vm_entry(udp);
    assert_eq!(run(&mut ix, 3).placed, vec![key("fin", "d")]);
}

#[test]
fn a_halted_vm_keeps_its_host_ports_on_its_host() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    let mut a = with_ports(vm("fin", "a", 0, 1, 1), &[2222]);
    a.run_strategy = ironvisor_crds::vm::RunStrategy::Halted;
    ix.apply_vm_entry(a);
    assert_eq!(run(&mut ix, 1).placed, vec![key("fin", "a")]);
    ix.apply_vm_entry(with_ports(vm("fin", "b", 1, 1, 1), &[2222]));
    let p = run(&mut ix, 2);
    assert!(p.placed.is_empty());
    assert_eq!(scheduled(&p, "fin", "b").1, "Unschedulable");
}

#[test]
fn a_mac_already_used_is_refused_naming_the_holder_only_within_the_tenant() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_tenant_node(crate::quota::tree::tests::node("ops", None, &["ops"], 0));
    let mac = "52:54:00:00:00:01";
    ix.apply_vm_entry(with_net(vm("fin", "first", 0, 1, 1), &[], &[], &[mac]));
    run(&mut ix, 1);
    ix.apply_vm_entry(with_net(vm("fin", "second", 1, 1, 1), &[], &[], &[mac]));
    ix.apply_vm_entry(with_net(vm("ops", "third", 2, 1, 1), &[], &[], &[mac]));
    ix.apply_vm_entry(with_net(
        vm("ops", "fourth", 3, 1, 1),
        &[],
        &[],
        &["52:54:00:00:00:09"],
    ));
    let p = run(&mut ix, 2);
    assert_eq!(p.placed, vec![key("ops", "fourth")]);
    assert_eq!(
        scheduled(&p, "fin", "second"),
        (
            condition_status::FALSE.into(),
            REASON_DUPLICATE_MAC.into(),
            "macAddress 52:54:00:00:00:01 is already used by VM fin/first in tenant fin; \
             choose another or leave macAddress out to have one generated"
                .into()
        )
    );
    // Tenants may share a bridge: a MAC is unique in the cluster, and another tenant's
    // holder is not named.
    let (_, reason, msg) = scheduled(&p, "ops", "third");
    assert_eq!(reason, REASON_DUPLICATE_MAC);
    assert_eq!(
        msg,
        "macAddress 52:54:00:00:00:01 is already used by a VM of another tenant (MAC addresses \
         are unique in the cluster); choose another or leave macAddress out to have one generated"
    );
    assert!(!msg.contains("fin"), "{msg}");
    // The placed holder itself is never refused on later passes.
    let again = run(&mut ix, 3);
    assert!(again.vms.iter().all(|w| w.key != key("fin", "first")));
}

#[test]
fn two_new_vms_with_one_mac_in_one_pass_admit_the_older_only() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    let mac = "52:54:00:00:00:02";
    ix.apply_vm_entry(with_net(vm("fin", "young", 5, 1, 1), &[], &[], &[mac]));
    ix.apply_vm_entry(with_net(vm("fin", "old", 1, 1, 1), &[], &[], &[mac]));
    let p = run(&mut ix, 1);
    assert_eq!(p.placed, vec![key("fin", "old")]);
    assert_eq!(scheduled(&p, "fin", "young").1, REASON_DUPLICATE_MAC);
}

#[test]
fn one_vm_with_the_same_mac_on_two_interfaces_is_refused() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    let mac = "52:54:00:00:00:03";
    ix.apply_vm_entry(with_net(vm("fin", "twice", 0, 1, 1), &[], &[], &[mac, mac]));
    let p = run(&mut ix, 1);
    let (_, reason, msg) = scheduled(&p, "fin", "twice");
    assert_eq!(reason, REASON_DUPLICATE_MAC);
    assert!(msg.contains("another interface of this VM"), "{msg}");
}

/// The entry of a VM as the index holds it, with its spec's host ports edited.
fn edited_ports(ix: &Index, ns: &str, name: &str, ports: &[u16]) -> VmEntry {
    let e = ix.vm(&key(ns, name)).expect("known").clone();
    with_ports(e, ports)
}

#[test]
fn a_placed_vm_edited_to_forward_a_port_another_vm_on_its_host_holds_is_not_admitted() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_vm_entry(with_ports(vm("fin", "a", 0, 1, 1), &[2222]));
    ix.apply_vm_entry(with_ports(vm("fin", "b", 1, 1, 1), &[8080]));
    assert_eq!(run(&mut ix, 1).placed.len(), 2);
    let recorded =
        |ix: &Index, name: &str| ix.vm(&key("fin", name)).unwrap().admitted_ports.clone();
    assert_eq!(recorded(&ix, "b"), Some(vec![(Protocol::TCP, 8080)]));

    // b is edited to also forward a's port: refused, it keeps running as admitted.
    ix.apply_vm_entry(edited_ports(&ix, "fin", "b", &[2222, 8080]));
    let p = run(&mut ix, 2);
    let (status, reason, msg) = scheduled(&p, "fin", "b");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", REASON_CHANGE_NOT_ADMITTED)
    );
    assert!(
        msg.contains(
            "HostPortTaken: host port TCP/2222 is already forwarded by another VM on host h1"
        ),
        "{msg}"
    );
    assert_eq!(recorded(&ix, "b"), Some(vec![(Protocol::TCP, 8080)]));
    // a, the holder, is untouched.
    assert!(p.vms.iter().all(|w| w.key != key("fin", "a")));

    // Another free port is admitted and recorded; the old one is released.
    ix.apply_vm_entry(edited_ports(&ix, "fin", "b", &[9090]));
    let p = run(&mut ix, 3);
    assert_eq!(scheduled(&p, "fin", "b").1, "Scheduled");
    assert_eq!(recorded(&ix, "b"), Some(vec![(Protocol::TCP, 9090)]));
    ix.apply_vm_entry(with_ports(vm("fin", "c", 4, 1, 1), &[8080]));
    assert_eq!(run(&mut ix, 4).placed, vec![key("fin", "c")]);
}

#[test]
fn two_placed_vms_edited_to_one_free_port_in_one_pass_admit_the_older_only() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_vm_entry(vm("fin", "old", 0, 1, 1));
    ix.apply_vm_entry(vm("fin", "young", 1, 1, 1));
    assert_eq!(run(&mut ix, 1).placed.len(), 2);
    ix.apply_vm_entry(edited_ports(&ix, "fin", "young", &[5000]));
    ix.apply_vm_entry(edited_ports(&ix, "fin", "old", &[5000]));
    let p = run(&mut ix, 2);
    assert_eq!(scheduled(&p, "fin", "old").1, "Scheduled");
    assert_eq!(scheduled(&p, "fin", "young").1, REASON_CHANGE_NOT_ADMITTED);
    // Steady afterwards: neither is written again, and the refusal stands.
    let again = run(&mut ix, 3);
    assert!(again.vms.is_empty(), "{:?}", again.vms);
    let young = ix.vm(&key("fin", "young")).unwrap();
    assert_eq!(
        young.scheduled.as_ref().unwrap().reason,
        REASON_CHANGE_NOT_ADMITTED
    );
    assert_eq!(young.admitted_ports, Some(vec![]));
}

#[test]
fn ports_of_a_vm_placed_by_an_older_operator_are_adopted_as_they_are() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_vm_entry(with_ports(vm("fin", "a", 0, 1, 1), &[2222]));
    run(&mut ix, 1);
    let mut legacy = ix.vm(&key("fin", "a")).unwrap().clone();
    legacy.admitted_ports = None;
    ix.apply_vm_entry(legacy);
    let p = run(&mut ix, 2);
    assert_eq!(scheduled(&p, "fin", "a").1, "Scheduled");
    assert_eq!(
        ix.vm(&key("fin", "a")).unwrap().admitted_ports,
        Some(vec![(Protocol::TCP, 2222)])
    );
}
