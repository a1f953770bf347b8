//! A console follows its VM to another host: two hosts (private libvirtds on a test switch,
//! as the live-migration tests have them), each agent with its console port certified by the
//! operator, the console server registered with the devcluster; the tiny guest's serial shell
//! answers through `ivctl console` before a live migration and, from the new host, after it.
//!
//! Needs libvirtd's tools and root (hack/private-libvirtd.sh), as tests/tests/migration.rs.

use std::time::Duration;

use ironvisor_tests::console::{SerialSession, console_agent_args};
use ironvisor_tests::migration::Cluster;
use ironvisor_tests::system::{System, console, uid, wait_for};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const MIGRATE: Duration = Duration::from_secs(240);

/// Types `line` on `ns/name`'s serial console through the API (the admin's kubeconfig) until
/// `answer` comes back.
fn round_trip(sys: &System, ns: &str, name: &str, line: &str, answer: &str) {
    let mut session = SerialSession::open(&sys.kubeconfig, ns, name, sys.dir.path());
    session.round_trip(line, answer, ironvisor_tests::console::SETTLE);
    let status = session.close();
    assert!(status.success(), "ivctl console ended with {status}");
}

/// The notes of the `ConsoleConnected` Events in `ns`.
fn connected_notes(sys: &System, ns: &str) -> Vec<String> {
    let out = sys.kubectl_ok(&["get", "events.events.k8s.io", "-n", ns, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("an event list");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "ConsoleConnected")
        .filter_map(|e| e["note"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_serial_console_follows_its_vm_to_the_host_it_migrated_to() {
    let c = Cluster::start_with(
        "cmig",
        2,
        "{virtualMachines: 1, vcpus: 1, memory: 128Mi}",
        console_agent_args,
    );
    for h in &c.hosts {
        c.sys.wait_console_certificate(&h.agent.node);
    }
    let _server = c.sys.console_server();
    let (sys, ns) = (&c.sys, c.ns.as_str());
    c.apply_diskless_vm(
        "mover",
        "128Mi",
        "ironvisor.stay ironvisor.shell",
        "  graphics: none\n",
    );
    let vm = sys.wait_phase(ns, "mover", "Running", BOOT);
    let (vm_uid, source) = (uid(&vm), vm["status"]["nodeName"].clone());
    let src = c.host(source.as_str().expect("placed"));
    wait_for("the guest's shell up", BOOT, || {
        console(&src.agent, &vm_uid)
            .contains("IRONVISOR-GUEST-UP")
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    });
    round_trip(sys, ns, "mover", "echo $((6*7))x", "42x");

    c.apply_migration("away", "mover", None, "");
    let m = c.wait_migration("away", "Completed", MIGRATE);
    let target = m["status"]["targetNode"]
        .as_str()
        .expect("the migration names its target")
        .to_owned();
    assert_ne!(Some(target.as_str()), source.as_str());
    assert_eq!(sys.vm(ns, "mover")["status"]["nodeName"], target.as_str());

    // The same guest (its shell still running), now reached through the target's agent.
    round_trip(sys, ns, "mover", "echo $((7*8))y", "56y");
    let notes = connected_notes(sys, ns);
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("(host {target})"))),
        "a console was opened on the new host {target}: {notes:?}"
    );
}
