//! Our own `<metadata>` element: which VM a domain belongs to.
//!
//! A domain is ours only when it carries this element; everything else on the host is never
//! touched. The element is written inside `<metadata>` in its own XML namespace and read back
//! through libvirt's metadata API (which returns just this element).

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, Writer};
use std::io;

/// XML namespace URI of the element.
pub const NAMESPACE_URI: &str = "https://ironvisor.io/xmlns/domain/v1alpha1";
/// Prefix the element is written with.
pub const PREFIX: &str = "ironvisor";
/// Local name of the element.
pub const ELEMENT: &str = "vm";

/// What a domain records about the VM it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainMetadata {
    /// The VM's `metadata.uid`.
    pub uid: String,
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// The VM generation the domain definition was built from.
    pub generation: i64,
    /// Hash of the domain definition without this element: tells whether a running guest
    /// was booted from the definition the spec asks for now.
    pub config_hash: String,
    /// The node whose agent manages the domain: a libvirt shared by several agents (tests)
    /// lets each collect only its own leftovers. Absent in domains of older agents.
    pub node: Option<String>,
}

/// Why a metadata element could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The XML is not well-formed.
    #[error("metadata is not well-formed XML")]
    Xml(#[from] quick_xml::Error),
    /// An attribute is malformed.
    #[error("metadata has a malformed attribute")]
    Attr(#[from] quick_xml::events::attributes::AttrError),
    /// The element or one of its attributes is missing.
    #[error("metadata lacks {0}")]
    Missing(&'static str),
    /// The generation is not a number.
    #[error("metadata generation is not a number")]
    Generation,
}

impl DomainMetadata {
    /// Write the element (with its namespace declaration) into `w`.
    pub(crate) fn write<W: io::Write>(&self, w: &mut Writer<W>) -> io::Result<()> {
        let generation = self.generation.to_string();
        let xmlns = format!("xmlns:{PREFIX}");
        w.create_element(format!("{PREFIX}:{ELEMENT}"))
            .with_attribute((xmlns.as_str(), NAMESPACE_URI))
            .with_attribute(("uid", self.uid.as_str()))
            .with_attribute(("namespace", self.namespace.as_str()))
            .with_attribute(("name", self.name.as_str()))
            .with_attribute(("generation", generation.as_str()))
            .with_attribute(("configHash", self.config_hash.as_str()))
            .with_attributes(self.node.as_deref().map(|n| ("node", n)))
            .write_empty()?;
        Ok(())
    }

    /// The element alone, as libvirt's `virDomainSetMetadata` wants it.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new(Vec::new());
        self.write(&mut w)
            .expect("writing XML into memory cannot fail");
        String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
    }

    /// Parse the element as libvirt returns it (any prefix; matched by local name).
    pub fn parse(xml: &str) -> Result<Self, MetadataError> {
        let mut reader = Reader::from_str(xml);
        loop {
            match reader.read_event()? {
                Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == ELEMENT => {
                    return Self::from_start(&e);
                }
                Event::Eof => return Err(MetadataError::Missing("the vm element")),
                _ => {}
            }
        }
    }

    fn from_start(e: &BytesStart<'_>) -> Result<Self, MetadataError> {
        let mut uid = None;
        let mut namespace = None;
        let mut name = None;
        let mut generation = None;
        let mut config_hash = None;
        let mut node = None;
        for attr in e.attributes() {
            let attr = attr?;
            let value = attr.normalized_value(XmlVersion::Implicit1_0)?.into_owned();
            match attr.key.local_name().as_ref() {
                "uid" => uid = Some(value),
                "namespace" => namespace = Some(value),
                "name" => name = Some(value),
                "generation" => {
                    generation = Some(value.parse().map_err(|_| MetadataError::Generation)?)
                }
                "configHash" => config_hash = Some(value),
                "node" => node = Some(value),
                _ => {}
            }
        }
        Ok(Self {
            uid: uid.ok_or(MetadataError::Missing("uid"))?,
            namespace: namespace.ok_or(MetadataError::Missing("namespace"))?,
            name: name.ok_or(MetadataError::Missing("name"))?,
            generation: generation.ok_or(MetadataError::Missing("generation"))?,
            config_hash: config_hash.unwrap_or_default(),
            node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DomainMetadata {
        DomainMetadata {
            uid: "6c1f0a1e-0000-4000-8000-000000000001".into(),
            namespace: "team-a".into(),
            name: "web\"<&>'".into(),
            generation: 7,
            config_hash: "abc".into(),
            node: Some("host-1".into()),
        }
    }

    #[test]
    fn metadata_survives_a_round_trip_with_hostile_strings() {
        let m = sample();
        assert_eq!(DomainMetadata::parse(&m.to_xml()).unwrap(), m);
    }

    #[test]
    fn metadata_is_found_under_any_prefix() {
        let xml = r#"<x:vm xmlns:x="https://ironvisor.io/xmlns/domain/v1alpha1" uid="u" namespace="n" name="m" generation="3"/>"#;
        let m = DomainMetadata::parse(xml).unwrap();
        assert_eq!((m.uid.as_str(), m.generation), ("u", 3));
    }

    #[test]
    fn metadata_without_a_uid_is_rejected() {
        let xml = r#"<vm namespace="n" name="m" generation="3"/>"#;
        assert!(matches!(
            DomainMetadata::parse(xml),
            Err(MetadataError::Missing("uid"))
        ));
    }

    #[test]
    fn metadata_with_a_bad_generation_is_rejected() {
        let xml = r#"<vm uid="u" namespace="n" name="m" generation="x"/>"#;
        assert!(matches!(
            DomainMetadata::parse(xml),
            Err(MetadataError::Generation)
        ));
    }
}
