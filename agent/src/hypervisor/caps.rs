//! What libvirt's domain capabilities say the host can give a guest, as far as the agent
//! reports it (today: an emulated TPM). Pure parsing; the call is in [`super::libvirt`].

use quick_xml::Reader;
use quick_xml::events::Event;

/// Guest devices the host can provide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCaps {
    /// An emulated TPM 2.0: libvirt lists `<tpm supported='yes'>` with the `emulator`
    /// backend (it does only when it finds swtpm) and, where it lists versions, 2.0.
    pub tpm_emulator: bool,
}

/// Read `virsh domcapabilities` output. A document without a TPM section (older libvirt,
/// or the test driver) means no TPM; malformed XML is an error.
pub fn parse_domain_caps(xml: &str) -> Result<HostCaps, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    let mut depth_in_tpm: Option<usize> = None;
    let mut depth = 0usize;
    let mut supported = false;
    let mut current_enum: Option<String> = None;
    let mut in_value = false;
    let (mut emulator, mut versions, mut v2) = (false, false, false);
    loop {
        match reader.read_event()? {
            Event::Start(e) => {
                depth += 1;
                let name = e.name();
                let attr = |key: &str| {
                    e.try_get_attribute(key)
                        .ok()
                        .flatten()
                        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
                        .map(|v| v.into_owned())
                };
                match name.as_ref() {
                    "tpm" if depth_in_tpm.is_none() => {
                        depth_in_tpm = Some(depth);
                        supported = attr("supported").as_deref() == Some("yes");
                    }
                    "enum" if depth_in_tpm.is_some() => {
                        current_enum = attr("name");
                        if current_enum.as_deref() == Some("backendVersion") {
                            versions = true;
                        }
                    }
                    "value" if depth_in_tpm.is_some() => in_value = true,
                    _ => {}
                }
            }
            Event::Empty(e) if e.name().as_ref() == "tpm" && depth_in_tpm.is_none() => {
                // `<tpm supported='no'/>`: nothing inside.
            }
            Event::Text(t) if in_value => {
                let v = t.xml_content(quick_xml::XmlVersion::Implicit1_0);
                let v = v.trim();
                match current_enum.as_deref() {
                    Some("backendModel") if v == "emulator" => emulator = true,
                    Some("backendVersion") if v == "2.0" => v2 = true,
                    _ => {}
                }
            }
            Event::End(e) => {
                match e.name().as_ref() {
                    "value" => in_value = false,
                    "enum" => current_enum = None,
                    "tpm" if depth_in_tpm == Some(depth) => {
                        return Ok(HostCaps {
                            tpm_emulator: supported && emulator && (!versions || v2),
                        });
                    }
                    _ => {}
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => return Ok(HostCaps::default()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TPM section of `virsh domcapabilities` on Debian 12 (libvirt 9.0, QEMU 7.2) with
    /// swtpm installed.
    const WITH_SWTPM: &str = r#"<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <devices>
    <disk supported='yes'><enum name='diskDevice'><value>disk</value></enum></disk>
    <tpm supported='yes'>
      <enum name='model'>
        <value>tpm-tis</value>
        <value>tpm-crb</value>
      </enum>
      <enum name='backendModel'>
        <value>passthrough</value>
        <value>emulator</value>
        <value>external</value>
      </enum>
      <enum name='backendVersion'>
        <value>1.2</value>
        <value>2.0</value>
      </enum>
    </tpm>
  </devices>
</domainCapabilities>"#;

    #[test]
    fn libvirt_listing_the_emulator_backend_means_a_tpm_can_be_given() {
        assert!(parse_domain_caps(WITH_SWTPM).unwrap().tpm_emulator);
    }

    #[test]
    fn without_swtpm_libvirt_lists_only_passthrough_and_no_tpm_is_reported() {
        let without = WITH_SWTPM.replace("<value>emulator</value>", "");
        assert!(!parse_domain_caps(&without).unwrap().tpm_emulator);
        let unsupported = WITH_SWTPM.replace("<tpm supported='yes'>", "<tpm supported='no'>");
        assert!(!parse_domain_caps(&unsupported).unwrap().tpm_emulator);
        assert!(
            !parse_domain_caps(
                "<domainCapabilities><devices><tpm supported='no'/></devices></domainCapabilities>"
            )
            .unwrap()
            .tpm_emulator
        );
    }

    #[test]
    fn an_emulator_that_offers_only_tpm_1_2_is_not_enough() {
        let only_12 = WITH_SWTPM.replace("<value>2.0</value>", "");
        assert!(!parse_domain_caps(&only_12).unwrap().tpm_emulator);
        // libvirt before 8.6 lists no versions: the emulator backend alone decides.
        let unlisted = WITH_SWTPM.replace("backendVersion", "other");
        assert!(parse_domain_caps(&unlisted).unwrap().tpm_emulator);
    }

    #[test]
    fn a_document_without_a_tpm_section_means_no_tpm_and_garbage_is_an_error() {
        assert_eq!(
            parse_domain_caps("<capabilities><host/></capabilities>").unwrap(),
            HostCaps::default()
        );
        assert!(parse_domain_caps("<domainCapabilities><devices></tpm>").is_err());
    }
}
