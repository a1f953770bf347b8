//! `ivctl import vmware --dry-run-server`: the API server validates the imported manifest
//! before anything is written (a server-side apply dry run), and a refusal stops the import.

use crate::common::*;

/// An OVF with one new empty disk (no VMDK to convert: the import needs no qemu-img here).
const OVF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <DiskSection><Info>Disks</Info><Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="data"/></DiskSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/data</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

fn import(c: &Cluster, out: &std::path::Path) -> tokio::process::Command {
    let ovf = c.tmp.path().join("appliance.ovf");
    std::fs::write(&ovf, OVF).unwrap();
    let mut cmd = c.ivctl(&[
        "import",
        "vmware",
        "-n",
        NS,
        "--offline",
        "--dry-run-server",
    ]);
    cmd.arg(&ovf).arg("--out").arg(out);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_validates_the_manifest_before_it_is_written_and_stores_nothing() {
    let c = Cluster::start().await;
    let out = c.tmp.path().join("out");
    let text = ok(&run(import(&c, &out)).await);
    assert!(text.contains("imported into"), "{text}");
    assert!(
        stderr(&run(import(&c, &c.tmp.path().join("out2"))).await)
            .contains("accepted the manifest in a server-side dry run")
    );
    assert!(out.join("appliance/appliance.yaml").is_file());
    let stored = c.vms().list(&Default::default()).await.unwrap();
    assert!(stored.items.is_empty(), "a dry run stores nothing");
    c.stop().await;
}

/// A site's admission policy the offline check cannot know: VMs get at least 1Gi.
const SITE_POLICY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: site-minimum-memory
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [ironvisor.io]
      apiVersions: ["*"]
      operations: [CREATE, UPDATE]
      resources: [virtualmachines]
  validations:
  - expression: "quantity(string(object.spec.memory.size)).compareTo(quantity('1Gi')) >= 0"
    message: "this site runs VMs with at least 1Gi of memory"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: site-minimum-memory
spec:
  policyName: site-minimum-memory
  validationActions: [Deny]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_the_server_refuses_is_not_written() {
    let c = Cluster::start().await;
    let policy = c.tmp.path().join("policy.yaml");
    std::fs::write(&policy, SITE_POLICY).unwrap();
    let mut apply = c.kubectl(&["apply", "-f"]);
    apply.arg(&policy);
    ok(&run(apply).await);
    let out = c.tmp.path().join("out");
    let o = run(import(&c, &out)).await;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("API server refuses the manifest")
            && err.contains("nothing was written")
            && err.contains("at least 1Gi of memory"),
        "{err}"
    );
    assert!(!out.join("appliance").exists(), "nothing is left behind");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_of_that_name_owned_by_someone_else_is_no_refusal() {
    let c = Cluster::start().await;
    let theirs = c.tmp.path().join("theirs.yaml");
    std::fs::write(
        &theirs,
        format!(
            "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: appliance\n  namespace: {NS}\nspec:\n  memory:\n    size: 1Gi\n"
        ),
    )
    .unwrap();
    let mut apply = c.kubectl(&["apply", "--server-side", "-f"]);
    apply.arg(&theirs);
    ok(&run(apply).await);
    let out = c.tmp.path().join("out");
    ok(&run(import(&c, &out)).await);
    assert!(out.join("appliance/appliance.yaml").is_file());
    assert_eq!(
        c.get("appliance").await.spec.memory.size.0,
        "1Gi",
        "the dry run changed nothing"
    );
    c.stop().await;
}
