//! Fixtures made at test time: raw disks with known bytes, VMDKs of every subformat made by
//! qemu-img from them, OVF/OVA/VMX bundles around them, and the checks on the results.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ironvisor_crds::vm::RunStrategy;
use ivctl::import::convert::Converter;
use ivctl::import::manifest::{MappingOptions, ScsiBus};
use ivctl::import::report::Report;
use ivctl::import::run::{ImportError, QuotaInfo, Request};
use sha2::Digest;

pub const QEMU_IMG: &str = "qemu-img";

pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw disk of `mib` MiB: pseudo-random bytes (seeded), a zero run in the middle, and a
/// marker at the very end, so every region and the last sector are checked.
pub fn raw_disk(dir: &Path, name: &str, mib: usize, seed: u64) -> PathBuf {
    let len = mib << 20;
    let mut data = vec![0u8; len];
    let mut x = seed | 1;
    for (i, chunk) in data.chunks_mut(8).enumerate() {
        // Leave the second quarter zero: sparse formats must keep zeros as zeros.
        if i * 8 >= len / 4 && i * 8 < len / 2 {
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data[len - 16..].copy_from_slice(b"END-OF-THE-DISK!");
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    path
}

/// Convert a raw file to a VMDK of `subformat`.
pub fn vmdk_from_raw(raw: &Path, dest: &Path, subformat: &str, adapter: &str) {
    run_ok(
        Command::new(QEMU_IMG)
            .args(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o"])
            .arg(format!("subformat={subformat},adapter_type={adapter}"))
            .arg(raw)
            .arg(dest),
    );
}

/// The image's content as raw bytes (through qemu-img, so any format works).
pub fn image_bytes(image: &Path, format: &str) -> Vec<u8> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    run_ok(
        Command::new(QEMU_IMG)
            .args(["convert", "-q", "-f", format, "-O", "raw"])
            .arg(image)
            .arg(tmp.path()),
    );
    std::fs::read(tmp.path()).unwrap()
}

/// Assert an image is qcow2 and reads byte for byte like `raw`.
pub fn assert_qcow2_equals(image: &Path, raw: &[u8]) {
    let info = Command::new(QEMU_IMG)
        .args(["info", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{}", image.display());
    let got = image_bytes(image, "qcow2");
    assert_eq!(got.len(), raw.len(), "{}: size differs", image.display());
    assert!(
        got == raw,
        "{}: content differs from the source",
        image.display()
    );
}

/// One disk in an OVF.
#[derive(Clone)]
pub struct OvfDisk {
    pub file: String,
    pub capacity: u64,
    /// lsilogic, VirtualSCSI, lsilogicsas, sata, ide, nvme
    pub controller: &'static str,
    pub unit: u32,
    pub item_config: &'static str,
}

/// One NIC in an OVF.
#[derive(Clone)]
pub struct OvfNic {
    pub model: &'static str,
    pub network: &'static str,
    pub mac: Option<&'static str>,
}

/// What an OVF says.
#[derive(Clone)]
pub struct OvfSpec {
    pub name: &'static str,
    pub hw: &'static str,
    pub os_type: &'static str,
    pub vcpus: u32,
    pub cores: u32,
    pub memory_mib: u64,
    pub efi: bool,
    pub secure_boot: bool,
    pub disks: Vec<OvfDisk>,
    pub nics: Vec<OvfNic>,
    pub extra_items: &'static str,
}

impl OvfSpec {
    pub fn simple(disks: Vec<OvfDisk>) -> Self {
        Self {
            name: "simple",
            hw: "vmx-13",
            os_type: "ubuntu64Guest",
            vcpus: 2,
            cores: 1,
            memory_mib: 1024,
            efi: false,
            secure_boot: false,
            disks,
            nics: vec![OvfNic {
                model: "VmxNet3",
                network: "VM Network",
                mac: None,
            }],
            extra_items: "",
        }
    }
}

pub fn disk(file: &str, capacity: u64, controller: &'static str, unit: u32) -> OvfDisk {
    OvfDisk {
        file: file.into(),
        capacity,
        controller,
        unit,
        item_config: "",
    }
}

/// Render an OVF 1.x envelope the way vSphere exports one (prefixes as ovftool writes them).
pub fn ovf_text(s: &OvfSpec) -> String {
    let mut refs = String::new();
    let mut disks = String::new();
    let mut items = String::new();
    let mut id = 10;
    let mut controllers: Vec<(&str, u32)> = Vec::new();
    for (i, d) in s.disks.iter().enumerate() {
        refs.push_str(&format!(
            "    <File ovf:href=\"{}\" ovf:id=\"file{i}\"/>\n",
            d.file
        ));
        disks.push_str(&format!(
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"file{i}\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n",
            d.capacity
        ));
        if !controllers.iter().any(|(c, _)| *c == d.controller) {
            id += 1;
            controllers.push((d.controller, id));
            let (rtype, sub) = match d.controller {
                "ide" => (5, ""),
                "sata" => (20, "vmware.sata.ahci"),
                "nvme" => (20, "vmware.nvme.controller"),
                other => (6, other),
            };
            items.push_str(&format!(
                "      <Item>\n        <rasd:Address>0</rasd:Address>\n        <rasd:ElementName>Controller {id}</rasd:ElementName>\n        <rasd:InstanceID>{id}</rasd:InstanceID>\n        <rasd:ResourceSubType>{sub}</rasd:ResourceSubType>\n        <rasd:ResourceType>{rtype}</rasd:ResourceType>\n      </Item>\n"
            ));
        }
    }
    for (i, d) in s.disks.iter().enumerate() {
        let parent = controllers
            .iter()
            .find(|(c, _)| *c == d.controller)
            .map(|(_, id)| *id)
            .unwrap();
        id += 1;
        items.push_str(&format!(
            "      <Item>\n        <rasd:AddressOnParent>{}</rasd:AddressOnParent>\n        <rasd:ElementName>Hard disk {i}</rasd:ElementName>\n        <rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>\n        <rasd:InstanceID>{id}</rasd:InstanceID>\n        <rasd:Parent>{parent}</rasd:Parent>\n        <rasd:ResourceType>17</rasd:ResourceType>\n{}      </Item>\n",
            d.unit, d.item_config
        ));
    }
    let mut networks = Vec::new();
    for (i, n) in s.nics.iter().enumerate() {
        if !networks.contains(&n.network) {
            networks.push(n.network);
        }
        id += 1;
        let mac = n
            .mac
            .map(|m| format!("        <rasd:Address>{m}</rasd:Address>\n"))
            .unwrap_or_default();
        items.push_str(&format!(
            "      <Item>\n{mac}        <rasd:AddressOnParent>{}</rasd:AddressOnParent>\n        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>\n        <rasd:Connection>{}</rasd:Connection>\n        <rasd:ElementName>Network adapter {}</rasd:ElementName>\n        <rasd:InstanceID>{id}</rasd:InstanceID>\n        <rasd:ResourceSubType>{}</rasd:ResourceSubType>\n        <rasd:ResourceType>10</rasd:ResourceType>\n      </Item>\n",
            7 + i, n.network, i + 1, n.model
        ));
    }
    let nets: String = networks
        .iter()
        .map(|n| format!("    <Network ovf:name=\"{n}\">\n      <Description>The {n} network</Description>\n    </Network>\n"))
        .collect();
    let mut config = String::new();
    if s.efi {
        config.push_str(
            "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n",
        );
    }
    if s.secure_boot {
        config.push_str("      <vmw:Config ovf:required=\"false\" vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"true\"/>\n");
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by the ivctl tests-->
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
{refs}  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disks}  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
{nets}  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="{os}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>{hw}</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{vcpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{vcpus}</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">{cores}</vmw:CoresPerSocket>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
{items}{extra}{config}      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        name = s.name,
        os = s.os_type,
        hw = s.hw,
        vcpus = s.vcpus,
        cores = s.cores,
        mem = s.memory_mib,
        extra = s.extra_items,
    )
}

/// Write `name.mf` with SHA256 (or SHA1) lines for `files` in `dir`.
pub fn write_manifest(dir: &Path, name: &str, files: &[&str], sha1: bool) -> PathBuf {
    let mut text = String::new();
    for f in files {
        let data = std::fs::read(dir.join(f)).unwrap();
        if sha1 {
            text.push_str(&format!(
                "SHA1({f})= {}\n",
                hex::encode(sha1::Sha1::digest(&data))
            ));
        } else {
            text.push_str(&format!(
                "SHA256({f})= {}\n",
                hex::encode(sha2::Sha256::digest(&data))
            ));
        }
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Tar `files` (from `dir`, in order) into `ova`.
pub fn write_ova(dir: &Path, files: &[&str], ova: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(ova).unwrap());
    for f in files {
        b.append_path_with_name(dir.join(f), f).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

/// A request with test defaults: offline with a generous quota, no progress bars.
pub fn request(source: &Path, out: &Path) -> Request {
    Request {
        source: source.to_owned(),
        name: None,
        mapping: MappingOptions {
            name: String::new(),
            namespace: "tenant-a".into(),
            images_dir: "/var/lib/ironvisor/images".into(),
            network_map: Default::default(),
            keep_nic_model: false,
            keep_mac: false,
            scsi_bus: ScsiBus::Scsi,
            run_strategy: RunStrategy::Halted,
            no_tpm: None,
        },
        out: out.to_owned(),
        force: false,
        dry_run: false,
        quota: QuotaInfo::Remaining {
            bytes: 1 << 40,
            source: "option",
        },
        converter: Converter {
            progress: false,
            ..Converter::default()
        },
        limits: Default::default(),
        ovf: Default::default(),
        vapp_cloud_init: false,
        server_check: None,
    }
}

pub fn import(req: &Request) -> Result<Report, ImportError> {
    ivctl::import::run::run(req)
}

/// The entries of a directory (names), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The error and all its causes as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The report's step counts (automated, manual, percent); printed for the docs' table.
pub fn steps(fixture: &str, report: &Report) -> (usize, usize, u32) {
    let s = &report.steps;
    let t = (s.automated.len(), s.manual.len(), s.automated_percent);
    println!(
        "STEPS {fixture}: {} automated, {} manual, {}%  manual={:?}",
        t.0, t.1, t.2, s.manual
    );
    t
}
