//! Domain XML for each spec feature, and escaping of hostile strings.

use super::*;
use ironvisor_crds::vm::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::path::Path;

fn spec() -> VirtualMachineSpec {
    serde_json::from_value(serde_json::json!({"memory": {"size": "128Mi"}})).unwrap()
}

fn owner() -> Owner {
    Owner {
        node: String::new(),
        uid: "u-1".into(),
        namespace: "ns".into(),
        name: "vm".into(),
        generation: 2,
    }
}

fn plan_of(spec: &VirtualMachineSpec, domain_type: DomainType) -> Result<DomainPlan, PlanError> {
    build_plan(&PlanInput {
        owner: owner(),
        spec,
        domain_type,
        vm_dir: Path::new("/state/vms/u-1"),
        kernel: Some("/images/vmlinuz".into()),
        initrd: Some("/images/initrd.gz".into()),
    })
}

fn xml_of(spec: &VirtualMachineSpec) -> String {
    render(&plan_of(spec, DomainType::Qemu).unwrap()).xml
}

fn disk(name: &str, bus: DiskBus) -> Disk {
    Disk {
        name: name.into(),
        bus,
        boot_order: None,
        read_only: false,
        size: Some(Quantity("1Gi".into())),
        source: DiskSource {
            blank: Some(BlankSource {}),
            ..Default::default()
        },
    }
}

fn nic(name: &str) -> Network {
    Network {
        name: name.into(),
        model: NicModel::Virtio,
        mac_address: None,
        user: None,
        network: None,
        bridge: None,
    }
}

#[test]
fn a_minimal_vm_renders_a_complete_tcg_domain() {
    let xml = xml_of(&spec());
    assert!(xml.starts_with("<domain type=\"qemu\">"), "{xml}");
    assert!(xml.contains("<memory unit=\"KiB\">131072</memory>"));
    assert!(xml.contains("<vcpu placement=\"static\">1</vcpu>"));
    assert!(xml.contains("machine=\"q35\""));
    assert!(
        xml.contains("<model fallback=\"allow\">qemu64</model>"),
        "TCG uses qemu64: {xml}"
    );
    assert!(xml.contains("<log file=\"/state/vms/u-1/console.log\" append=\"on\"/>"));
    assert!(xml.contains("<console type=\"pty\">"));
    assert!(!xml.contains("qemu:commandline"));
}

#[test]
fn the_uuid_of_an_existing_domain_is_written_but_not_hashed() {
    let mut plan = plan_of(&spec(), DomainType::Qemu).unwrap();
    let without = render(&plan);
    plan.uuid = Some("87fd9463-0d86-4566-b980-798b7898ff2a".into());
    let with = render(&plan);
    assert!(
        with.xml
            .contains("<uuid>87fd9463-0d86-4566-b980-798b7898ff2a</uuid>")
    );
    assert!(!without.xml.contains("<uuid>"));
    assert_eq!(with.config_hash, without.config_hash);
}

#[test]
fn rendering_is_deterministic() {
    let mut s = spec();
    s.disks = vec![disk("a", DiskBus::Virtio), disk("b", DiskBus::Scsi)];
    s.networks = vec![Network {
        user: Some(UserNetwork::default()),
        ..nic("n")
    }];
    assert_eq!(xml_of(&s), xml_of(&s));
}

#[test]
fn metadata_carries_uid_namespace_name_generation_and_hash() {
    let r = render(&plan_of(&spec(), DomainType::Qemu).unwrap());
    let start = r.xml.find("<ironvisor:vm").unwrap();
    let end = start + r.xml[start..].find("/>").unwrap() + 2;
    let m = DomainMetadata::parse(&r.xml[start..end]).unwrap();
    assert_eq!(
        (
            m.uid.as_str(),
            m.namespace.as_str(),
            m.name.as_str(),
            m.generation
        ),
        ("u-1", "ns", "vm", 2)
    );
    assert_eq!(m.config_hash, r.config_hash);
}

#[test]
fn a_new_generation_that_changes_no_hardware_keeps_the_config_hash() {
    let a = plan_of(&spec(), DomainType::Qemu).unwrap();
    let mut b = a.clone();
    b.owner.generation = 9;
    assert_eq!(render(&a).config_hash, render(&b).config_hash);
    let mut s = spec();
    s.memory.size = Quantity("256Mi".into());
    assert_ne!(
        render(&a).config_hash,
        render(&plan_of(&s, DomainType::Qemu).unwrap()).config_hash
    );
}

