//! Appliance-shaped OVFs (vCenter-style deployment options, new empty disks, capacities
//! through vApp properties, vSphere boot order, gzip-compressed files): what is imported
//! and that the manifest validates. Disks are made here with qemu-img.

use std::path::Path;

use crate::fixtures::*;
use crate::schema::validated;
use ivctl::import::report::Status;

/// An appliance OVF: the system disk (`system.vmdk`, 2 MiB) on scsi0:1, a new empty disk
/// on scsi0:0, a log disk sized by the `log.size` property (GiB) only in the "normal" and
/// "large" configurations, and the system disk first in the vSphere boot order. Shaped like
/// DSP0243 1.1's examples (§9.1 disks, §9.8 deployment options) and vSphere exports
/// (`vmw:BootOrderSection` after the hardware). `compression` is added to the File.
pub fn appliance_ovf(compression: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="system.vmdk" ovf:id="file1"{compression}/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="system" ovf:fileRef="file1"/>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="swap"/>
    <Disk ovf:capacity="${{log.size}}" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="log"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="Network 1"><Description>The Network 1 network</Description></Network>
  </NetworkSection>
  <DeploymentOptionSection>
    <Info>Deployment size</Info>
    <Configuration ovf:id="tiny"><Label>Tiny</Label><Description>1 vCPU, 512 MB</Description></Configuration>
    <Configuration ovf:id="normal" ovf:default="true"><Label>Normal</Label><Description>2 vCPUs, 1 GB</Description></Configuration>
    <Configuration ovf:id="large"><Label>Large</Label><Description>4 vCPUs, 2 GB</Description></Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info>
    <Name>Appliance</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="other3xLinux64Guest"><Info>The operating system</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType></System>
      <Item ovf:configuration="tiny"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="normal"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="tiny"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="normal"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/system</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 2</rasd:ElementName><rasd:HostResource>ovf:/disk/swap</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item ovf:configuration="normal large"><rasd:AddressOnParent>2</rasd:AddressOnParent><rasd:ElementName>Hard disk 3</rasd:ElementName><rasd:HostResource>ovf:/disk/log</rasd:HostResource><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>Network 1</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>7</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
    <vmw:BootOrderSection vmw:instanceId="4" vmw:type="disk"><Info>Virtual hardware device boot order</Info></vmw:BootOrderSection>
    <ProductSection ovf:required="false">
      <Info>Information about the installed software</Info>
      <Product>Appliance</Product>
      <Vendor>Example</Vendor>
      <Category>Application</Category>
      <Property ovf:key="log.size" ovf:type="uint16" ovf:userConfigurable="true" ovf:value="1"><Label>Log disk size (GiB)</Label>
        <Value ovf:configuration="large" ovf:value="3"/></Property>
      <Category>Networking</Category>
      <Property ovf:key="guestinfo.hostname" ovf:type="string" ovf:userConfigurable="true" ovf:value="appliance-01"><Label>Host name</Label></Property>
      <Property ovf:key="guestinfo.dns" ovf:type="string" ovf:userConfigurable="true" ovf:value="10.0.0.53"><Label>DNS server</Label></Property>
      <Property ovf:key="root.password" ovf:type="string" ovf:password="true" ovf:userConfigurable="true" ovf:value="changeme"><Label>Root password</Label></Property>
    </ProductSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// The appliance's directory with its system disk; returns the raw bytes of that disk.
pub fn appliance(dir: &Path, compression: &str) -> Vec<u8> {
    let raw = raw_disk(dir, "system.raw", 2, 41);
    vmdk_from_raw(
        &raw,
        &dir.join("system.vmdk"),
        "streamOptimized",
        "lsilogic",
    );
    std::fs::write(dir.join("appliance.ovf"), appliance_ovf(compression)).unwrap();
    std::fs::read(raw).unwrap()
}

#[test]
fn an_appliance_imports_its_default_option_with_blank_disks_and_its_boot_order() {
    let dir = tempfile::tempdir().unwrap();
    let raw = appliance(dir.path(), "");
    let out = dir.path().join("out");
    let report = import(&request(&dir.path().join("appliance.ovf"), &out)).unwrap();
    assert_eq!(report.status, Status::Imported);
    assert_eq!((report.vm.vcpus, report.vm.memory_mib), (2, 1024));
    let blank: Vec<(&str, bool, u64)> = report
        .disks
        .iter()
        .map(|d| (d.slot.as_str(), d.blank, d.capacity_bytes))
        .collect();
    assert_eq!(
        blank,
        [
            ("scsi0:0", true, 64 << 20),
            ("scsi0:1", false, 2 << 20),
            ("scsi0:2", true, 1 << 30)
        ]
    );
    assert!(report.to_text().contains("blank disk"));
    let vm = validated(&out.join("appliance/appliance.yaml"));
    let disks: Vec<(&str, bool, Option<u32>, &str)> = vm
        .spec
        .disks
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.source.blank.is_some(),
                d.boot_order,
                d.size.as_ref().unwrap().0.as_str(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        [
            ("scsi0-0", true, None, "64Mi"),
            ("scsi0-1", false, Some(1), "2Mi"),
            ("scsi0-2", true, None, "1Gi")
        ],
        "the boot order section's disk boots, new empty disks are blank"
    );
    assert_eq!(
        entries(&out.join("appliance")),
        ["appliance-scsi0-1.qcow2", "appliance.yaml"],
        "blank disks have no image"
    );
    assert_qcow2_equals(&out.join("appliance/appliance-scsi0-1.qcow2"), &raw);
}

#[test]
fn a_chosen_deployment_option_and_a_property_value_size_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    appliance(dir.path(), "");
    let mut req = request(&dir.path().join("appliance.ovf"), &dir.path().join("out"));
    req.dry_run = true;
    req.ovf.deployment_option = Some("large".into());
    let report = import(&req).unwrap();
    assert_eq!((report.vm.vcpus, report.vm.memory_mib), (4, 2048));
    assert_eq!(report.disks[2].capacity_bytes, 3 << 30, "large's own value");
    req.ovf.properties = [("log.size".to_owned(), "5".to_owned())].into();
    let report = import(&req).unwrap();
    assert_eq!(
        report.disks[2].capacity_bytes,
        5 << 30,
        "the user's value wins"
    );
    req.ovf.deployment_option = Some("tiny".into());
    let report = import(&req).unwrap();
    assert_eq!((report.vm.vcpus, report.vm.memory_mib), (1, 512));
    assert_eq!(report.disks.len(), 2, "tiny has no log disk");
}

