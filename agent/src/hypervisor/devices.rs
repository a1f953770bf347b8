//! Reading device names back from a live domain XML (for stats, interface status and the
//! console's display).

use quick_xml::Reader;
use quick_xml::events::Event;

/// Devices of a domain as libvirt reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainDevices {
    /// Disk target names (vda, sda, ...), excluding CD-ROMs.
    pub disks: Vec<String>,
    /// Interfaces: (MAC, host device name when libvirt created one).
    pub interfaces: Vec<(String, Option<String>)>,
    /// Graphics devices' types (vnc, spice, ...) in document order: libvirt's index of
    /// each is its position here.
    pub graphics: Vec<String>,
}

/// Parse the `<devices>` of a domain XML. Unknown content is ignored.
pub fn parse_devices(xml: &str) -> Result<DomainDevices, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    let mut out = DomainDevices::default();
    let mut in_disk: Option<bool> = None; // Some(is_cdrom)
    let mut iface: Option<(String, Option<String>)> = None;
    loop {
        match reader.read_event()? {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| -> Option<String> {
                    e.try_get_attribute(name)
                        .ok()
                        .flatten()
                        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
                        .map(|v| v.into_owned())
                };
                match e.name().as_ref() {
                    "disk" => in_disk = Some(attr("device").as_deref() == Some("cdrom")),
                    "interface" => iface = Some((String::new(), None)),
                    "graphics" => out.graphics.push(attr("type").unwrap_or_default()),
                    "target" => {
                        if let Some(false) = in_disk
                            && let Some(dev) = attr("dev")
                        {
                            out.disks.push(dev);
                        } else if let Some(i) = iface.as_mut() {
                            i.1 = attr("dev");
                        }
                    }
                    "mac" => {
                        if let (Some(i), Some(mac)) = (iface.as_mut(), attr("address")) {
                            i.0 = mac;
                        }
                    }
                    _ => {}
                }
            }
            Event::End(e) => match e.name().as_ref() {
                "disk" => in_disk = None,
                "interface" => {
                    if let Some(i) = iface.take() {
                        out.interfaces.push(i);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_and_interfaces_are_read_from_a_live_domain() {
        let xml = r#"<domain><devices>
          <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
          <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
          <interface type='network'><mac address='52:54:00:00:00:01'/><target dev='vnet3'/></interface>
          <interface type='bridge'><mac address='52:54:00:00:00:02'/></interface>
          <graphics type='spice' autoport='yes'/>
          <graphics type='vnc'><listen type='none'/></graphics>
        </devices></domain>"#;
        let d = parse_devices(xml).unwrap();
        assert_eq!(d.disks, vec!["vda"]);
        assert_eq!(
            d.interfaces,
            vec![
                ("52:54:00:00:00:01".into(), Some("vnet3".into())),
                ("52:54:00:00:00:02".into(), None)
            ]
        );
        assert_eq!(d.graphics, vec!["spice", "vnc"]);
    }

    #[test]
    fn a_domain_without_graphics_has_none() {
        let d = parse_devices("<domain><devices><video/></devices></domain>").unwrap();
        assert!(d.graphics.is_empty());
    }
}
