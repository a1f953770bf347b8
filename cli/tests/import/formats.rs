//! OVF descriptors of several hardware versions, an OVA, and a VMX set: what the manifest
//! says, and that it validates.

use std::collections::BTreeMap;
use std::process::Command;

use crate::fixtures::*;
use crate::schema::validated;
use ironvisor_crds::vm::{DiskBus, Firmware, NicModel};
use ivctl::import::manifest::NetworkTarget;
use ivctl::import::report::Status;

// (automated, manual, percent) per fixture; docs/migration.md shows the same table.
const STEPS_VMX07: (usize, usize, u32) = (7, 4, 63);
const STEPS_VMX13: (usize, usize, u32) = (10, 3, 76);
const STEPS_VMX19: (usize, usize, u32) = (13, 4, 76);
const STEPS_OVA: (usize, usize, u32) = (8, 4, 66);
const STEPS_VMX_SET: (usize, usize, u32) = (9, 3, 75);
const STEPS_VMX_SNAPSHOT: (usize, usize, u32) = (9, 4, 69);

#[test]
fn a_vmx_07_ide_bios_vm_with_e1000_maps_to_sata_and_virtio() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_disk(dir.path(), "d.raw", 2, 7);
    vmdk_from_raw(
        &raw,
        &dir.path().join("old-disk1.vmdk"),
        "streamOptimized",
        "ide",
    );
    let mut spec = OvfSpec::simple(vec![disk("old-disk1.vmdk", 2 << 20, "ide", 0)]);
    spec.name = "Old Server 2008";
    spec.hw = "vmx-07";
    spec.os_type = "rhel5Guest";
    spec.vcpus = 1;
    spec.memory_mib = 512;
    spec.nics = vec![OvfNic {
        model: "E1000",
        network: "VM Network",
        mac: Some("00:50:56:a1:b2:c3"),
    }];
    std::fs::write(dir.path().join("old.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    let report = import(&request(&dir.path().join("old.ovf"), &out)).unwrap();
    assert_eq!(steps("vmx-07", &report), STEPS_VMX07);
    assert_eq!(report.vm.name, "old-server-2008");
    assert_eq!(report.vm.hardware_version.as_deref(), Some("vmx-07"));
    let vm = validated(&out.join("old-server-2008/old-server-2008.yaml"));
    assert_eq!(vm.spec.firmware, Some(Firmware::Bios));
    assert_eq!(vm.spec.memory.size.0, "512Mi");
    assert_eq!(vm.spec.disks[0].bus, DiskBus::Sata);
    assert_eq!(vm.spec.disks[0].boot_order, Some(1));
    assert_eq!(vm.spec.networks[0].model, NicModel::Virtio);
    assert_eq!(
        vm.spec.networks[0].mac_address, None,
        "MACs are kept only with --keep-mac"
    );
    assert_eq!(
        vm.spec.networks[0].network.as_ref().unwrap().name,
        "default"
    );
    assert!(report.findings.iter().any(|f| f.id == "unmapped-network"));
    assert_qcow2_equals(
        &out.join("old-server-2008/old-server-2008-ide0-0.qcow2"),
        &std::fs::read(&raw).unwrap(),
    );
}

#[test]
fn a_vmx_13_two_disk_vm_with_vmxnet3_and_e1000_on_two_networks_maps_every_device() {
    let dir = tempfile::tempdir().unwrap();
    let raw0 = raw_disk(dir.path(), "a.raw", 3, 13);
    let raw1 = raw_disk(dir.path(), "b.raw", 2, 14);
    vmdk_from_raw(
        &raw0,
        &dir.path().join("app-disk1.vmdk"),
        "streamOptimized",
        "lsilogic",
    );
    vmdk_from_raw(
        &raw1,
        &dir.path().join("app-disk2.vmdk"),
        "streamOptimized",
        "lsilogic",
    );
    let mut spec = OvfSpec::simple(vec![
        disk("app-disk1.vmdk", 3 << 20, "lsilogic", 0),
        disk("app-disk2.vmdk", 2 << 20, "lsilogic", 1),
    ]);
    spec.name = "app";
    spec.vcpus = 4;
    spec.cores = 2;
    spec.memory_mib = 4096;
    spec.nics = vec![
        OvfNic {
            model: "VmxNet3",
            network: "Production",
            mac: Some("00:50:56:00:00:01"),
        },
        OvfNic {
            model: "E1000",
            network: "Backup",
            mac: Some("00:50:56:00:00:02"),
        },
    ];
    std::fs::write(dir.path().join("app.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    let mut req = request(&dir.path().join("app.ovf"), &out);
    req.mapping.network_map = BTreeMap::from([
        (
            "Production".to_owned(),
            NetworkTarget::Bridge("br-prod".into()),
        ),
        ("Backup".to_owned(), NetworkTarget::Network("backup".into())),
    ]);
    req.mapping.keep_mac = true;
    req.mapping.keep_nic_model = true;
    let report = import(&req).unwrap();
    assert_eq!(steps("vmx-13", &report), STEPS_VMX13);
    assert!(
        !report.findings.iter().any(|f| f.id == "unmapped-network"),
        "{:?}",
        report.findings
    );
    let vm = validated(&out.join("app/app.yaml"));
    assert_eq!(
        (vm.spec.cpu.sockets, vm.spec.cpu.cores, vm.spec.cpu.threads),
        (2, 2, 1)
    );
    assert_eq!(vm.spec.memory.size.0, "4Gi");
    let names: Vec<&str> = vm.spec.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["scsi0-0", "scsi0-1"]);
    assert!(vm.spec.disks.iter().all(|d| d.bus == DiskBus::Scsi));
    assert_eq!(vm.spec.disks[1].boot_order, None);
    let n = &vm.spec.networks;
    assert_eq!(n[0].bridge.as_ref().unwrap().name, "br-prod");
    assert_eq!(n[1].network.as_ref().unwrap().name, "backup");
    assert_eq!(n[0].mac_address.as_deref(), Some("00:50:56:00:00:01"));
    assert_eq!(
        (n[0].model, n[1].model),
        (NicModel::E1000e, NicModel::E1000e)
    );
    assert_qcow2_equals(
        &out.join("app/app-scsi0-0.qcow2"),
        &std::fs::read(&raw0).unwrap(),
    );
    assert_qcow2_equals(
        &out.join("app/app-scsi0-1.qcow2"),
        &std::fs::read(&raw1).unwrap(),
    );
    assert_eq!(report.timings.len(), 2);
}

#[test]
fn a_vmx_19_efi_secure_boot_vm_on_pvscsi_sata_and_nvme_with_three_networks() {
    let dir = tempfile::tempdir().unwrap();
    let mut disks = Vec::new();
    let mut raws = Vec::new();
    for (i, (ctl, adapter)) in [
        ("VirtualSCSI", "lsilogic"),
        ("sata", "ide"),
        ("nvme", "lsilogic"),
    ]
    .into_iter()
    .enumerate()
    {
        let raw = raw_disk(dir.path(), &format!("{i}.raw"), 1, 19 + i as u64);
        vmdk_from_raw(
            &raw,
            &dir.path().join(format!("new-{i}.vmdk")),
            "monolithicSparse",
            adapter,
        );
        disks.push(disk(&format!("new-{i}.vmdk"), 1 << 20, ctl, 0));
        raws.push(raw);
    }
    let mut spec = OvfSpec::simple(disks);
    spec.name = "new";
    spec.hw = "vmx-19";
    spec.os_type = "windows2019srvNext_64Guest";
    spec.efi = true;
    spec.secure_boot = true;
    spec.nics = vec![
        OvfNic {
            model: "VmxNet3",
            network: "Front",
            mac: None,
        },
        OvfNic {
            model: "VmxNet3",
            network: "Back",
            mac: None,
        },
        OvfNic {
            model: "E1000e",
            network: "Mgmt",
            mac: None,
        },
    ];
    std::fs::write(dir.path().join("new.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    let mut req = request(&dir.path().join("new.ovf"), &out);
    req.mapping.network_map = BTreeMap::from([
        ("Front".to_owned(), NetworkTarget::Network("front".into())),
        ("Back".to_owned(), NetworkTarget::Network("back".into())),
        ("Mgmt".to_owned(), NetworkTarget::User),
    ]);
    let report = import(&req).unwrap();
    assert_eq!(steps("vmx-19", &report), STEPS_VMX19);
    let ids: Vec<&str> = report.findings.iter().map(|f| f.id.as_str()).collect();
    for id in [
        "efi-secure-boot",
        "windows-virtio-drivers",
        "vmware-tools",
        "nvme-disk",
        "nic-model-changed",
        "unverified-files",
    ] {
        assert!(ids.contains(&id), "{id} missing in {ids:?}");
    }
    let vm = validated(&out.join("new/new.yaml"));
    assert_eq!(
        (vm.spec.firmware, vm.spec.secure_boot),
        (Some(Firmware::Uefi), Some(true))
    );
    let buses: Vec<DiskBus> = vm.spec.disks.iter().map(|d| d.bus).collect();
    assert_eq!(buses, [DiskBus::Scsi, DiskBus::Sata, DiskBus::Virtio]);
    assert!(vm.spec.networks[2].user.is_some());
    assert!(vm.spec.networks.iter().all(|n| n.model == NicModel::Virtio));
    for (i, raw) in raws.iter().enumerate() {
        let name = &vm.spec.disks[i].name;
        assert_qcow2_equals(
            &out.join(format!("new/new-{name}.qcow2")),
            &std::fs::read(raw).unwrap(),
        );
    }
    // Windows + virtio drivers, VMware Tools, and the copy/apply steps are left to a person.
    assert!(report.steps.manual.len() >= 4, "{:?}", report.steps.manual);
    assert!(report.steps.automated_percent > 50 && report.steps.automated_percent < 100);
}

#[test]
fn an_ova_with_a_sha256_manifest_is_verified_and_imported() {
    for sha1 in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let raw = raw_disk(dir.path(), "d.raw", 2, 42);
        vmdk_from_raw(
            &raw,
            &src.join("web-disk1.vmdk"),
            "streamOptimized",
            "lsilogic",
        );
        let mut spec = OvfSpec::simple(vec![disk("web-disk1.vmdk", 2 << 20, "lsilogic", 0)]);
        spec.name = "web";
        std::fs::write(src.join("web.ovf"), ovf_text(&spec)).unwrap();
        write_manifest(&src, "web.mf", &["web.ovf", "web-disk1.vmdk"], sha1);
        let ova = dir.path().join("web.ova");
        write_ova(&src, &["web.ovf", "web.mf", "web-disk1.vmdk"], &ova);
        let out = dir.path().join("out");
        let report = import(&request(&ova, &out)).unwrap();
        assert_eq!(steps("ova", &report), STEPS_OVA);
        assert_eq!(report.format, "ova");
        assert!(
            report
                .steps
                .automated
                .iter()
                .any(|s| s == "verify 2 checksum(s) from the manifest"),
            "{:?}",
            report.steps
        );
        assert!(!report.findings.iter().any(|f| f.id == "unverified-files"));
        assert_eq!(entries(&out), vec!["web"], "the unpacked OVA is removed");
        validated(&out.join("web/web.yaml"));
        assert_qcow2_equals(
            &out.join("web/web-scsi0-0.qcow2"),
            &std::fs::read(&raw).unwrap(),
        );
    }
}

fn vmx_set(dir: &std::path::Path, extra: &str) -> (Vec<u8>, Vec<u8>) {
    let raw0 = raw_disk(dir, "a.raw", 2, 1);
    let raw1 = raw_disk(dir, "b.raw", 1, 2);
    vmdk_from_raw(&raw0, &dir.join("db.vmdk"), "monolithicSparse", "lsilogic");
    vmdk_from_raw(&raw1, &dir.join("db_1.vmdk"), "monolithicFlat", "lsilogic");
    let vmx = format!(
        r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "14"
displayName = "db01"
guestOS = "debian10-64"
numvcpus = "2"
memsize = "2048"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "db.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "db_1.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0c:29:11:22:33"
{extra}"#
    );
    std::fs::write(dir.join("db01.vmx"), vmx).unwrap();
    (std::fs::read(raw0).unwrap(), std::fs::read(raw1).unwrap())
}

#[test]
fn a_vmx_set_with_sparse_and_flat_disks_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = vmx_set(dir.path(), "");
    let out = dir.path().join("out");
    let mut req = request(&dir.path().join("db01.vmx"), &out);
    req.mapping.keep_mac = true;
    req.mapping.scsi_bus = ivctl::import::manifest::ScsiBus::Virtio;
    let report = import(&req).unwrap();
    assert_eq!(steps("vmx set", &report), STEPS_VMX_SET);
    assert_eq!(report.format, "vmx");
    assert_eq!(report.vm.hardware_version.as_deref(), Some("vmx-14"));
    let vm = validated(&out.join("db01/db01.yaml"));
    assert!(vm.spec.disks.iter().all(|d| d.bus == DiskBus::Virtio));
    assert_eq!(
        vm.spec.networks[0].mac_address.as_deref(),
        Some("00:0c:29:11:22:33")
    );
    assert_qcow2_equals(&out.join("db01/db01-scsi0-0.qcow2"), &a);
    assert_qcow2_equals(&out.join("db01/db01-scsi0-1.qcow2"), &b);
}

#[test]
fn the_disk_bios_hdd_order_names_boots_first() {
    let dir = tempfile::tempdir().unwrap();
    vmx_set(
        dir.path(),
        "bios.bootOrder = \"hdd,cdrom\"\nbios.hddOrder = \"scsi0:1\"\n",
    );
    let out = dir.path().join("out");
    import(&request(&dir.path().join("db01.vmx"), &out)).unwrap();
    let vm = validated(&out.join("db01/db01.yaml"));
    let boot: Vec<(&str, Option<u32>)> = vm
        .spec
        .disks
        .iter()
        .map(|d| (d.name.as_str(), d.boot_order))
        .collect();
    assert_eq!(boot, [("scsi0-0", None), ("scsi0-1", Some(1))]);
}

#[test]
fn a_vmx_with_a_snapshot_is_blocked_and_with_force_imports_the_current_state() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = vmx_set(dir.path(), "");
    // Take a "snapshot": the VM now runs on a delta over db.vmdk, with new data in it.
    run_ok(Command::new(QEMU_IMG).current_dir(dir.path()).args([
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "db.vmdk",
        "-F",
        "vmdk",
        "db-000001.vmdk",
    ]));
    run_ok(Command::new("qemu-io").current_dir(dir.path()).args([
        "-f",
        "vmdk",
        "-c",
        "write -P 0xab 0 64k",
        "db-000001.vmdk",
    ]));
    let vmx = std::fs::read_to_string(dir.path().join("db01.vmx"))
        .unwrap()
        .replace("\"db.vmdk\"", "\"db-000001.vmdk\"");
    std::fs::write(dir.path().join("db01.vmx"), vmx).unwrap();
    std::fs::write(
        dir.path().join("db01.vmsd"),
        ".encoding = \"UTF-8\"\nsnapshot.numSnapshots = \"1\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let report = import(&request(&dir.path().join("db01.vmx"), &out)).unwrap();
    assert_eq!(report.status, Status::Blocked);
    let snap = report
        .findings
        .iter()
        .find(|f| f.id == "snapshots-present")
        .unwrap();
    assert!(
        snap.detail.contains("scsi0:0 (1 delta level(s))") && snap.detail.contains("1 snapshot(s)"),
        "{}",
        snap.detail
    );
    assert!(
        entries(&out).is_empty(),
        "a blocked import writes nothing: {:?}",
        entries(&out)
    );

    let mut req = request(&dir.path().join("db01.vmx"), &out);
    req.force = true;
    let report = import(&req).unwrap();
    assert_eq!(
        steps("vmx with snapshot, forced", &report),
        STEPS_VMX_SNAPSHOT
    );
    assert_eq!(report.status, Status::Imported);
    let mut expected = a.clone();
    expected[..65536].fill(0xab);
    assert_qcow2_equals(&out.join("db01/db01-scsi0-0.qcow2"), &expected);
}

#[test]
fn raw_device_mappings_block_and_with_force_are_left_out_of_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"scsi0:2.present = "TRUE"
scsi0:2.fileName = "lun.vmdk"
scsi0:2.deviceType = "rawDisk"
scsi0:3.present = "TRUE"
scsi0:3.fileName = "quorum.vmdk"
"#;
    let (a, b) = vmx_set(dir.path(), extra);
    std::fs::write(
        dir.path().join("quorum.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfsPassthroughRawDeviceMap\"\nRW 2048 VMFSRDM \"quorum-rdmp.vmdk\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let report = import(&request(&dir.path().join("db01.vmx"), &out)).unwrap();
    assert_eq!(report.status, Status::Blocked);
    let rdm = report
        .findings
        .iter()
        .find(|f| f.id == "raw-device-mapping")
        .unwrap();
    assert_eq!(rdm.detail, "scsi0:2, scsi0:3");

    let mut req = request(&dir.path().join("db01.vmx"), &out);
    req.force = true;
    let report = import(&req).unwrap();
    assert_eq!(report.status, Status::Imported);
    let skipped: Vec<&str> = report
        .disks
        .iter()
        .filter(|d| d.skipped.is_some())
        .map(|d| d.slot.as_str())
        .collect();
    assert_eq!(skipped, ["scsi0:2", "scsi0:3"]);
    let vm = validated(&out.join("db01/db01.yaml"));
    let names: Vec<&str> = vm.spec.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["scsi0-0", "scsi0-1"]);
    assert_qcow2_equals(&out.join("db01/db01-scsi0-0.qcow2"), &a);
    assert_qcow2_equals(&out.join("db01/db01-scsi0-1.qcow2"), &b);
    assert_eq!(
        entries(&out.join("db01")).len(),
        3,
        "two images and the manifest"
    );
}
