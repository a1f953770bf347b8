//! An agent holds only its own node: with the real manifests' RBAC and admission policies, the
//! agent of host A — its own node-bound ServiceAccount token, through real kubectl — cannot
//! write the status or metadata of a VM on host B, move its own VM, touch host B's Hypervisor
//! or heartbeat Lease, take the operator's leader Lease, or read a Secret; the agent
//! ServiceAccount's token without a node claim writes nothing. Each refusal names what is
//! wrong, and nothing changes. Meanwhile both agents and the operator, running as their
//! ServiceAccounts, place and start the VMs as usual.

use std::path::Path;
use std::time::Duration;

use ironvisor_tests::attack::{apply_as, assert_allowed, assert_refused, kubectl_as};
use ironvisor_tests::system::{System, guest_cache, tiny_guest, wait_for};
use serde_json::Value;

const QUICK: Duration = Duration::from_secs(60);
const SYSTEM_NS: &str = "ironvisor-system";

fn vm_on(ns: &str, name: &str, host_label: &str, images: &Path) -> String {
    let images = images.display();
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  runStrategy: Always\n  cpu: {{cores: 1}}\n  memory: {{size: 128Mi}}\n  \
         nodeSelector: {{e2e-host: {host_label}}}\n  terminationGracePeriodSeconds: 2\n  kernelBoot:\n    \
         kernel: {{hostPath: {{path: {images}/vmlinuz}}}}\n    initrd: {{hostPath: {{path: {images}/initrd.gz}}}}\n    \
         cmdline: console=ttyS0 panic=-1 ironvisor.stay\n"
    )
}

fn lease(name: &str, holder: &str) -> String {
    format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: {SYSTEM_NS}}}\n\
         spec: {{holderIdentity: {holder}, leaseDurationSeconds: 3600, renewTime: \"2099-01-01T00:00:00.000000Z\"}}\n"
    )
}

fn placed(sys: &System, ns: &str, name: &str, node: &str) -> Value {
    wait_for(&format!("{ns}/{name} running on {node}"), QUICK, || {
        let vm = sys.vm(ns, name);
        if vm["status"]["nodeName"] == node && vm["status"]["phase"] == "Running" {
            Ok(vm)
        } else {
            Err(ironvisor_tests::system::describe(&vm))
        }
    })
}

