//! Serial consoles through the Kubernetes API, end to end with nothing stood in: `ivctl
//! console` with a user's own kubeconfig → the devcluster (RBAC, then its front proxy) →
//! `ironvisor-console` (registered with the shipped Service and APIService) → the real
//! agent's mutual-TLS console port (certificate from the real operator's console PKI) →
//! libvirt → the tiny guest's shell on its serial port, under QEMU (TCG).
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh) and the workspace's binaries.

use std::path::Path;

use ironvisor_tests::console::{ConsoleStack, SerialSession, ivctl_console_once};
use ironvisor_tests::system::{System, wait_for};
use serde_json::Value;

/// The serial console of `ns/name` through the API as `kubeconfig`'s user: a shell command
/// whose answer is not in the command (`$((6*7))` is only 42 once the guest evaluated it).
fn round_trip(sys: &System, kubeconfig: &Path, ns: &str, name: &str) {
    let mut session = SerialSession::open(kubeconfig, ns, name, sys.dir.path());
    session.round_trip("echo $((6*7))x", "42x", ironvisor_tests::console::SETTLE);
    let status = session.close();
    assert!(status.success(), "ivctl console ended with {status}");
}

/// `ivctl console` and kubectl's raw GET of the console path, as `kubeconfig`'s user, are
/// refused by the API with 403 for `ns/name`.
fn assert_forbidden(kubeconfig: &Path, user: &str, ns: &str, name: &str) {
    let out = ivctl_console_once(kubeconfig, ns, name);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("(403)"),
        "{user} must get 403 for {ns}/{name} from ivctl console; got {:?}: {err}",
        out.status
    );
    let raw = format!(
        "/apis/subresources.ironvisor.io/v1/namespaces/{ns}/virtualmachines/{name}/console"
    );
    let out = ironvisor_tests::run(
        std::process::Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(["get", "--raw", &raw]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Forbidden") && err.contains(user),
        "{user} must be Forbidden for {raw} by the API; got {:?}: {err}",
        out.status
    );
}

/// The `ConsoleConnected` Events of `ns` (their notes).
fn connected_events(sys: &System, ns: &str) -> Vec<String> {
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

/// alice may open web's console, bob db's: each round-trips a command with their own guest
/// through `ivctl console`, and each gets 403 from the API for the other's; the console
/// server records who connected, and the agent counts the connection into the VM's status.
#[test]
fn each_user_reaches_only_the_serial_consoles_rbac_allows_and_the_guest_answers() {
    let stack = ConsoleStack::start("capi", &["alice", "bob"]);
    let (sys, ns) = (&stack.sys, stack.ns.as_str());
    sys.console_user(ns, "alice", &["console"], &["web"]);
    sys.console_user(ns, "bob", &["console"], &["db"]);
    sys.apply(&ironvisor_tests::console::console_vm_manifest(
        ns,
        "db",
        &stack.images,
    ));
    stack.running_console_vm("web");
    stack.running_console_vm("db");
    let (alice, bob) = (sys.user_kubeconfig("alice"), sys.user_kubeconfig("bob"));

    round_trip(sys, &alice, ns, "web");
    round_trip(sys, &bob, ns, "db");
    assert_forbidden(&bob, "bob", ns, "web");
    assert_forbidden(&alice, "alice", ns, "db");

    // The console server saw alice as the API's front proxy vouched for her.
    wait_for(
        "ConsoleConnected Events naming alice and bob",
        ironvisor_tests::console::SETTLE,
        || {
            let notes = connected_events(sys, ns);
            let named = |u: &str| notes.iter().any(|n| n.contains(&format!("user {u} ")));
            if named("alice") && named("bob") {
                Ok(())
            } else {
                Err(format!("{notes:?}"))
            }
        },
    );
    let web = sys.vm(ns, "web");
    assert!(
        web["status"]["console"]["lastConnectedTime"].is_string(),
        "the agent counted the connection: {}",
        web["status"]["console"]
    );
}
