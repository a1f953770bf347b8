//! The definition a migrated domain runs under on its target: the source's live definition
//! with the source's VM directory replaced by the target's (disks, seed, console log) and
//! the node recorded in our metadata set to the target. Pure.
//!
//! The domain's config hash does not cover the VM directory (see `domain_xml::render`), so
//! the target agent, rendering the same VM with its own paths, finds the hash it expects and
//! neither redefines nor flags a restart.

/// Why a definition cannot be rewritten.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    /// A directory is not an absolute path of its own (it would match inside other paths).
    #[error("the VM directory {0:?} is not an absolute path")]
    BadDir(String),
    /// The definition carries no Ironvisor metadata: not a domain this agent manages.
    #[error("the domain has no Ironvisor metadata")]
    NoMetadata,
}

/// Rewrite `live` (the source's migratable XML) for the target.
pub fn for_target(
    live: &str,
    source_dir: &str,
    target_dir: &str,
    target_node: &str,
) -> Result<String, XmlError> {
    for d in [source_dir, target_dir] {
        if !d.starts_with('/') || d.len() < 2 || d.contains('"') || d.contains('<') {
            return Err(XmlError::BadDir(d.to_owned()));
        }
    }
    // With the separator, so /vms/ab never matches inside /vms/abc.
    let src = format!("{}/", source_dir.trim_end_matches('/'));
    let dst = format!("{}/", target_dir.trim_end_matches('/'));
    let moved = live.replace(&src, &dst);
    set_node(&moved, target_node)
}

/// Set (or add) the `node` attribute of the `ironvisor:vm` metadata element.
fn set_node(xml: &str, node: &str) -> Result<String, XmlError> {
    let start = xml.find("<ironvisor:vm ").ok_or(XmlError::NoMetadata)?;
    let end = start + xml[start..].find('>').ok_or(XmlError::NoMetadata)?;
    let element = &xml[start..end];
    let self_closing = element.ends_with('/');
    let body = element.trim_end_matches('/').trim_end();
    let without = match body.find(" node=\"") {
        Some(at) => {
            let value_end = body[at + 7..]
                .find('"')
                .map(|i| at + 7 + i + 1)
                .ok_or(XmlError::NoMetadata)?;
            format!("{}{}", &body[..at], &body[value_end..])
        }
        None => body.to_owned(),
    };
    let close = if self_closing { "/" } else { "" };
    Ok(format!(
        "{}{without} node=\"{node}\"{close}{}",
        &xml[..start],
        &xml[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = r#"<domain type='qemu'>
  <name>iv-a-web-12345678</name>
  <metadata>
    <ironvisor:vm xmlns:ironvisor="https://ironvisor.io/xmlns/domain/v1alpha1" uid="u1" namespace="a" name="web" generation="1" configHash="abc" node="h1"/>
  </metadata>
  <devices>
    <disk type='file' device='disk'><source file='/s/h1/vms/u1/disk-root.qcow2'/></disk>
    <disk type='file' device='disk'><source file='/s/h1/vms/u10/disk-root.qcow2'/></disk>
    <serial type='file'><source path='/s/h1/vms/u1/console.log'/></serial>
  </devices>
</domain>"#;

    #[test]
    fn paths_under_the_vm_directory_move_and_the_node_is_the_target() {
        let out = for_target(LIVE, "/s/h1/vms/u1", "/s/h2/vms/u1", "h2").unwrap();
        assert!(out.contains("'/s/h2/vms/u1/disk-root.qcow2'"), "{out}");
        assert!(out.contains("'/s/h2/vms/u1/console.log'"), "{out}");
        assert!(out.contains(r#"node="h2"/>"#), "{out}");
        assert!(!out.contains(r#"node="h1""#), "{out}");
        // Another VM's directory sharing the prefix is left alone.
        assert!(out.contains("/s/h1/vms/u10/disk-root.qcow2"), "{out}");
        assert!(out.contains(r#"configHash="abc""#), "{out}");
    }

    #[test]
    fn a_definition_without_a_node_gets_one() {
        let live = LIVE.replace(r#" node="h1""#, "");
        let out = for_target(&live, "/s/h1/vms/u1", "/s/h2/vms/u1", "h2").unwrap();
        assert!(out.contains(r#"configHash="abc" node="h2"/>"#), "{out}");
    }

    #[test]
    fn hostile_directories_and_foreign_domains_are_refused() {
        assert_eq!(
            for_target(LIVE, "relative", "/t", "h2"),
            Err(XmlError::BadDir("relative".into()))
        );
        assert_eq!(
            for_target(LIVE, "/s", "/t\"/><x", "h2"),
            Err(XmlError::BadDir("/t\"/><x".into()))
        );
        assert_eq!(
            for_target("<domain/>", "/s", "/t", "h2"),
            Err(XmlError::NoMetadata)
        );
    }
}
