//! A small namespace-resolved element tree over quick-xml, for reading OVF.
//!
//! OVF documents are small (kilobytes) and their meaning depends on namespaces, not
//! prefixes (`ovf:`, `rasd:` may be bound to any prefix, or be the default namespace).
//! Building a tree with every name resolved to (namespace URI, local name) keeps the OVF
//! reader simple and correct about that.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// Why the XML could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("not well-formed XML at byte {position}: {source}")]
    Syntax {
        /// Byte offset where reading stopped.
        position: u64,
        /// The parser's error.
        #[source]
        source: quick_xml::Error,
    },
    /// A prefix without a namespace declaration.
    #[error("undeclared namespace prefix {0:?}")]
    UnknownPrefix(String),
    /// No root element.
    #[error("the document has no root element")]
    Empty,
    /// Elements nested deeper than [`MAX_DEPTH`] (dropping such a tree would overflow
    /// the stack; OVF needs a handful of levels).
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 128;

/// A name resolved to its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// Namespace URI; empty when unbound.
    pub ns: String,
    /// Local name.
    pub local: String,
}

/// An element with resolved names, its attributes, children and text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// The element's name.
    pub name: Option<Name>,
    /// Attributes (namespace declarations excluded).
    pub attrs: Vec<(Name, String)>,
    /// Child elements in order.
    pub children: Vec<Element>,
    /// Concatenated text content.
    pub text: String,
}

impl Element {
    /// Whether the element is `{ns}local`.
    pub fn is(&self, ns: &[&str], local: &str) -> bool {
        self.name
            .as_ref()
            .is_some_and(|n| n.local == local && ns.contains(&n.ns.as_str()))
    }

    /// Children named `{ns}local`.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a [&'a str],
        local: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, local))
    }

    /// First child named `{ns}local`.
    pub fn child(&self, ns: &[&str], local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, local))
    }

    /// Trimmed text of the first child named `{ns}local`.
    pub fn child_text(&self, ns: &[&str], local: &str) -> Option<&str> {
        self.child(ns, local).map(|c| c.text.trim())
    }

    /// Value of an attribute in one of `ns` (use `""` for an unqualified attribute).
    pub fn attr(&self, ns: &[&str], local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n.local == local && ns.contains(&n.ns.as_str()))
            .map(|(_, v)| v.as_str())
    }
}

fn resolve(r: ResolveResult<'_>, local: &str) -> Result<Name, XmlError> {
    let ns = match r {
        ResolveResult::Bound(ns) => ns.into_inner().to_owned(),
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(p) => return Err(XmlError::UnknownPrefix(p)),
    };
    Ok(Name {
        ns,
        local: local.to_owned(),
    })
}

/// Parse a document into its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        let syntax = |source, reader: &NsReader<&[u8]>| XmlError::Syntax {
            position: reader.buffer_position(),
            source,
        };
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => return Err(syntax(e, &reader)),
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let (r, local) = reader.resolver().resolve_element(e.name());
                let name = resolve(r, local.as_ref())?;
                let mut el = Element {
                    name: Some(name),
                    ..Element::default()
                };
                for a in e.attributes() {
                    let a = a.map_err(|err| syntax(err.into(), &reader))?;
                    if a.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (r, local) = reader.resolver().resolve_attribute(a.key);
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|err| syntax(err, &reader))?;
                    el.attrs
                        .push((resolve(r, local.as_ref())?, value.into_owned()));
                }
                if matches!(event, Event::Empty(_)) {
                    if let Some(parent) = stack.last_mut() {
                        parent.children.push(el);
                    }
                } else {
                    if stack.len() > MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or(XmlError::Empty)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Err(XmlError::Empty),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                        .unwrap_or_default()
                        .to_owned(),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut doc = stack.pop().ok_or(XmlError::Empty)?;
    doc.children.pop().ok_or(XmlError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_namespaces_whatever_the_prefix() {
        let doc = parse(
            r#"<?xml version="1.0"?><e:Envelope xmlns:e="urn:env" xmlns="urn:default" xmlns:x="urn:x">
               <Item x:key="k &amp; v">a &lt; b</Item><x:Other/></e:Envelope>"#,
        )
        .unwrap();
        assert!(doc.is(&["urn:env"], "Envelope"));
        let item = doc.child(&["urn:default"], "Item").unwrap();
        assert_eq!(item.attr(&["urn:x"], "key"), Some("k & v"));
        assert_eq!(item.text, "a < b");
        assert!(doc.child(&["urn:x"], "Other").is_some());
    }

    #[test]
    fn malformed_xml_and_unknown_prefixes_are_errors() {
        assert!(matches!(parse("<a><b></a>"), Err(XmlError::Syntax { .. })));
        assert!(matches!(parse("<p:a/>"), Err(XmlError::UnknownPrefix(_))));
        assert!(matches!(parse("   "), Err(XmlError::Empty)));
    }
}