#[test]
fn an_agent_writes_only_its_own_nodes_objects_and_never_the_operators_lease() {
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let pid = std::process::id();
    let (a, b) = (format!("e2e-priv-a-{pid}"), format!("e2e-priv-b-{pid}"));
    let _agent_a = sys.agent(&a, "test:///default", &images);
    let _agent_b = sys.agent(&b, "test:///default", &images);
    let as_a = sys.service_account_kubeconfig("ironvisor-agent", Some(&a));

    // Before the operator runs, the leader Lease does not exist: agent A cannot create it.
    let out = apply_as(&as_a, &lease("ironvisor-operator", "intruder"));
    assert_refused(
        "agent A creating the operator's leader Lease",
        &out,
        &["Forbidden", "ironvisor-system/ironvisor-operator"],
    );
    assert!(
        sys.get("lease", Some(SYSTEM_NS), "ironvisor-operator")
            .is_none()
    );

    let (_operator, _) = sys.operator();
    for (host, label) in [(&a, "a"), (&b, "b")] {
        wait_for(&format!("Hypervisor {host}"), QUICK, || {
            sys.get("hypervisor", None, host)
                .ok_or_else(|| "not yet".to_string())
        });
        sys.kubectl_ok(&["label", "hypervisor", host, &format!("e2e-host={label}")]);
    }
    let ns = format!("e2epriv{pid}");
    sys.tenant(&ns, &ns, "{virtualMachines: 4, vcpus: 4}");
    sys.apply(&vm_on(&ns, "vm-a", "a", &images));
    sys.apply(&vm_on(&ns, "vm-b", "b", &images));
    placed(&sys, &ns, "vm-a", &a);
    let vm_b = placed(&sys, &ns, "vm-b", &b);

    // Host B's VM: neither its status nor its metadata.
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "vm",
            "vm-b",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Failed","printableStatus":"Hijacked"}}"#,
        ],
    );
    assert_refused(
        "agent A writing the status of a VM on host B",
        &out,
        &[
            &format!("the agent of node {a} may write the status of VMs placed on that node only"),
            &format!("placed on {b}"),
        ],
    );
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "vm",
            "vm-b",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    assert_refused(
        "agent A removing the finalizers of a VM on host B",
        &out,
        &[&format!(
            "the agent of node {a} may change VMs placed on that node only"
        )],
    );
    let now_b = sys.vm(&ns, "vm-b");
    assert_eq!(now_b["status"]["phase"], "Running");
    // Every finalizer B had is still there (the operator may have added its usage one since).
    let kept = now_b["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for f in vm_b["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert!(kept.contains(f), "finalizer {f} of vm-b removed: {kept:?}");
    }
    assert!(kept.iter().any(|f| f == "ironvisor.io/agent"), "{kept:?}");

    // Its own VM: not the placement, not the spec.
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "vm",
            "vm-a",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"nodeName":"{b}"}}}}"#),
        ],
    );
    assert_refused(
        "agent A moving its own VM to host B",
        &out,
        &[
            "the placement of a VirtualMachine",
            "is written by the Ironvisor operator only",
        ],
    );
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "vm",
            "vm-a",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Halted"}}"#,
        ],
    );
    assert_refused(
        "agent A changing its VM's spec",
        &out,
        &["may only add or remove its finalizer ironvisor.io/agent"],
    );
    // Nor the audit trail's record (silencing the next SpecChanged).
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "vm",
            "vm-a",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"audited":{"generation":99,"deletion":true}}}"#,
        ],
    );
    assert_refused(
        "agent A rewriting its VM's audit record",
        &out,
        &["the audit record of a VirtualMachine (status.audited)"],
    );
    // Nor the per-VM operation lock (ending another's migration or snapshot early).
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "vm",
            "vm-a",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"operation":{"kind":"Migration","name":"m","uid":"u","since":"2026-01-01T00:00:00Z"}}}"#,
        ],
    );
    assert_refused(
        "agent A taking its VM's operation lock",
        &out,
        &["the operation lock of a VirtualMachine (status.operation)"],
    );
    let vm_a = sys.vm(&ns, "vm-a");
    assert!(vm_a["status"]["operation"].is_null());
    assert_eq!(vm_a["status"]["nodeName"], a.as_str());
    assert_eq!(vm_a["spec"]["runStrategy"], "Always");
    assert_ne!(vm_a["status"]["audited"]["generation"], 99);

    // Host B's Hypervisor and heartbeat Lease.
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "hypervisor",
            &b,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[]}}"#,
        ],
    );
    assert_refused(
        "agent A writing host B's Hypervisor",
        &out,
        &[&format!("may write only its own Hypervisor {a}, not {b}")],
    );
    let heartbeat_b = format!("ironvisor-agent-{b}");
    let out = apply_as(&as_a, &lease(&heartbeat_b, &b));
    assert_refused(
        "agent A writing host B's heartbeat Lease",
        &out,
        &[
            &format!("may write only its heartbeat Lease ironvisor-system/ironvisor-agent-{a}"),
            &format!("not ironvisor-system/{heartbeat_b}"),
        ],
    );
    let hb = sys
        .get("lease", Some(SYSTEM_NS), &heartbeat_b)
        .expect("B's heartbeat");
    assert_ne!(hb["spec"]["renewTime"], "2099-01-01T00:00:00.000000Z");

    // The operator's leader Lease, now held.
    let holder = wait_for("the operator's leader Lease", QUICK, || {
        sys.get("lease", Some(SYSTEM_NS), "ironvisor-operator")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
            .ok_or_else(|| "no holder yet".to_string())
    });
    let out = kubectl_as(
        &as_a,
        &[
            "patch",
            "lease",
            "ironvisor-operator",
            "-n",
            SYSTEM_NS,
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"intruder","renewTime":"2099-01-01T00:00:00.000000Z"}}"#,
        ],
    );
    assert_refused(
        "agent A taking the operator's leader Lease",
        &out,
        &["Forbidden", "ironvisor-system/ironvisor-operator"],
    );
    let now = sys
        .get("lease", Some(SYSTEM_NS), "ironvisor-operator")
        .expect("leader Lease");
    assert_eq!(now["spec"]["holderIdentity"], holder.as_str());

    // Secrets: not even in the VM's namespace.
    sys.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: userdata, namespace: {ns}}}\nstringData: {{userdata: secret}}\n"
    ));
    let out = kubectl_as(&as_a, &["get", "secret", "userdata", "-n", &ns]);
    assert_refused(
        "agent A reading a Secret",
        &out,
        &[
            "system:serviceaccount:ironvisor-system:ironvisor-agent",
            "cannot get resource \"secrets\"",
        ],
    );

    // Its own objects it may write (the rules above are not simply "agents write nothing").
    let own = format!("ironvisor-agent-{a}");
    assert_allowed(
        "agent A patching its own heartbeat Lease",
        &kubectl_as(
            &as_a,
            &[
                "patch",
                "lease",
                &own,
                "-n",
                SYSTEM_NS,
                "--type=merge",
                "-p",
                r#"{"metadata":{"annotations":{"e2e":"own"}}}"#,
            ],
        ),
    );
}

#[test]
fn the_agent_service_account_without_a_node_claim_writes_nothing() {
    let sys = System::start();
    let node = format!("e2e-unbound-{}", std::process::id());
    let unbound = sys.service_account_kubeconfig("ironvisor-agent", None);
    let out = apply_as(&unbound, &lease(&format!("ironvisor-agent-{node}"), &node));
    assert_refused(
        "the agent's unbound token writing a heartbeat Lease",
        &out,
        &[
            "must authenticate with a node-bound service account token",
            "no node claim",
        ],
    );
    let out = apply_as(
        &unbound,
        &format!(
            "apiVersion: ironvisor.io/v1alpha1\nkind: Hypervisor\nmetadata: {{name: {node}}}\nspec: {{}}\n"
        ),
    );
    assert_refused(
        "the agent's unbound token creating a Hypervisor",
        &out,
        &["must authenticate with a node-bound service account token"],
    );
    assert!(sys.get("hypervisor", None, &node).is_none());
    // The token itself is valid: reads work (RBAC cannot make reads node-bound).
    assert_allowed(
        "the agent's unbound token listing VMs",
        &kubectl_as(&unbound, &["get", "vm", "-A"]),
    );
    assert!(
        sys.get("lease", Some(SYSTEM_NS), &format!("ironvisor-agent-{node}"))
            .is_none()
    );
}
