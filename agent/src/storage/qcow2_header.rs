//! The first gate for a downloaded image, before `qemu-img` ever opens it: read its first
//! bytes ourselves and decide which format it is and whether it may reach QEMU at all.
//!
//! This module owns the reading of a qcow2 header (version 2 and 3, header extensions) with
//! checked arithmetic only: every offset and length comes from the file and may be hostile.
//! It never opens a file itself and never trusts its own verdict alone: QEMU's view
//! (`qemu-img info --backing-chain`, [`super::qcow2::accepted_image`]) is the second gate.
//!
//! Refused here: a backing file, an external data file (the incompatible bit or the
//! data-file-name extension), encryption, incompatible features QEMU 7.2 does not know, a
//! corrupt image, and files whose magic says they are another format QEMU would follow
//! (VMDK extents, VHDX, VPC, QED, VDI, LUKS, …): without a format field in the API, a file
//! that is not qcow2 is taken as raw only when it does not look like one of those.

/// The qcow2 magic, `QFI\xfb`.
pub const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// Bytes a caller should read from the start of the file: a header and its extensions fit
/// in the first cluster, and clusters are at most 2 MiB.
pub const HEADER_READ_BYTES: usize = 2 << 20;
/// Header length of a version 2 image (fixed), and the smallest a version 3 may declare.
const V2_HEADER_LEN: u32 = 72;
const V3_MIN_HEADER_LEN: u32 = 104;

/// Incompatible feature bits (qcow2 spec, "incompatible_features").
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Header extension types QEMU 7.2 knows.
pub mod ext {
    /// End of the extension area.
    pub const END: u32 = 0;
    /// Backing file format name.
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    /// Feature name table.
    pub const FEATURE_NAMES: u32 = 0x6803_f857;
    /// Bitmaps.
    pub const BITMAPS: u32 = 0x2385_2875;
    /// Full disk encryption header pointer.
    pub const CRYPTO: u32 = 0x0537_be77;
    /// External data file name (`DATA`).
    pub const DATA_FILE: u32 = 0x4441_5441;
}

/// Why an image is refused before QEMU sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than a header.
    #[error("the qcow2 header is truncated ({0} bytes)")]
    Truncated(usize),
    /// A version other than 2 or 3.
    #[error("qcow2 version {0} is not supported (only 2 and 3)")]
    Version(u32),
    /// A field is out of range or an offset points outside what was read.
    #[error("the qcow2 header field {field} is invalid ({value})")]
    Field {
        /// The field's name in the qcow2 specification.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The image names a backing file.
    #[error("the qcow2 image names a backing file ({0:?})")]
    Backing(String),
    /// The image keeps its data in another file.
    #[error("the qcow2 image has an external data file{0}")]
    DataFile(String),
    /// The image is encrypted.
    #[error("the qcow2 image is encrypted (method {0})")]
    Encrypted(u32),
    /// QEMU marked the image corrupt.
    #[error("the qcow2 image is marked corrupt")]
    Corrupt,
    /// Incompatible feature bits nobody knows.
    #[error("the qcow2 image has unknown incompatible features ({0:#x})")]
    UnknownFeatures(u64),
    /// The file is another format that QEMU could follow to other files.
    #[error("the file is a {0} image; only raw and qcow2 images are accepted")]
    OtherFormat(&'static str),
}

/// One header extension, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Its type.
    pub kind: u32,
    /// Its data length.
    pub len: u32,
}

/// A qcow2 header that passed the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Incompatible feature bits (only known, allowed ones).
    pub incompatible: u64,
    /// Extensions in file order (the end marker excluded).
    pub extensions: Vec<Extension>,
}

