//! Unit tests of the OVF reader on small descriptors shaped like real exports.

use super::*;
use crate::import::model::{ControllerKind, DeviceKind};

#[test]
fn allocation_units_follow_dsp0004() {
    assert_eq!(units("byte").unwrap(), 1);
    assert_eq!(units("byte * 2^30").unwrap(), 1 << 30);
    assert_eq!(units("byte * 1024").unwrap(), 1024);
    assert_eq!(units("MegaBytes").unwrap(), 1 << 20);
    assert!(units("furlongs").is_err());
    assert!(units("byte * 2^999").is_err());
}

#[test]
fn a_document_that_is_not_an_envelope_is_refused() {
    assert!(matches!(parse("<Envelope/>"), Err(OvfError::NotOvf)));
}

#[test]
fn a_collection_of_systems_is_refused() {
    let text = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">
        <VirtualSystem/><VirtualSystem/></Envelope>"#;
    assert!(matches!(parse(text), Err(OvfError::VirtualSystems(2))));
    // A vApp of one VM: named as what it is, not as "found 1".
    let vapp = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">
        <VirtualSystemCollection><VirtualSystem/></VirtualSystemCollection></Envelope>"#;
    let err = parse(vapp).unwrap_err();
    assert!(matches!(err, OvfError::Collection(1)), "{err:?}");
    assert!(
        err.to_string().contains("export each VM of the vApp"),
        "{err}"
    );
}

const DEVICES: &str = r#"<?xml version="1.0"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
xmlns:r="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
xmlns:v="http://www.vmware.com/schema/ovf">
  <ovf:References><ovf:File ovf:id="f1" ovf:href="a.vmdk"/><ovf:File ovf:id="f2" ovf:href="b.vmdk"/></ovf:References>
  <ovf:DiskSection>
<ovf:Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30"/>
<ovf:Disk ovf:diskId="d2" ovf:fileRef="f2" ovf:capacity="1024"/>
  </ovf:DiskSection>
  <ovf:VirtualSystem ovf:id="cluster-node">
<ovf:VirtualHardwareSection>
  <ovf:Item><r:ResourceType>3</r:ResourceType><r:VirtualQuantity>8</r:VirtualQuantity><r:InstanceID>1</r:InstanceID></ovf:Item>
  <ovf:Item><r:ResourceType>4</r:ResourceType><r:VirtualQuantity>2</r:VirtualQuantity><r:AllocationUnits>byte * 2^30</r:AllocationUnits><r:InstanceID>2</r:InstanceID></ovf:Item>
  <ovf:Item><r:ResourceType>6</r:ResourceType><r:ResourceSubType>lsilogicsas</r:ResourceSubType><r:InstanceID>3</r:InstanceID><r:Address>1</r:Address>
    <v:Config v:key="sharedBus" v:value="physicalSharing"/></ovf:Item>
  <ovf:Item><r:ResourceType>17</r:ResourceType><r:HostResource>ovf:/disk/d1</r:HostResource><r:Parent>3</r:Parent><r:AddressOnParent>2</r:AddressOnParent><r:InstanceID>4</r:InstanceID></ovf:Item>
  <ovf:Item><r:ResourceType>17</r:ResourceType><r:HostResource>/disk/d2</r:HostResource><r:Parent>3</r:Parent><r:InstanceID>5</r:InstanceID>
    <v:Config v:key="backing.diskMode" v:value="independent_persistent"/></ovf:Item>
  <ovf:Item><r:ResourceType>23</r:ResourceType><r:ElementName>USB controller</r:ElementName><r:InstanceID>6</r:InstanceID></ovf:Item>
  <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pcipassthrough</r:ResourceSubType><r:ElementName>PCI device 0</r:ElementName><r:InstanceID>7</r:InstanceID>
    <v:Config v:key="backing.vgpu" v:value="grid_t4-4q"/></ovf:Item>
  <ovf:Item><r:ResourceType>21</r:ResourceType><r:ElementName>Serial port 1</r:ElementName><r:InstanceID>8</r:InstanceID>
    <v:Config v:key="backing.serviceURI" v:value="telnet://:7000"/></ovf:Item>
  <ovf:Item><r:ResourceType>15</r:ResourceType><r:ElementName>CD/DVD drive 1</r:ElementName><r:InstanceID>9</r:InstanceID></ovf:Item>