#[test]
fn kvm_uses_the_requested_cpu_mode_and_topology() {
    let mut s = spec();
    s.cpu = Cpu {
        sockets: 2,
        cores: 3,
        threads: 2,
        model: "host-model".into(),
    };
    let xml = render(&plan_of(&s, DomainType::Kvm).unwrap()).xml;
    assert!(xml.starts_with("<domain type=\"kvm\">"));
    assert!(xml.contains("<vcpu placement=\"static\">12</vcpu>"));
    assert!(xml.contains("<cpu mode=\"host-model\">"));
    assert!(xml.contains("<topology sockets=\"2\" dies=\"1\" cores=\"3\" threads=\"2\"/>"));
    s.cpu.model = "host-passthrough".into();
    assert!(
        render(&plan_of(&s, DomainType::Kvm).unwrap())
            .xml
            .contains("mode=\"host-passthrough\"")
    );
    s.cpu.model = "Skylake-Server".into();
    assert!(
        render(&plan_of(&s, DomainType::Kvm).unwrap())
            .xml
            .contains(">Skylake-Server</model>")
    );
}

#[test]
fn a_cpu_model_with_markup_is_rejected() {
    let mut s = spec();
    s.cpu.model = "x</model><evil/>".into();
    assert!(matches!(
        plan_of(&s, DomainType::Kvm),
        Err(PlanError::CpuModel(_))
    ));
}

#[test]
fn disks_get_buses_targets_readonly_and_boot_order() {
    let mut s = spec();
    let mut root = disk("root", DiskBus::Virtio);
    root.boot_order = Some(1);
    let mut data = disk("data", DiskBus::Sata);
    data.read_only = true;
    s.disks = vec![
        root,
        data,
        disk("scratch", DiskBus::Scsi),
        disk("two", DiskBus::Virtio),
    ];
    let xml = xml_of(&s);
    assert!(xml.contains("<source file=\"/state/vms/u-1/disk-root.qcow2\"/>"));
    assert!(xml.contains("<target dev=\"vda\" bus=\"virtio\"/>"));
    assert!(xml.contains("<target dev=\"sda\" bus=\"sata\"/>"));
    assert!(xml.contains("<target dev=\"sdb\" bus=\"scsi\"/>"));
    assert!(xml.contains("<target dev=\"vdb\" bus=\"virtio\"/>"));
    assert!(xml.contains("<boot order=\"1\"/>"));
    assert_eq!(xml.matches("<readonly/>").count(), 1);
    assert!(
        xml.contains("model=\"virtio-scsi\""),
        "a scsi disk needs a virtio-scsi controller"
    );
}

#[test]
fn no_scsi_controller_without_a_scsi_disk() {
    let mut s = spec();
    s.disks = vec![disk("root", DiskBus::Virtio)];
    assert!(!xml_of(&s).contains("virtio-scsi"));
}

#[test]
fn duplicate_disk_names_and_boot_orders_are_rejected() {
    let mut s = spec();
    s.disks = vec![disk("a", DiskBus::Virtio), disk("a", DiskBus::Sata)];
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::DuplicateName(_))
    ));
    let (mut a, mut b) = (disk("a", DiskBus::Virtio), disk("b", DiskBus::Virtio));
    a.boot_order = Some(1);
    b.boot_order = Some(1);
    s.disks = vec![a, b];
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::DuplicateBootOrder(1))
    ));
}

#[test]
fn a_blank_disk_without_size_is_rejected() {
    let mut s = spec();
    let mut d = disk("a", DiskBus::Virtio);
    d.size = None;
    s.disks = vec![d];
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::DiskSize(_))
    ));
}

#[test]
fn the_cloud_init_seed_is_a_readonly_sata_cdrom() {
    let mut s = spec();
    s.cloud_init = Some(CloudInit {
        user_data: Some("#cloud-config\n".into()),
        ..Default::default()
    });
    let xml = xml_of(&s);
    assert!(xml.contains("device=\"cdrom\""));
    assert!(xml.contains("<source file=\"/state/vms/u-1/seed.iso\"/>"));
    assert!(xml.contains("<driver name=\"qemu\" type=\"raw\"/>"));
}

#[test]
fn direct_kernel_boot_writes_kernel_initrd_and_escaped_cmdline() {
    let mut s = spec();
    s.kernel_boot = Some(KernelBoot {
        kernel: BootFileSource {
            http: None,
            host_path: Some(HostPathSource {
                path: "/images/vmlinuz".into(),
            }),
        },
        initrd: Some(BootFileSource {
            http: None,
            host_path: Some(HostPathSource {
                path: "/images/initrd.gz".into(),
            }),
        }),
        cmdline: Some("console=ttyS0 a=<b>&c".into()),
    });
    let xml = xml_of(&s);
    assert!(xml.contains("<kernel>/images/vmlinuz</kernel>"));
    assert!(xml.contains("<initrd>/images/initrd.gz</initrd>"));
    assert!(
        xml.contains("<cmdline>console=ttyS0 a=&lt;b&gt;&amp;c</cmdline>"),
        "{xml}"
    );
}