impl Header {
    /// Extensions whose type QEMU 7.2 does not know (QEMU ignores them; the agent's
    /// converted images have none).
    pub fn unknown_extensions(&self) -> Vec<u32> {
        self.extensions
            .iter()
            .map(|e| e.kind)
            .filter(|k| {
                ![
                    ext::BACKING_FORMAT,
                    ext::FEATURE_NAMES,
                    ext::BITMAPS,
                    ext::CRYPTO,
                    ext::DATA_FILE,
                ]
                .contains(k)
            })
            .collect()
    }
}

/// What the first bytes of a file say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// A qcow2 image that may go to QEMU as `-f qcow2`.
    Qcow2(Header),
    /// Anything else that does not look like a format QEMU would interpret: `-f raw`.
    Raw,
}

impl Detected {
    /// The format to give QEMU explicitly.
    pub fn format(&self) -> &'static str {
        match self {
            Detected::Qcow2(_) => "qcow2",
            Detected::Raw => "raw",
        }
    }
}

/// Magics at offset 0 of formats QEMU would follow to other files or decrypt; a file that
/// starts with one is refused rather than taken as raw.
const OTHER_MAGICS: [(&[u8], &str); 9] = [
    (b"KDMV", "VMDK"),
    (b"COWD", "VMDK"),
    (b"# Disk DescriptorFile", "VMDK descriptor"),
    (b"vhdxfile", "VHDX"),
    (b"conectix", "VPC"),
    (b"QED\0", "QED"),
    (b"LUKS\xba\xbe", "LUKS"),
    (b"WithoutFreeSpace", "Parallels"),
    (b"WithouFreSpacExt", "Parallels"),
];
/// VDI keeps its signature at offset 0x40 (little-endian).
const VDI_SIGNATURE: (usize, [u8; 4]) = (0x40, [0x7f, 0x10, 0xda, 0xbe]);

/// Classify a file from its first bytes (up to [`HEADER_READ_BYTES`]).
pub fn detect(buf: &[u8]) -> Result<Detected, HeaderError> {
    if buf.len() >= 4 && be32(buf, 0) == Some(QCOW2_MAGIC) {
        return parse(buf).map(Detected::Qcow2);
    }
    if let Some((_, name)) = OTHER_MAGICS.iter().find(|(m, _)| buf.starts_with(m)) {
        return Err(HeaderError::OtherFormat(name));
    }
    let (at, sig) = VDI_SIGNATURE;
    if buf.get(at..at + 4) == Some(&sig[..]) {
        return Err(HeaderError::OtherFormat("VDI"));
    }
    Ok(Detected::Raw)
}

fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

fn be64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn field(field: &'static str, value: u64) -> HeaderError {
    HeaderError::Field { field, value }
}

/// Read and judge a qcow2 header from the file's first bytes.
pub fn parse(buf: &[u8]) -> Result<Header, HeaderError> {
    let truncated = || HeaderError::Truncated(buf.len());
    if be32(buf, 0) != Some(QCOW2_MAGIC) {
        return Err(field("magic", be32(buf, 0).map_or(0, u64::from)));
    }
    let version = be32(buf, 4).ok_or_else(truncated)?;
    if !(2..=3).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    let backing_offset = be64(buf, 8).ok_or_else(truncated)?;
    let backing_len = be32(buf, 16).ok_or_else(truncated)?;
    let cluster_bits = be32(buf, 20).ok_or_else(truncated)?;
    let size = be64(buf, 24).ok_or_else(truncated)?;
    let crypt = be32(buf, 32).ok_or_else(truncated)?;
    be64(buf, 64).ok_or_else(truncated)?; // snapshots_offset: the end of the v2 header
    if !(9..=21).contains(&cluster_bits) {
        return Err(field("cluster_bits", cluster_bits.into()));
    }
    if backing_offset != 0 || backing_len != 0 {
        return Err(HeaderError::Backing(backing_name(
            buf,
            backing_offset,
            backing_len,
        )));
    }
    if crypt != 0 {
        return Err(HeaderError::Encrypted(crypt));
    }
    // Beyond what QEMU accepts for a qcow2 (its sector arithmetic stays below 2^63).
    if size > 1 << 61 {
        return Err(field("size", size));
    }
    let (incompatible, header_len) = if version == 3 {
        let inc = be64(buf, 72).ok_or_else(truncated)?;
        let len = be32(buf, 100).ok_or_else(truncated)?;
        if len < V3_MIN_HEADER_LEN || len % 8 != 0 {
            return Err(field("header_length", len.into()));
        }
        (inc, len)
    } else {
        (0, V2_HEADER_LEN)
    };
    check_incompatible(incompatible)?;
    let cluster = 1usize << cluster_bits;
    let extensions = extensions(buf, header_len, cluster)?;
    if extensions.iter().any(|e| e.kind == ext::DATA_FILE) {
        return Err(HeaderError::DataFile(" (data-file-name extension)".into()));
    }
    Ok(Header {
        version,
        size,
        cluster_bits,
        incompatible,
        extensions,
    })
}