</ovf:VirtualHardwareSection>
  </ovf:VirtualSystem>
</ovf:Envelope>"#;

#[test]
fn devices_without_equivalent_shared_and_independent_disks_are_read_from_an_ovf() {
    let pkg = parse(DEVICES).unwrap();
    let vm = pkg.vm;
    assert_eq!(vm.name, "cluster-node");
    assert_eq!((vm.vcpus, vm.cores_per_socket, vm.memory_mib), (8, 1, 2048));
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(vm.disks[0].slot(), "scsi1:0");
    assert_eq!(vm.disks[1].slot(), "scsi1:2");
    assert_eq!(vm.disks[1].capacity_bytes, Some(8 << 30));
    assert!(
        vm.disks
            .iter()
            .all(|d| d.shared && d.controller == ControllerKind::LsiLogicSas)
    );
    assert!(vm.disks[0].independent && !vm.disks[1].independent);
    let kinds: Vec<DeviceKind> = vm.devices.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            DeviceKind::UsbController,
            DeviceKind::Vgpu,
            DeviceKind::SerialNetwork,
            DeviceKind::Cdrom
        ]
    );
    assert_eq!(pkg.files.len(), 2);
}

#[test]
fn a_disk_pointing_at_an_undefined_file_is_a_dangling_reference() {
    let text = DEVICES.replace(r#"ovf:fileRef="f2""#, r#"ovf:fileRef="nope""#);
    let err = parse(&text).unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

#[test]
fn vgpu_backings_passthrough_spellings_sr_iov_and_a_vtpm_are_listed() {
    let items = r#"<ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pci.passthrough.vmiop</r:ResourceSubType><r:ElementName>PCI device 0</r:ElementName><r:InstanceID>7</r:InstanceID></ovf:Item>
  <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pci.passthrough.dynamic</r:ResourceSubType><r:ElementName>PCI device 1</r:ElementName><r:InstanceID>10</r:InstanceID></ovf:Item>
  <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pcipassthrough</r:ResourceSubType><r:ElementName>PCI device 2</r:ElementName><r:InstanceID>11</r:InstanceID>
    <v:Config v:key="backing.id" v:value="vmiop:grid_a100-4c"/></ovf:Item>
  <ovf:Item><r:ResourceType>10</r:ResourceType><r:ResourceSubType>vmware.sriovethernetcard</r:ResourceSubType><r:ElementName>Network adapter 1</r:ElementName><r:Connection>VM Network</r:Connection><r:InstanceID>12</r:InstanceID></ovf:Item>
  <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.vtpm</r:ResourceSubType><r:ElementName>Virtual TPM</r:ElementName><r:InstanceID>13</r:InstanceID></ovf:Item>"#;
    let start = DEVICES
        .find("<ovf:Item><r:ResourceType>1</r:ResourceType>")
        .unwrap();
    let end = DEVICES
        .find("<ovf:Item><r:ResourceType>21</r:ResourceType>")
        .unwrap();
    let text = format!("{}{}\n      {}", &DEVICES[..start], items, &DEVICES[end..]);
    let vm = parse(&text).unwrap().vm;
    let found: Vec<(DeviceKind, &str)> = vm
        .devices
        .iter()
        .filter(|d| {
            d.label != "USB controller"
                && !d.label.starts_with("Serial")
                && !d.label.starts_with("CD")
        })
        .map(|d| (d.kind, d.label.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (DeviceKind::Vgpu, "PCI device 0"),
            (DeviceKind::PciPassthrough, "PCI device 1"),
            (DeviceKind::Vgpu, "PCI device 2"),
            (DeviceKind::SriovNic, "Network adapter 1"),
            (DeviceKind::Vtpm, "Virtual TPM"),
        ]
    );
    assert_eq!(vm.nics.len(), 1, "the SR-IOV adapter's network is kept");
    assert_eq!(vm.nics[0].model, "vmxnet3");
    assert_eq!(vm.nics[0].network.as_deref(), Some("VM Network"));
}

/// An envelope around `body` (sections inside the VirtualSystem after its hardware) with
/// `hw` items, `envelope` sections before the VirtualSystem, and one LSI Logic controller
/// (InstanceID 3).
fn envelope(envelope_sections: &str, hw: &str, system_sections: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
{envelope_sections}
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
{hw}
    </VirtualHardwareSection>
{system_sections}
  </VirtualSystem>
</Envelope>"#
    )
}

fn disk_item(id: u32, host: &str, unit: u32) -> String {
    format!(
        "<Item><rasd:AddressOnParent>{unit}</rasd:AddressOnParent><rasd:ElementName>Hard disk {id}</rasd:ElementName>{host}<rasd:InstanceID>{id}</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>"
    )
}

// Shaped like the DiskSection example of DSP0243 1.1 §9.1: one disk with a file, one new
// empty disk, one whose capacity is a property reference in GiB.
const DISKS: &str = r#"
  <References><File ovf:href="system.vmdk" ovf:id="file1" ovf:size="1024"/></References>
  <DiskSection>
    <Info>Describes the set of virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="8589934592"/>
    <Disk ovf:diskId="vmdisk2" ovf:capacity="536870912"/>
    <Disk ovf:diskId="vmdisk3" ovf:capacity="${disk.size}" ovf:capacityAllocationUnits="byte * 2^30"/>
  </DiskSection>"#;

fn product(props: &str) -> String {
    format!(
        r#"<ProductSection ovf:required="false"><Info>Information about the installed software</Info><Product>Appliance</Product>{props}</ProductSection>"#
    )
}

fn three_disks() -> String {
    [
        disk_item(
            10,
            "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>",
            0,
        ),
        disk_item(
            11,
            "<rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource>",
            1,
        ),
        disk_item(
            12,
            "<rasd:HostResource>ovf:/disk/vmdisk3</rasd:HostResource>",
            2,
        ),
    ]
    .join("\n")
}

#[test]
fn new_empty_disks_and_property_capacities_become_blank_disks_of_their_size() {
    let props = product(
        r#"<Property ovf:key="disk.size" ovf:type="uint16" ovf:value="20" ovf:userConfigurable="true"><Label>Data disk (GiB)</Label></Property>"#,
    );
    let vm = parse(&envelope(DISKS, &three_disks(), &props)).unwrap().vm;
    let got: Vec<(Option<&str>, Option<u64>)> = vm
        .disks
        .iter()
        .map(|d| (d.file.as_deref(), d.capacity_bytes))
        .collect();
    assert_eq!(
        got,
        [
            (Some("system.vmdk"), Some(8 << 30)),
            (None, Some(512 << 20)),
            (None, Some(20 << 30)),
        ]
    );
}

#[test]
fn a_user_property_value_overrides_the_default_and_an_unset_one_names_the_flag() {
    let props = product(r#"<Property ovf:key="disk.size" ovf:type="uint16"/>"#);
    let text = envelope(DISKS, &three_disks(), &props);
    let err = parse(&text).unwrap_err();
    assert!(matches!(err, OvfError::Unresolved { .. }), "{err:?}");
    assert!(
        err.to_string().contains("--vapp-property disk.size=VALUE"),
        "{err}"
    );
    let opts = ParseOptions {
        properties: [("disk.size".to_owned(), "2".to_owned())].into(),
        ..ParseOptions::default()
    };
    let vm = parse_with(&text, &opts).unwrap().vm;
    assert_eq!(vm.disks[2].capacity_bytes, Some(2 << 30));
    // A hostile value overflows nothing.
    let opts = ParseOptions {
        properties: [("disk.size".to_owned(), u64::MAX.to_string())].into(),
        ..ParseOptions::default()
    };
    assert!(matches!(
        parse_with(&text, &opts),
        Err(OvfError::BadValue { .. })
    ));
}

#[test]
fn a_disk_item_without_host_resource_is_a_blank_disk_of_its_quantity() {
    let item = "<Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits><rasd:InstanceID>9</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>";
    let vm = parse(&envelope("", item, "")).unwrap().vm;
    assert_eq!(vm.disks[0].file, None);
    assert_eq!(vm.disks[0].capacity_bytes, Some(4 << 30));
    assert_eq!(vm.disks[0].slot(), "scsi0:1");
    // Neither a HostResource nor a quantity: nothing to size it by.
    let bare = item.replace("<rasd:VirtualQuantity>4</rasd:VirtualQuantity>", "");
    let err = parse(&envelope("", &bare, "")).unwrap_err();
    assert!(err.to_string().contains("HostResource"), "{err}");
}

#[test]
fn a_host_resource_naming_a_file_directly_is_that_file() {
    let refs = r#"<References><File ovf:href="d.vmdk" ovf:id="f"/></References>"#;
    let item = disk_item(9, "<rasd:HostResource>ovf:/file/f</rasd:HostResource>", 0);
    let vm = parse(&envelope(refs, &item, "")).unwrap().vm;
    assert_eq!(vm.disks[0].file.as_deref(), Some("d.vmdk"));
    assert_eq!(vm.disks[0].capacity_bytes, None);
}

// Shaped like DSP0243 1.1 §9.8's example and appliance OVFs (vCenter Server Appliance's
// tiny/small/medium sizes): items and property values per configuration.
const OPTIONS: &str = r#"
  <DeploymentOptionSection>
    <Info>List of profiles</Info>
    <Configuration ovf:id="minimal"><Label>Minimal</Label><Description>Some description</Description></Configuration>
    <Configuration ovf:id="normal" ovf:default="true"><Label>Typical</Label><Description>Some description</Description></Configuration>
    <Configuration ovf:id="large"><Label>Large</Label><Description>Some description</Description></Configuration>
  </DeploymentOptionSection>
  <References><File ovf:href="system.vmdk" ovf:id="file1"/></References>
  <DiskSection><Info>Disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="8589934592"/>
    <Disk ovf:diskId="log" ovf:capacity="${log.size}" ovf:capacityAllocationUnits="byte * 2^30"/>
  </DiskSection>"#;

fn sized_items() -> String {
    let cpu = |cfg: &str, n: u32| {
        format!(
            "<Item ovf:configuration=\"{cfg}\"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>{n}</rasd:VirtualQuantity></Item>"
        )
    };
    let mem = |cfg: &str, n: u32| {
        format!(
            "<Item ovf:configuration=\"{cfg}\"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>{n}</rasd:VirtualQuantity></Item>"
        )
    };
    let large_disk = disk_item(
        11,
        "<rasd:HostResource>ovf:/disk/log</rasd:HostResource>",
        1,
    )
    .replacen("<Item>", "<Item ovf:configuration=\"normal large\">", 1);
    [
        cpu("minimal", 1),
        cpu("normal", 2),
        cpu("large", 8),
        mem("minimal", 512),
        mem("normal large", 4096),
        disk_item(
            10,
            "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>",
            0,
        ),
        large_disk,
    ]
    .join("\n")
}

fn sized_product() -> String {
    product(
        r#"<Property ovf:key="log.size" ovf:type="uint16" ovf:value="10"><Label>Log disk</Label>
             <Value ovf:value="50" ovf:configuration="large"/></Property>
           <Property ovf:key="root.password" ovf:type="string" ovf:password="true" ovf:value="s3cret"/>"#,
    )
}

#[test]
fn the_default_deployment_option_decides_items_and_property_values() {
    let text = envelope(OPTIONS, &sized_items(), &sized_product());
    let pkg = parse(&text).unwrap();
    let d = pkg.deployment.as_ref().unwrap();
    assert_eq!(
        (d.chosen.as_str(), d.default.as_str()),
        ("normal", "normal")
    );
    assert_eq!(d.options, ["minimal", "normal", "large"]);
    assert_eq!((pkg.vm.vcpus, pkg.vm.memory_mib), (2, 4096));
    assert_eq!(pkg.vm.disks.len(), 2);
    assert_eq!(pkg.vm.disks[1].capacity_bytes, Some(10 << 30));
    assert!(
        pkg.properties
            .iter()
            .any(|p| p.key == "root.password" && p.password)
    );
}

#[test]
fn a_chosen_deployment_option_applies_its_items_and_values_only() {
    let text = envelope(OPTIONS, &sized_items(), &sized_product());
    let with = |o: &str| ParseOptions {
        deployment_option: Some(o.into()),
        ..ParseOptions::default()
    };
    let large = parse_with(&text, &with("large")).unwrap().vm;
    assert_eq!((large.vcpus, large.memory_mib), (8, 4096));
    assert_eq!(large.disks[1].capacity_bytes, Some(50 << 30));
    let minimal = parse_with(&text, &with("minimal")).unwrap().vm;
    assert_eq!((minimal.vcpus, minimal.memory_mib), (1, 512));
    assert_eq!(
        minimal.disks.len(),
        1,
        "the log disk is not part of minimal"
    );
}

#[test]
fn an_unknown_deployment_option_lists_the_valid_ones() {
    let text = envelope(OPTIONS, &sized_items(), &sized_product());
    let opts = ParseOptions {
        deployment_option: Some("huge".into()),
        ..ParseOptions::default()
    };
    let err = parse_with(&text, &opts).unwrap_err().to_string();
    assert!(
        err.contains("\"huge\"") && err.contains("minimal, normal, large"),
        "{err}"
    );
    // An OVF without options says so.
    let err = parse_with(&envelope("", "", ""), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no DeploymentOptionSection"), "{err}");
}

#[test]
fn without_a_default_the_first_option_is_used() {
    let text =
        envelope(OPTIONS, &sized_items(), &sized_product()).replace(r#" ovf:default="true""#, "");
    assert_eq!(parse(&text).unwrap().deployment.unwrap().chosen, "minimal");
}

// As vSphere writes it after the hardware (e.g. Bitnami's LAMP appliance OVA, a vSphere
// export): the boot disk by the InstanceID of its item.
#[test]
fn the_boot_order_section_names_the_boot_disk() {
    let boot = r#"<vmw:BootOrderSection vmw:instanceId="12" vmw:type="disk"><Info>Virtual hardware device boot order</Info></vmw:BootOrderSection>"#;
    let props = product(r#"<Property ovf:key="disk.size" ovf:value="1"/>"#);
    let text = envelope(DISKS, &three_disks(), &format!("{boot}{props}"));
    assert_eq!(
        parse(&text).unwrap().vm.boot_disk.as_deref(),
        Some("scsi0:2")
    );
    // A CD-ROM first in the order is not a disk; no section leaves the default.
    let cdrom = boot.replace("\"disk\"", "\"cdrom\"");
    let text = envelope(DISKS, &three_disks(), &format!("{cdrom}{props}"));
    assert_eq!(parse(&text).unwrap().vm.boot_disk, None);
}

// VirtualBox's OVF 2.0 export shape: EthernetPortItem/StorageItem with epasd/sasd
// namespaces written with a `.xsd` suffix, captions instead of element names.
#[test]
fn ovf_2_storage_and_ethernet_port_items_read_like_items() {
    let text = r#"<?xml version="1.0"?>
<Envelope ovf:version="2.0" xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd"
    xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData.xsd">
  <References><File ovf:id="file1" ovf:href="box-disk001.vmdk"/></References>
  <DiskSection><Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="42949672960" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="box">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96"><Info>The kind of installed guest operating system</Info><Description>Debian_64</Description></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <Item><rasd:Caption>2 virtual CPU</rasd:Caption><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:Caption>sataController0</rasd:Caption><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <EthernetPortItem><epasd:AutomaticAllocation>true</epasd:AutomaticAllocation><epasd:Caption>Ethernet adapter on 'NAT'</epasd:Caption><epasd:Connection>NAT</epasd:Connection><epasd:InstanceID>5</epasd:InstanceID><epasd:ResourceSubType>E1000</epasd:ResourceSubType><epasd:ResourceType>10</epasd:ResourceType></EthernetPortItem>
      <StorageItem><sasd:AddressOnParent>0</sasd:AddressOnParent><sasd:Caption>disk1</sasd:Caption><sasd:HostResource>/disk/vmdisk1</sasd:HostResource><sasd:InstanceID>7</sasd:InstanceID><sasd:Parent>3</sasd:Parent><sasd:ResourceType>17</sasd:ResourceType></StorageItem>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;
    let vm = parse(text).unwrap().vm;
    assert_eq!((vm.vcpus, vm.memory_mib), (2, 1024));
    assert_eq!(vm.disks.len(), 1);
    assert_eq!(vm.disks[0].slot(), "sata0:0");
    assert_eq!(vm.disks[0].file.as_deref(), Some("box-disk001.vmdk"));
    assert_eq!(vm.nics.len(), 1);
    assert_eq!(vm.nics[0].model, "e1000");
    assert_eq!(vm.nics[0].network.as_deref(), Some("NAT"));
}

#[test]
fn gzip_compression_is_recorded_and_others_are_refused() {
    let refs = r#"<References><File ovf:href="d.vmdk.gz" ovf:id="f" ovf:size="100" ovf:compression="gzip"/></References>"#;
    let pkg = parse(&envelope(refs, "", "")).unwrap();
    assert_eq!(pkg.files[0].compression, Compression::Gzip);
    let bad = refs.replace("gzip", "bzip2");
    let err = parse(&envelope(&bad, "", "")).unwrap_err();
    assert!(err.to_string().contains("bzip2"), "{err}");
}

// Cisco ASAv's OVF, as quoted in Apache CloudStack's OVFHelperTest (trimmed to what matters
// here): three throughput options without a default, CPU and memory items for several of
// them at once, a day-0 ISO on a CD-ROM through `ovf:/file/`, vmx-08,vmx-09 hardware.
const ASAV_HW: &str = r#"
      <Item ovf:configuration="ASAv5 ASAv10"><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>1 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:Limit>5000</rasd:Limit><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="ASAv30"><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>4 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:Limit>20000</rasd:Limit><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="ASAv5 ASAv10"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="ASAv30"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>8192</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>IDE 0</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>CD/DVD Drive</rasd:ElementName><rasd:HostResource>ovf:/file/file3</rasd:HostResource><rasd:InstanceID>18</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:Connection>Management0-0</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>7</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>Hard disk 2</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:InstanceID>8</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>"#;

const ASAV_SECTIONS: &str = r#"
  <References><File ovf:href="asav-disk1.vmdk" ovf:id="file1"/><File ovf:href="day0.iso" ovf:id="file3"/></References>
  <DiskSection><Info>Virtual disk information</Info>
    <Disk ovf:capacity="8192" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1"/>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk2"/>
  </DiskSection>
  <DeploymentOptionSection>
    <Info>Deployment Configuration information</Info>
    <Configuration ovf:id="ASAv5"><Label>100 Mbps (ASAv5)</Label></Configuration>
    <Configuration ovf:id="ASAv10"><Label>1 Gbps (ASAv10)</Label></Configuration>
    <Configuration ovf:id="ASAv30"><Label>2 Gbps (ASAv30)</Label></Configuration>
  </DeploymentOptionSection>"#;

#[test]
fn a_cisco_asav_shaped_appliance_reads_per_option_with_its_iso_listed() {
    let text = envelope(ASAV_SECTIONS, ASAV_HW, "");
    let pkg = parse(&text).unwrap();
    assert_eq!(
        pkg.deployment.unwrap().chosen,
        "ASAv5",
        "no default: the first"
    );
    let vm = pkg.vm;
    assert_eq!((vm.vcpus, vm.memory_mib), (1, 2048));
    assert_eq!(
        vm.disks
            .iter()
            .map(|d| (d.file.as_deref(), d.capacity_bytes))
            .collect::<Vec<_>>(),
        [
            (Some("asav-disk1.vmdk"), Some(8 << 30)),
            (None, Some(16 << 30))
        ]
    );
    assert_eq!(vm.devices[0].kind, DeviceKind::Cdrom);
    let opts = ParseOptions {
        deployment_option: Some("ASAv30".into()),
        ..ParseOptions::default()
    };
    let vm = parse_with(&text, &opts).unwrap().vm;
    assert_eq!((vm.vcpus, vm.memory_mib), (4, 8192));
}