#[test]
fn uefi_and_secure_boot_select_firmware_features() {
    let mut s = spec();
    s.firmware = Some(Firmware::Uefi);
    let xml = xml_of(&s);
    assert!(xml.contains("<os firmware=\"efi\">"));
    assert!(xml.contains("<feature enabled=\"no\" name=\"secure-boot\"/>"));
    s.secure_boot = Some(true);
    let xml = xml_of(&s);
    assert!(xml.contains("<feature enabled=\"yes\" name=\"secure-boot\"/>"));
    assert!(xml.contains("<loader secure=\"yes\"/>"));
    assert!(xml.contains("<smm state=\"on\"/>"));
}

#[test]
fn secure_boot_without_uefi_and_kernel_boot_with_uefi_are_rejected() {
    let mut s = spec();
    s.secure_boot = Some(true);
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::Firmware(_))
    ));
    let mut s = spec();
    s.firmware = Some(Firmware::Uefi);
    s.kernel_boot = Some(KernelBoot {
        kernel: BootFileSource {
            http: None,
            host_path: Some(HostPathSource {
                path: "/images/k".into(),
            }),
        },
        initrd: None,
        cmdline: None,
    });
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::Firmware(_))
    ));
}

#[test]
fn user_networking_forwards_ports_on_loopback_only() {
    let mut s = spec();
    s.networks = vec![Network {
        mac_address: Some("52:54:00:AA:bb:cc".into()),
        user: Some(UserNetwork {
            port_forwards: vec![
                PortForward {
                    protocol: Protocol::TCP,
                    host_port: 2222,
                    guest_port: 22,
                },
                PortForward {
                    protocol: Protocol::UDP,
                    host_port: 5353,
                    guest_port: 53,
                },
            ],
        }),
        ..nic("default")
    }];
    let xml = xml_of(&s);
    assert!(xml.contains("xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\""));
    assert!(
        xml.contains(
            "value=\"user,id=ivnet0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:5353-:53\""
        ),
        "{xml}"
    );
    assert!(xml.contains(
        "value=\"virtio-net-pci,netdev=ivnet0,mac=52:54:00:aa:bb:cc,bus=pcie.0,addr=0x1e\""
    ));
    assert!(!xml.contains("0.0.0.0"));
}

#[test]
fn a_host_port_forwarded_twice_is_rejected() {
    let mut s = spec();
    let pf = PortForward {
        protocol: Protocol::TCP,
        host_port: 2222,
        guest_port: 22,
    };
    s.networks = vec![Network {
        user: Some(UserNetwork {
            port_forwards: vec![pf.clone(), pf],
        }),
        ..nic("a")
    }];
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::DuplicateHostPort(2222))
    ));
}

#[test]
fn libvirt_networks_and_bridges_become_interfaces() {
    let mut s = spec();
    s.networks = vec![
        Network {
            network: Some(NamedNetwork {
                name: "default".into(),
            }),
            model: NicModel::E1000e,
            ..nic("a")
        },
        Network {
            bridge: Some(BridgeNetwork { name: "br0".into() }),
            ..nic("b")
        },
    ];
    let xml = xml_of(&s);
    assert!(xml.contains("<interface type=\"network\">"));
    assert!(xml.contains("<source network=\"default\"/>"));
    assert!(xml.contains("<model type=\"e1000e\"/>"));
    assert!(xml.contains("<interface type=\"bridge\">"));
    assert!(xml.contains("<source bridge=\"br0\"/>"));
    assert!(xml.contains(&format!("<mac address=\"{}\"/>", generated_mac("u-1", "a"))));
}

#[test]
fn bridged_and_network_interfaces_carry_the_clean_traffic_filter_and_user_ones_need_none() {
    let mut s = spec();
    s.networks = vec![
        Network {
            bridge: Some(BridgeNetwork { name: "br0".into() }),
            ..nic("a")
        },
        Network {
            network: Some(NamedNetwork {
                name: "default".into(),
            }),
            ..nic("b")
        },
        Network {
            user: Some(UserNetwork::default()),
            ..nic("c")
        },
    ];
    let xml = xml_of(&s);
    let interfaces: Vec<&str> = xml.split("<interface ").skip(1).collect();
    assert_eq!(interfaces.len(), 2, "{xml}");
    for i in interfaces {
        let body = &i[..i.find("</interface>").expect("closed")];
        assert!(
            body.contains("<filterref filter=\"clean-traffic\"/>"),
            "{body}"
        );
    }
    assert_eq!(xml.matches("<filterref").count(), 2);
}

