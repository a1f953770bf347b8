//! The `<devices>` of a domain and the QEMU arguments of user-mode interfaces.

use super::{DiskFormat, DomainPlan, NicAttachment, path_str, text};
use ironvisor_crds::vm::{DiskBus, NicModel, Protocol, TpmVersion};
use quick_xml::Writer;
use std::io;

/// libvirt's nwfilter on every tap-attached interface (bridge and libvirt network): the guest
/// may send only from its own MAC and the IP address libvirt learns for it, ARP only for
/// those, and no DHCP server or router traffic (libvirt's `clean-traffic` ships with
/// libvirt-daemon-config-nwfilter).
pub const NIC_FILTER: &str = "clean-traffic";

/// First PCI slot (counting down) given to user-mode NICs on `pcie.0`. libvirt fills the
/// root bus from slot 1 upwards (eight root ports per slot), so the top slots stay free; 0x1f
/// belongs to the q35 chipset.
const USER_NIC_TOP_SLOT: u32 = 0x1e;

pub(super) fn write_devices(w: &mut Writer<Vec<u8>>, plan: &DomainPlan) -> io::Result<()> {
    w.create_element("devices").write_inner_content(|w| {
        write_disks(w, plan)?;
        if plan.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
            w.create_element("controller")
                .with_attribute(("type", "scsi"))
                .with_attribute(("index", "0"))
                .with_attribute(("model", "virtio-scsi"))
                .write_empty()?;
        }
        for nic in &plan.nics {
            let (kind, source_attr, source) = match &nic.attachment {
                NicAttachment::User(_) => continue,
                NicAttachment::Network(n) => ("network", "network", n.as_str()),
                NicAttachment::Bridge(b) => ("bridge", "bridge", b.as_str()),
            };
            w.create_element("interface")
                .with_attribute(("type", kind))
                .write_inner_content(|w| {
                    w.create_element("mac")
                        .with_attribute(("address", nic.mac.as_str()))
                        .write_empty()?;
                    w.create_element("source")
                        .with_attribute((source_attr, source))
                        .write_empty()?;
                    w.create_element("model")
                        .with_attribute(("type", libvirt_nic_model(nic.model)))
                        .write_empty()?;
                    w.create_element("filterref")
                        .with_attribute(("filter", NIC_FILTER))
                        .write_empty()?;
                    Ok(())
                })?;
        }
        let log = path_str(&plan.console_log);
        w.create_element("serial")
            .with_attribute(("type", "pty"))
            .write_inner_content(|w| {
                w.create_element("log")
                    .with_attribute(("file", log.as_str()))
                    .with_attribute(("append", "on"))
                    .write_empty()?;
                w.create_element("target")
                    .with_attribute(("port", "0"))
                    .write_empty()?;
                Ok(())
            })?;
        w.create_element("console")
            .with_attribute(("type", "pty"))
            .write_inner_content(|w| {
                w.create_element("target")
                    .with_attribute(("type", "serial"))
                    .with_attribute(("port", "0"))
                    .write_empty()?;
                Ok(())
            })?;
        if plan.display {
            write_display(w)?;
        }
        w.create_element("rng")
            .with_attribute(("model", "virtio"))
            .write_inner_content(|w| {
                w.create_element("backend")
                    .with_attribute(("model", "random"))
                    .write_text_content(quick_xml::events::BytesText::new("/dev/urandom"))?;
                Ok(())
            })?;
        if let Some(version) = plan.tpm {
            write_tpm(w, version)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The graphical display: VNC listening nowhere (`-vnc none`: no TCP port on a host
/// address, no socket path of ours); the agent's console asks libvirt for a socket connected
/// to it (`virDomainOpenGraphicsFD`), so access is libvirt's (root) and the console
/// server's RBAC. A standard VGA adapter (it has the VGA text mode a console shows before any
/// driver loads, and works under TCG), and a USB tablet so a browser's pointer maps
/// one-to-one.
fn write_display(w: &mut Writer<Vec<u8>>) -> io::Result<()> {
    w.create_element("graphics")
        .with_attribute(("type", "vnc"))
        .write_inner_content(|w| {
            w.create_element("listen")
                .with_attribute(("type", "none"))
                .write_empty()?;
            Ok(())
        })?;
    w.create_element("video").write_inner_content(|w| {
        w.create_element("model")
            .with_attribute(("type", "vga"))
            .with_attribute(("heads", "1"))
            .with_attribute(("primary", "yes"))
            .write_empty()?;
        Ok(())
    })?;
    w.create_element("input")
        .with_attribute(("type", "tablet"))
        .with_attribute(("bus", "usb"))
        .write_empty()?;
    Ok(())
}

/// A CRB TPM backed by swtpm, which libvirt starts beside QEMU. libvirt keeps the state of a
/// persistent domain in /var/lib/libvirt/swtpm/<domain uuid>/ across restarts and
/// redefinitions (the agent redefines with the domain's UUID), sends it along in a live
/// migration, and removes it on undefine (see `hypervisor::libvirt`'s undefine flags).
fn write_tpm(w: &mut Writer<Vec<u8>>, version: TpmVersion) -> io::Result<()> {
    w.create_element("tpm")
        .with_attribute(("model", "tpm-crb"))
        .write_inner_content(|w| {
            w.create_element("backend")
                .with_attribute(("type", "emulator"))
                .with_attribute(("version", version.as_str()))
                .write_empty()?;
            Ok(())
        })?;
    Ok(())
}

fn write_disks(w: &mut Writer<Vec<u8>>, plan: &DomainPlan) -> io::Result<()> {
    let mut vd = 0usize;
    let mut sd = 0usize;
    for disk in &plan.disks {
        let dev = match disk.bus {
            DiskBus::Virtio => {
                vd += 1;
                format!("vd{}", drive_letters(vd - 1))
            }
            DiskBus::Sata | DiskBus::Scsi => {
                sd += 1;
                format!("sd{}", drive_letters(sd - 1))
            }
        };
        let device = if disk.cdrom { "cdrom" } else { "disk" };
        let format = match disk.format {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        };
        let bus = match disk.bus {
            DiskBus::Virtio => "virtio",
            DiskBus::Sata => "sata",
            DiskBus::Scsi => "scsi",
        };
        let file = path_str(&disk.path);
        w.create_element("disk")
            .with_attribute(("type", "file"))
            .with_attribute(("device", device))
            .write_inner_content(|w| {
                w.create_element("driver")
                    .with_attribute(("name", "qemu"))
                    .with_attribute(("type", format))
                    .write_empty()?;
                w.create_element("source")
                    .with_attribute(("file", file.as_str()))
                    .write_empty()?;
                w.create_element("target")
                    .with_attribute(("dev", dev.as_str()))
                    .with_attribute(("bus", bus))
                    .write_empty()?;
                if disk.read_only {
                    w.create_element("readonly").write_empty()?;
                }
                if let Some(order) = disk.boot_order {
                    let order = order.to_string();
                    w.create_element("boot")
                        .with_attribute(("order", order.as_str()))
                        .write_empty()?;
                }
                text(w, "serial", &disk.name)
            })?;
    }
    Ok(())
}

/// `a`, `b`, ..., `z`, `aa`, `ab`, ... as Linux names drives.
fn drive_letters(mut index: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

fn libvirt_nic_model(model: NicModel) -> &'static str {
    match model {
        NicModel::Virtio => "virtio",
        NicModel::E1000e => "e1000e",
        NicModel::Rtl8139 => "rtl8139",
    }
}

fn qemu_nic_device(model: NicModel) -> &'static str {
    match model {
        NicModel::Virtio => "virtio-net-pci",
        NicModel::E1000e => "e1000e",
        NicModel::Rtl8139 => "rtl8139",
    }
}

/// User-mode interfaces as QEMU arguments: libvirt 9.0 has no port forwards for them (its
/// passt backend is newer), so they are passed through with every host port bound to
/// 127.0.0.1. All values are numbers, validated MACs or fixed words: nothing a user writes
/// reaches QEMU's option parser unchecked.
pub(super) fn write_user_net_args(w: &mut Writer<Vec<u8>>, plan: &DomainPlan) -> io::Result<()> {
    let mut args = Vec::new();
    for (index, nic) in plan.nics.iter().enumerate() {
        let NicAttachment::User(forwards) = &nic.attachment else {
            continue;
        };
        let id = format!("ivnet{index}");
        let mut netdev = format!("user,id={id}");
        for (proto, host, guest) in forwards {
            let proto = match proto {
                Protocol::TCP => "tcp",
                Protocol::UDP => "udp",
            };
            netdev.push_str(&format!(",hostfwd={proto}:127.0.0.1:{host}-:{guest}"));
        }
        let slot = USER_NIC_TOP_SLOT - index as u32;
        let device = format!(
            "{},netdev={id},mac={},bus=pcie.0,addr={slot:#x}",
            qemu_nic_device(nic.model),
            nic.mac
        );
        args.extend(["-netdev".to_owned(), netdev, "-device".to_owned(), device]);
    }
    w.create_element("qemu:commandline")
        .write_inner_content(|w| {
            for arg in &args {
                w.create_element("qemu:arg")
                    .with_attribute(("value", arg.as_str()))
                    .write_empty()?;
            }
            Ok(())
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::drive_letters;

    #[test]
    fn drives_are_lettered_as_linux_names_them() {
        assert_eq!(drive_letters(0), "a");
        assert_eq!(drive_letters(25), "z");
        assert_eq!(drive_letters(26), "aa");
        assert_eq!(drive_letters(27), "ab");
    }
}