#[test]
fn an_unknown_deployment_option_fails_listing_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    appliance(dir.path(), "");
    let out = dir.path().join("out");
    let mut req = request(&dir.path().join("appliance.ovf"), &out);
    req.ovf.deployment_option = Some("xl".into());
    let err = chain(&import(&req).unwrap_err());
    assert!(
        err.contains("\"xl\"") && err.contains("tiny, normal, large"),
        "{err}"
    );
    assert_eq!(
        entries(&out),
        Vec::<String>::new(),
        "nothing is left behind"
    );
}

/// gzip `dir/name` in place, as ovftool writes a file it marks `ovf:compression="gzip"`.
fn gzip_in_place(dir: &Path, name: &str) {
    use std::io::Write;
    let data = std::fs::read(dir.join(name)).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&data).unwrap();
    std::fs::write(dir.join(name), e.finish().unwrap()).unwrap();
}

const GZIP: &str = r#" ovf:compression="gzip""#;

#[test]
fn a_gzip_compressed_disk_beside_its_ovf_is_decompressed_and_imported() {
    let dir = tempfile::tempdir().unwrap();
    let raw = appliance(dir.path(), GZIP);
    gzip_in_place(dir.path(), "system.vmdk");
    write_manifest(
        dir.path(),
        "appliance.mf",
        &["appliance.ovf", "system.vmdk"],
        true,
    );
    let out = dir.path().join("out");
    let mut req = request(&dir.path().join("appliance.ovf"), &out);
    req.dry_run = true;
    let report = import(&req).unwrap();
    assert_eq!(report.disks[1].subformat, "streamOptimized");
    req.dry_run = false;
    let report = import(&req).unwrap();
    assert_eq!(report.status, Status::Imported);
    assert!(
        !report.findings.iter().any(|f| f.id == "unverified-files"),
        "the manifest covers the compressed file"
    );
    assert_qcow2_equals(&out.join("appliance/appliance-scsi0-1.qcow2"), &raw);
    assert_eq!(
        entries(&out),
        ["appliance"],
        "the decompressed file stays in staging"
    );
}