#[test]
fn an_interface_with_two_kinds_or_a_multicast_mac_is_rejected() {
    let mut s = spec();
    s.networks = vec![Network {
        user: Some(UserNetwork::default()),
        bridge: Some(BridgeNetwork { name: "br0".into() }),
        ..nic("a")
    }];
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::NicKind(_))
    ));
    s.networks = vec![Network {
        user: Some(UserNetwork::default()),
        mac_address: Some("01:00:5e:00:00:01".into()),
        ..nic("a")
    }];
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::Mac(_))
    ));
}

#[test]
fn generated_macs_are_unicast_and_stable() {
    let m = generated_mac("uid", "nic");
    assert_eq!(m, generated_mac("uid", "nic"));
    assert!(m.starts_with("52:54:00:"));
    assert_ne!(m, generated_mac("uid", "other"));
}

#[test]
fn hostile_names_are_escaped_in_metadata_and_never_break_the_document() {
    let mut plan = plan_of(&spec(), DomainType::Qemu).unwrap();
    plan.owner.name = "\"/><evil a='1'>&amp;".into();
    plan.owner.namespace = "<ns>".into();
    let xml = render(&plan).xml;
    assert!(!xml.contains("<evil"));
    assert!(xml.contains("&lt;ns&gt;"));
    // The document is well formed: a reader walks it to the end.
    let mut reader = quick_xml::Reader::from_str(&xml);
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => break,
            _ => continue,
        }
    }
}

#[test]
fn memory_out_of_range_is_rejected() {
    let mut s = spec();
    s.memory.size = Quantity("1Mi".into());
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::Memory(_))
    ));
    s.memory.size = Quantity("lots".into());
    assert!(matches!(
        plan_of(&s, DomainType::Qemu),
        Err(PlanError::Memory(_))
    ));
}

#[test]
fn a_disk_cloned_from_a_snapshot_or_a_template_has_one_source() {
    for source in [
        serde_json::json!({"snapshot": {"name": "gold", "disk": "data", "mode": "Full"}}),
        serde_json::json!({"vm": {"name": "tpl", "disk": "data", "mode": "Linked"}}),
    ] {
        let mut s = spec();
        s.disks = vec![Disk {
            source: serde_json::from_value(source.clone()).unwrap(),
            ..disk("data", DiskBus::Virtio)
        }];
        let plan = plan_of(&s, DomainType::Qemu).unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(plan.disks[0].name, "data");
        s.disks[0].source.blank = Some(BlankSource {});
        assert!(
            matches!(plan_of(&s, DomainType::Qemu), Err(PlanError::DiskSource(_))),
            "two sources are refused: {source}"
        );
    }
}

#[test]
fn a_vm_with_a_tpm_gets_a_crb_tpm_backed_by_swtpm_and_another_config_hash() {
    let without = plan_of(&spec(), DomainType::Qemu).unwrap();
    assert!(!render(&without).xml.contains("<tpm"));
    let mut s = spec();
    s.tpm = Some(serde_json::from_str("{}").unwrap());
    let with = plan_of(&s, DomainType::Qemu).unwrap();
    assert_eq!(with.tpm, Some(TpmVersion::V2_0));
    let r = render(&with);
    assert!(
        r.xml.contains(
            "<tpm model=\"tpm-crb\">\n      <backend type=\"emulator\" version=\"2.0\"/>\n    </tpm>"
        ),
        "{}",
        r.xml
    );
    // Inside <devices>, after the rng device.
    let (devices, tpm, end) = (
        r.xml.find("<devices>").unwrap(),
        r.xml.find("<tpm ").unwrap(),
        r.xml.find("</devices>").unwrap(),
    );
    assert!(devices < tpm && tpm < end);
    // Adding or removing the TPM changes the hardware: the hash tells the agent so.
    assert_ne!(r.config_hash, render(&without).config_hash);
}

/// A disk restored from a backup is a disk like any other once its file is in place; a
/// disk with two sources (or none) is refused.
#[test]
fn a_disk_from_a_backup_renders_and_two_sources_are_refused() {
    let mut s = spec();
    let mut d = disk("data", DiskBus::Virtio);
    d.source = DiskSource {
        backup: Some(BackupSource {
            name: "nightly".into(),
            disk: "data".into(),
        }),
        ..Default::default()
    };
    s.disks.push(d.clone());
    let xml = xml_of(&s);
    assert!(
        xml.contains("<source file=\"/state/vms/u-1/disk-data.qcow2\"/>"),
        "{xml}"
    );
    d.source.blank = Some(BlankSource {});
    s.disks = vec![d.clone()];
    let e = plan_of(&s, DomainType::Qemu).unwrap_err();
    assert!(
        matches!(e, PlanError::DiskSource(ref n) if n == "data"),
        "{e}"
    );
    d.source = DiskSource::default();
    s.disks = vec![d];
    assert!(plan_of(&s, DomainType::Qemu).is_err());
}