/// The backing file an image of the agent's own names (a VM disk's overlay), if any. Read
/// with the same checked arithmetic; `None` for anything that is not a qcow2 with one.
pub fn backing_file_name(buf: &[u8]) -> Option<String> {
    if be32(buf, 0) != Some(QCOW2_MAGIC) {
        return None;
    }
    let offset = usize::try_from(be64(buf, 8)?).ok()?;
    let len = usize::try_from(be32(buf, 16)?).ok()?;
    if offset == 0 || len == 0 || len > 1023 {
        return None;
    }
    let name = buf.get(offset..offset.checked_add(len)?)?;
    String::from_utf8(name.to_vec()).ok()
}

fn check_incompatible(bits: u64) -> Result<(), HeaderError> {
    if bits & INCOMPAT_DATA_FILE != 0 {
        return Err(HeaderError::DataFile(String::new()));
    }
    if bits & INCOMPAT_CORRUPT != 0 {
        return Err(HeaderError::Corrupt);
    }
    if bits & !INCOMPAT_KNOWN != 0 {
        return Err(HeaderError::UnknownFeatures(bits & !INCOMPAT_KNOWN));
    }
    Ok(())
}

/// The backing file name for the message, when it lies inside what was read.
fn backing_name(buf: &[u8], offset: u64, len: u32) -> String {
    let name = usize::try_from(offset).ok().and_then(|start| {
        let end = start.checked_add(usize::try_from(len.min(1023)).ok()?)?;
        buf.get(start..end)
    });
    match name {
        Some(n) => String::from_utf8_lossy(n).into_owned(),
        None => format!("{len} bytes at offset {offset}"),
    }
}

/// Walk the header extensions from `start` to the end marker, inside the first cluster
/// (as QEMU does: an extension that would cross the cluster's end is an error).
fn extensions(buf: &[u8], start: u32, cluster: usize) -> Result<Vec<Extension>, HeaderError> {
    let mut at = usize::try_from(start).map_err(|_| field("header_length", start.into()))?;
    if at > cluster {
        return Err(field("header_length", start.into()));
    }
    let mut out = Vec::new();
    while at.checked_add(8).is_some_and(|e| e <= cluster) {
        let truncated = || HeaderError::Truncated(buf.len());
        let kind = be32(buf, at).ok_or_else(truncated)?;
        let len = be32(buf, at + 4).ok_or_else(truncated)?;
        if kind == ext::END {
            break;
        }
        let next = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(7))
            .map(|l| l & !7)
            .and_then(|padded| (at + 8).checked_add(padded))
            .filter(|n| *n <= cluster)
            .ok_or_else(|| field("extension length", len.into()))?;
        if next > buf.len() {
            return Err(truncated());
        }
        out.push(Extension { kind, len });
        at = next;
    }
    Ok(out)
}

#[cfg(test)]
#[path = "qcow2_header_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "qcow2_header_fuzz.rs"]
mod fuzz;