#[test]
fn a_gzip_compressed_disk_in_an_ova_is_decompressed_and_its_digest_is_of_the_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let raw = appliance(dir.path(), GZIP);
    gzip_in_place(dir.path(), "system.vmdk");
    write_manifest(
        dir.path(),
        "appliance.mf",
        &["appliance.ovf", "system.vmdk"],
        false,
    );
    let ova = dir.path().join("appliance.ova");
    write_ova(
        dir.path(),
        &["appliance.ovf", "appliance.mf", "system.vmdk"],
        &ova,
    );
    let out = dir.path().join("out");
    let report = import(&request(&ova, &out)).unwrap();
    assert_eq!(report.status, Status::Imported);
    assert_qcow2_equals(&out.join("appliance/appliance-scsi0-1.qcow2"), &raw);
}

#[test]
fn a_gzip_file_inflating_past_its_disk_capacity_is_refused_naming_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    appliance(dir.path(), GZIP);
    // 64 MiB of zeros is a few KiB of gzip; the disk declares 2 MiB.
    std::fs::write(dir.path().join("system.vmdk"), vec![0u8; 64 << 20]).unwrap();
    gzip_in_place(dir.path(), "system.vmdk");
    assert!(
        std::fs::metadata(dir.path().join("system.vmdk"))
            .unwrap()
            .len()
            < 1 << 20
    );
    let out = dir.path().join("out");
    let err = chain(&import(&request(&dir.path().join("appliance.ovf"), &out)).unwrap_err());
    assert!(
        err.contains("decompresses to more than") && err.contains("capacity"),
        "{err}"
    );
    assert_eq!(
        entries(&out),
        Vec::<String>::new(),
        "nothing is left behind"
    );
}

#[test]
fn a_file_marked_gzip_that_is_not_says_so() {
    let dir = tempfile::tempdir().unwrap();
    appliance(dir.path(), GZIP);
    let err = chain(
        &import(&request(
            &dir.path().join("appliance.ovf"),
            &dir.path().join("out"),
        ))
        .unwrap_err(),
    );
    assert!(err.contains("ovf:compression=\"gzip\""), "{err}");
}

#[test]
fn vapp_properties_are_listed_and_without_the_flag_not_carried() {
    let dir = tempfile::tempdir().unwrap();
    appliance(dir.path(), "");
    let mut req = request(&dir.path().join("appliance.ovf"), &dir.path().join("out"));
    req.dry_run = true;
    let report = import(&req).unwrap();
    let keys: Vec<(&str, Option<&str>)> = report
        .vapp_properties
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_deref()))
        .collect();
    assert_eq!(
        keys,
        [
            ("log.size", Some("1")),
            ("guestinfo.hostname", Some("appliance-01")),
            ("guestinfo.dns", Some("10.0.0.53")),
            ("root.password", None),
        ],
        "secrets are listed without their value"
    );
    let text = report.to_text();
    assert!(text.contains("root.password = (secret, not shown)") && !text.contains("changeme"));
    let f = report
        .findings
        .iter()
        .find(|f| f.id == "vapp-properties-not-carried")
        .expect("a warning lists them");
    assert!(f.detail.contains("guestinfo.dns"), "{}", f.detail);
    assert_eq!(
        report.manifest["spec"]["cloudInit"],
        serde_json::Value::Null
    );
}

#[test]
fn vapp_properties_as_cloud_init_reach_the_manifest_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    appliance(dir.path(), "");
    let out = dir.path().join("out");
    let mut req = request(&dir.path().join("appliance.ovf"), &out);
    req.vapp_cloud_init = true;
    req.ovf.properties = [("guestinfo.dns".to_owned(), "192.0.2.53".to_owned())].into();
    let report = import(&req).unwrap();
    let vm = validated(&out.join("appliance/appliance.yaml"));
    assert_eq!(vm.spec.hostname.as_deref(), Some("appliance-01"));
    let user_data = vm.spec.cloud_init.unwrap().user_data.unwrap();
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");
    assert!(
        user_data.contains(r#"oe:key=\"guestinfo.dns\" oe:value=\"192.0.2.53\""#)
            || user_data.contains(r#"oe:key="guestinfo.dns" oe:value="192.0.2.53""#),
        "{user_data}"
    );
    assert!(!user_data.contains("changeme"), "secrets never travel");
    let f = report
        .findings
        .iter()
        .find(|f| f.id == "vapp-properties-not-carried")
        .expect("the secret is still listed");
    assert!(
        f.detail.contains("root.password") && !f.detail.contains("guestinfo.dns"),
        "{}",
        f.detail
    );
    assert!(report.mappings.iter().any(|m| m.contains("spec.hostname")));
}
