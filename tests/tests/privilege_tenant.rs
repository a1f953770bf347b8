//! A tenant's user cannot place a VM or write its status: alice, owner of a Tenant (so bound
//! to ironvisor-admin in its namespace by the operator), through real kubectl with her own
//! token, is refused when she creates a VM with the `ironvisor.io/node` label, changes or
//! removes that label on a placed VM, or writes a VM's status — with a message that says who
//! writes what — and the VM stays as the operator placed it. The cluster admin
//! (system:masters) cannot hand-write the label either. Ordinary edits still work.

use std::path::Path;
use std::time::Duration;

use ironvisor_tests::attack::{apply_as, assert_allowed, assert_refused, kubectl_as};
use ironvisor_tests::system::{System, describe, guest_cache, tiny_guest, wait_for};

const QUICK: Duration = Duration::from_secs(60);
const LABEL_RULE: &str = "the label ironvisor.io/node is a copy of status.nodeName that only the Ironvisor operator writes";

fn vm(ns: &str, name: &str, labels: &str, images: &Path) -> String {
    let images = images.display();
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\n\
         metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n\
         spec:\n  runStrategy: Always\n  cpu: {{cores: 1}}\n  memory: {{size: 128Mi}}\n  \
         terminationGracePeriodSeconds: 2\n  kernelBoot:\n    \
         kernel: {{hostPath: {{path: {images}/vmlinuz}}}}\n    initrd: {{hostPath: {{path: {images}/initrd.gz}}}}\n    \
         cmdline: console=ttyS0 panic=-1 ironvisor.stay\n"
    )
}

#[test]
fn a_tenant_can_neither_label_a_vm_onto_a_node_nor_write_its_status() {
    let images = tiny_guest(&guest_cache());
    let sys = System::start_with_users(&["alice"]);
    let (_operator, _) = sys.operator();
    let pid = std::process::id();
    let node = format!("e2e-tenant-{pid}");
    let _agent = sys.agent(&node, "test:///default", &images);
    let ns = format!("e2etenant{pid}");
    sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {ns}}}\n\
         spec:\n  namespaces: [{ns}]\n  owners: [{{kind: User, name: alice}}]\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: Quota\nmetadata: {{name: {ns}-quota}}\n\
         spec: {{tenant: {ns}, hard: {{virtualMachines: 4, vcpus: 4}}}}\n"
    ));
    let alice = sys.user_kubeconfig("alice");
    wait_for("alice may create VMs in her namespace", QUICK, || {
        let out = kubectl_as(
            &alice,
            &["auth", "can-i", "create", "virtualmachines", "-n", &ns],
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    });

    // A VM created with the label: refused, and not created.
    let out = apply_as(
        &alice,
        &vm(
            &ns,
            "sneaky",
            &format!("ironvisor.io/node: {node}"),
            &images,
        ),
    );
    assert_refused(
        "alice creating a VM labelled onto a node",
        &out,
        &[
            "Forbidden",
            LABEL_RULE,
            "alice may not set, change or remove it",
        ],
    );
    assert!(sys.get("vm", Some(&ns), "sneaky").is_none());

    // A VM created plainly is placed by the operator; its label is the operator's copy.
    assert_allowed(
        "alice creating a plain VM",
        &apply_as(&alice, &vm(&ns, "web", "", &images)),
    );
    let placed = wait_for("web running", QUICK, || {
        let v = sys.vm(&ns, "web");
        if v["status"]["phase"] == "Running" {
            Ok(v)
        } else {
            Err(describe(&v))
        }
    });
    assert_eq!(
        placed["metadata"]["labels"]["ironvisor.io/node"],
        node.as_str()
    );

    let out = kubectl_as(
        &alice,
        &[
            "label",
            "vm",
            "web",
            "-n",
            &ns,
            "ironvisor.io/node=elsewhere",
            "--overwrite",
        ],
    );
    assert_refused("alice changing the node label", &out, &[LABEL_RULE]);
    let out = kubectl_as(
        &alice,
        &["label", "vm", "web", "-n", &ns, "ironvisor.io/node-"],
    );
    assert_refused("alice removing the node label", &out, &[LABEL_RULE]);

    // Status: the tenant's role has no status writes at all (RBAC refuses before admission).
    let out = kubectl_as(
        &alice,
        &[
            "patch",
            "vm",
            "web",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"nodeName":"elsewhere","admitted":{"vcpus":0,"memory":"0","storage":"0"}}}"#,
        ],
    );
    assert_refused(
        "alice writing the status",
        &out,
        &["User \"alice\" cannot patch resource \"virtualmachines/status\""],
    );

    // The cluster admin is held to the same rule for the label and for status.
    let out = sys.kubectl(&[
        "label",
        "vm",
        "web",
        "-n",
        &ns,
        "ironvisor.io/node=elsewhere",
        "--overwrite",
    ]);
    assert_refused(
        "the admin hand-writing the node label",
        &out,
        &[LABEL_RULE, "admin may not"],
    );
    let out = sys.kubectl(&[
        "patch",
        "vm",
        "web",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"nodeName":"elsewhere"}}"#,
    ]);
    assert_refused(
        "the admin hand-writing the placement",
        &out,
        &[
            "the status of a VirtualMachine is written by the Ironvisor operator and agents only, not by admin",
        ],
    );

    let now = sys.vm(&ns, "web");
    assert_eq!(
        now["metadata"]["labels"]["ironvisor.io/node"],
        node.as_str()
    );
    assert_eq!(now["status"]["nodeName"], node.as_str());
    assert_eq!(now["status"]["admitted"], placed["status"]["admitted"]);
    assert_eq!(now["status"]["phase"], "Running");

    // Ordinary edits by the tenant still go through.
    assert_allowed(
        "alice labelling her VM with her own label",
        &kubectl_as(&alice, &["label", "vm", "web", "-n", &ns, "team=web"]),
    );
}
