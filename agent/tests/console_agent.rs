//! The whole agent with `--console-address` against the devcluster, on `qemu:///system`
//! (libvirt's test driver hands out no display connection; `console_display` tests that
//! refusal): it publishes its endpoint and certificate request, serves once the (test's)
//! operator signed it and published the CA, bridges a VNC connection to the display of a
//! diskless guest (its BIOS idles; the display greets all the same), and counts it into the
//! VM's `status.console`.
//!
//! Needs libvirtd running as root (hack/start-libvirtd.sh, as CI does).

mod common;
mod console_support;

use common::cluster::{Cluster, wait_for};
use console_support::*;
use ironvisor_agent::console::pki::{self, CA_CONFIGMAP};
use ironvisor_agent::domain_xml::name::domain_name;
use ironvisor_crds::labels::SYSTEM_NAMESPACE;
use ironvisor_crds::vm::{Phase, VirtualMachine};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

const URI: &str = "qemu:///system";

/// Destroys and undefines a domain however the test ends.
struct Domain(String);

impl Drop for Domain {
    fn drop(&mut self) {
        for args in [["destroy", &self.0], ["undefine", &self.0]] {
            let _ = std::process::Command::new("virsh")
                .args(["-c", URI])
                .args(args)
                .output();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_its_console_port_with_the_signed_certificate_and_counts_connections() {
    let port = free_port();
    // QEMU's user must reach the VM's seed: a state directory under a traversable parent.
    let state = tempfile::Builder::new()
        .prefix("ironvisor-console-agent-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A node name of its own: the shared libvirtd holds other tests' domains.
    let node = format!("console-{}", std::process::id());
    let c = Cluster::start(&node, URI, |cfg| {
        cfg.state_dir = state.path().join("state");
        cfg.guard_host = false;
        cfg.console = Some(ironvisor_agent::console::Config {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            advertise: None,
            ca_namespace: SYSTEM_NAMESPACE.into(),
            max_connections: 8,
            sync_period: Duration::from_millis(200),
        });
    })
    .await;
    let hvs: Api<ironvisor_crds::hypervisor::Hypervisor> = Api::all(c.client.clone());
    let endpoint = wait_for("the console endpoint is published", || async {
        hvs.get_opt(&node)
            .await
            .ok()
            .flatten()
            .and_then(|h| h.status?.console_endpoint)
    })
    .await;
    assert_eq!(endpoint.address, format!("127.0.0.1:{port}"));
    let key_file = c.state_dir.join("console/key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Play the operator: sign the host's key for its names, publish the CA.
    let ca = TestCa::new("console test CA");
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let served = ca.sign_key(&key, &format!("hypervisor:{node}"), &[&node, "127.0.0.1"]);
    let status = serde_json::json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
    "metadata": {"name": node},
    "status": {"consoleCertificate": {
        "certificate": served,
        "csrSha256": pki::csr_sha256(&endpoint.csr).unwrap(),
    }}});
    hvs.patch_status(
        &node,
        &PatchParams::apply("test-operator").force(),
        &Patch::Apply(status),
    )
    .await
    .unwrap();
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIGMAP, "namespace": SYSTEM_NAMESPACE},
        "data": {"ca.crt": ca.pem()}});
    Api::<ConfigMap>::namespaced(c.client.clone(), SYSTEM_NAMESPACE)
        .patch(
            CA_CONFIGMAP,
            &PatchParams::apply("test-operator").force(),
            &Patch::Apply(cm),
        )
        .await
        .unwrap();

    // A VM running here: a diskless guest with the default display.
    let ns = format!("con{}", std::process::id());
    let _domain = Domain(domain_name(&ns, "desk"));
    c.place(
        &ns,
        "desk",
        &node,
        serde_json::json!({"memory": {"size": "64Mi"}}),
    )
    .await;
    let vm = c
        .wait_vm(&ns, "desk", "desk running", |v: &VirtualMachine| {
            v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await;
    let uid = vm.uid().unwrap();

    let client = connector(&ca.pem(), Some(&ca.client("ironvisor-console")));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = format!("/v1/namespaces/{ns}/virtualmachines/desk/vnc?uid={uid}");
    let mut ws = wait_for("the port serves with the signed certificate", || async {
        connect(addr, &client, &path).await.ok()
    })
    .await;
    assert_eq!(
        read_until(&mut ws, b"\n", Duration::from_secs(10)).await,
        b"RFB 003.008\n"
    );
    let vms = c.vms(&ns);
    wait_for("one connection counted", || async {
        let s = vms.get("desk").await.ok()?.status?.console?;
        (s.active_connections == 1 && s.last_connected_time.is_some()).then_some(())
    })
    .await;
    drop(ws);
    let after = wait_for("the connection counted closed", || async {
        let s = vms.get("desk").await.ok()?.status?.console?;
        (s.active_connections == 0 && s.last_disconnected_time.is_some()).then_some(s)
    })
    .await;
    assert!(after.last_connected_time.is_some());
    // The reconciler's writes keep the bridge's count (it leaves the field alone).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept = vms.get("desk").await.unwrap().status.unwrap().console;
    assert_eq!(kept, Some(after));
    c.stop().await;
}
