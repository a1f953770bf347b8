//! A running domain's disks as libvirt sees them, and the `<domainsnapshot>` XML that
//! freezes them: pure, no libvirt.

use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::Event;
use std::path::{Path, PathBuf};

/// One disk of a live domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveDisk {
    /// Target name (vda, sdb, ...).
    pub target: String,
    /// The file QEMU writes to (the top of the chain), when the disk is a file.
    pub source: Option<PathBuf>,
    /// The chain under it, top first, as libvirt reports it (`<backingStore>`).
    pub backing: Vec<PathBuf>,
    /// A CD-ROM or a read-only disk: never snapshotted.
    pub read_only: bool,
    /// The target of a block job that is copying into another file (`<mirror>`), which
    /// libvirt shows until the job is pivoted or aborted.
    pub mirror: Option<PathBuf>,
}

/// Parse the `<disk>` elements of a domain XML. A disk's own `<source>` is the top of its
/// chain; the `<source>`s nested in `<backingStore>` are its backing chain, the one in
/// `<mirror>` a block job's target.
pub fn parse_live_disks(xml: &str) -> Result<Vec<LiveDisk>, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut disk: Option<LiveDisk> = None;
    let mut depth_in_backing = 0usize;
    let mut in_mirror = false;
    loop {
        let ev = reader.read_event()?;
        let (e, empty) = match &ev {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::End(e) => {
                match e.name().as_ref() {
                    "disk" => out.extend(disk.take()),
                    "backingStore" => depth_in_backing = depth_in_backing.saturating_sub(1),
                    "mirror" => in_mirror = false,
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let Some(e) = e else { continue };
        let attr = |name: &str| -> Option<String> {
            e.try_get_attribute(name)
                .ok()
                .flatten()
                .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
                .map(|v| v.into_owned())
        };
        match e.name().as_ref() {
            "disk" => {
                disk = Some(LiveDisk {
                    target: String::new(),
                    source: None,
                    backing: Vec::new(),
                    read_only: attr("device").as_deref() == Some("cdrom"),
                    mirror: None,
                });
                depth_in_backing = 0;
                in_mirror = false;
            }
            "mirror" if disk.is_some() => {
                in_mirror = !empty;
                if let (Some(d), Some(f)) = (disk.as_mut(), attr("file")) {
                    d.mirror = Some(PathBuf::from(f));
                }
            }
            "backingStore" if disk.is_some() && !empty => depth_in_backing += 1,
            "source" => {
                if let (Some(d), Some(f)) = (disk.as_mut(), attr("file")) {
                    if in_mirror {
                        d.mirror = Some(PathBuf::from(f));
                    } else if depth_in_backing == 0 {
                        d.source = Some(PathBuf::from(f));
                    } else {
                        d.backing.push(PathBuf::from(f));
                    }
                }
            }
            "target" if depth_in_backing == 0 && !in_mirror => {
                if let (Some(d), Some(dev)) = (disk.as_mut(), attr("dev")) {
                    d.target = dev;
                }
            }
            "readonly" if depth_in_backing == 0 => {
                if let Some(d) = disk.as_mut() {
                    d.read_only = true;
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The snapshot XML that moves each `(target, new top file)` to its new file (which exists:
/// REUSE_EXT) and leaves every other disk alone.
pub fn snapshot_xml(name: &str, all: &[LiveDisk], moves: &[(String, PathBuf)]) -> String {
    let mut xml = format!("<domainsnapshot><name>{}</name><disks>", escape(name));
    for d in all {
        let target = escape(&d.target);
        match moves.iter().find(|(t, _)| *t == d.target) {
            Some((_, file)) => xml.push_str(&format!(
                "<disk name='{target}' snapshot='external' type='file'>\
                 <driver type='qcow2'/><source file='{}'/></disk>",
                escape(file.to_string_lossy().as_ref())
            )),
            None => xml.push_str(&format!("<disk name='{target}' snapshot='no'/>")),
        }
    }
    xml.push_str("</disks></domainsnapshot>");
    xml
}

/// The disk whose top file is `file`.
pub fn by_source<'a>(disks: &'a [LiveDisk], file: &Path) -> Option<&'a LiveDisk> {
    disks.iter().find(|d| d.source.as_deref() == Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = r#"<domain type='qemu'><devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/s/vms/u/disk-data.s-1.qcow2' index='2'/>
        <backingStore type='file' index='1'>
          <format type='qcow2'/>
          <source file='/s/vms/u/disk-data.qcow2'/>
          <backingStore/>
        </backingStore>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='cdrom'>
        <source file='/s/vms/u/seed.iso'/>
        <target dev='sda' bus='sata'/>
        <readonly/>
      </disk>
    </devices></domain>"#;

    #[test]
    fn the_top_file_and_its_backing_chain_are_told_apart() {
        let disks = parse_live_disks(LIVE).unwrap();
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].target, "vda");
        assert_eq!(
            disks[0].source.as_deref(),
            Some(Path::new("/s/vms/u/disk-data.s-1.qcow2"))
        );
        assert_eq!(
            disks[0].backing,
            [PathBuf::from("/s/vms/u/disk-data.qcow2")]
        );
        assert!(!disks[0].read_only);
        assert!(disks[1].read_only);
        assert_eq!(
            by_source(&disks, Path::new("/s/vms/u/seed.iso")).map(|d| d.target.as_str()),
            Some("sda")
        );
    }

    #[test]
    fn a_snapshot_moves_only_the_named_disks_and_escapes_paths() {
        let disks = parse_live_disks(LIVE).unwrap();
        let xml = snapshot_xml(
            "s<1>",
            &disks,
            &[("vda".into(), PathBuf::from("/s/vms/u/d'x.qcow2"))],
        );
        assert!(xml.contains("<name>s&lt;1&gt;</name>"), "{xml}");
        assert!(xml.contains("<disk name='vda' snapshot='external' type='file'>"));
        assert!(
            xml.contains("<source file='/s/vms/u/d&apos;x.qcow2'/>"),
            "{xml}"
        );
        assert!(xml.contains("<disk name='sda' snapshot='no'/>"));
    }

    #[test]
    fn a_block_job_mirror_is_not_taken_for_the_disk_source() {
        let xml = r#"<domain><devices><disk type='file' device='disk'>
          <source file='/v/disk-a.s-1.qcow2' index='2'/>
          <backingStore type='file' index='1'><source file='/v/disk-a.qcow2'/><backingStore/></backingStore>
          <mirror type='file' job='active-commit' ready='yes'>
            <format type='qcow2'/><source file='/v/disk-a.qcow2' index='1'/>
          </mirror>
          <target dev='vda' bus='virtio'/></disk></devices></domain>"#;
        let d = parse_live_disks(xml).unwrap().remove(0);
        assert_eq!(d.source.as_deref(), Some(Path::new("/v/disk-a.s-1.qcow2")));
        assert_eq!(d.backing, [PathBuf::from("/v/disk-a.qcow2")]);
        assert_eq!(d.mirror.as_deref(), Some(Path::new("/v/disk-a.qcow2")));
        assert_eq!(d.target, "vda");
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        assert!(parse_live_disks("<domain><devices><disk><source file='a'/></oops>").is_err());
    }
}
