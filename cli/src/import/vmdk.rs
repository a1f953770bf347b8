//! The VMDK formats: the text descriptor and the hosted sparse extent header.
//!
//! A VMDK is a text descriptor (its own file, or embedded in a sparse extent at the
//! header's descriptor offset) that lists extents: FLAT (raw bytes at an offset), SPARSE
//! (a hosted sparse file with grain tables) or ZERO. Parsing here is pure; the extents are
//! checked for truncation in [`super::vmdk_check`].

use std::collections::BTreeMap;

/// Bytes in a sector.
pub const SECTOR: u64 = 512;
/// Magic number of a hosted sparse extent: "KDMV" little-endian.
pub const SPARSE_MAGIC: u32 = 0x564d_444b;
/// `gdOffset` value that means "the grain directory is in the footer" (streamOptimized).
pub const GD_AT_END: u64 = u64::MAX;
/// Header flag: grains are compressed (streamOptimized).
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Header flag: grains are preceded by markers (streamOptimized).
pub const FLAG_MARKERS: u32 = 1 << 17;
/// The parent CID of a disk that has no parent.
pub const NO_PARENT_CID: &str = "ffffffff";
/// Largest virtual size accepted: 64 TiB, above VMware's own 62 TB limit.
pub const MAX_CAPACITY_BYTES: u64 = 64 << 40;
/// Bytes of an embedded descriptor QEMU reads whatever the header's size says (its
/// `DESC_SIZE`, 20 sectors): a hint hidden after the declared size is still seen.
pub const QEMU_DESC_BYTES: u64 = 20 * SECTOR;
/// The key QEMU looks for anywhere in a descriptor, comments included (`strstr`).
const PARENT_HINT_KEY: &str = "parentFileNameHint";

/// Why a VMDK descriptor or header could not be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmdkError {
    /// The text does not start like a VMDK descriptor.
    #[error("not a VMDK descriptor (no createType)")]
    NotADescriptor,
    /// An extent line that does not parse.
    #[error("extent line {line} is malformed: {text:?}")]
    BadExtent {
        /// 1-based line number in the descriptor.
        line: usize,
        /// The line.
        text: String,
    },
    /// A subformat this tool does not convert.
    #[error("subformat {0:?} is not supported")]
    UnsupportedSubformat(String),
    /// No extents at all.
    #[error("the descriptor lists no extents")]
    NoExtents,
    /// A sparse header whose fields contradict each other.
    #[error("sparse header is corrupt: {0}")]
    BadHeader(&'static str),
    /// A size or offset that does not fit, or a disk above [`MAX_CAPACITY_BYTES`].
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
    /// A `parentFileNameHint` that QEMU would follow but the descriptor does not declare.
    #[error(
        "QEMU would open parentFileNameHint {hint:?} (it takes the first one anywhere, even in a \
         comment), which is not the parent this descriptor declares"
    )]
    HiddenParentHint {
        /// The name QEMU would open.
        hint: String,
    },
}

/// Access mode of an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-write.
    Rw,
    /// Read-only.
    Rdonly,
    /// No access.
    NoAccess,
}

/// Kind of an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// Raw bytes in a file, starting at an offset.
    Flat,
    /// A hosted sparse file with grain directory and tables.
    Sparse,
    /// Reads as zeros; no file.
    Zero,
    /// A raw device mapping; the file is a pointer to a LUN.
    Rdm,
    /// A VMFS extent (flat on a datastore).
    Vmfs,
}

/// One line of the descriptor's extent section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Access mode.
    pub access: Access,
    /// Size in sectors.
    pub sectors: u64,
    /// Kind.
    pub kind: ExtentKind,
    /// File name, relative to the descriptor; absent for ZERO.
    pub file: Option<String>,
    /// Offset in sectors into the file (FLAT only).
    pub offset: u64,
}

/// A parsed VMDK descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType`: the subformat.
    pub create_type: String,
    /// This disk's content ID.
    pub cid: Option<String>,
    /// The parent's content ID; `ffffffff` when there is no parent.
    pub parent_cid: Option<String>,
    /// File name of the parent (snapshot delta disks).
    pub parent_file_name_hint: Option<String>,
    /// Extents in order.
    pub extents: Vec<Extent>,
    /// The disk database (`ddb.*` keys, lower-cased, without the prefix).
    pub ddb: BTreeMap<String, String>,
}

/// Subformats `qemu-img` reads and this tool converts.
pub const SUPPORTED_SUBFORMATS: [&str; 6] = [
    "monolithicSparse",
    "streamOptimized",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "vmfs",
];

/// Subformats that describe raw device mappings.
pub const RDM_SUBFORMATS: [&str; 2] = ["vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap"];

impl Descriptor {
    /// Parse descriptor text (NUL padding after the text, as in embedded descriptors, is ignored).
    pub fn parse(text: &str) -> Result<Self, VmdkError> {
        let text = text.split('\0').next().unwrap_or_default();
        let mut create_type = None;
        let mut cid = None;
        let mut parent_cid = None;
        let mut parent_hint = None;
        let mut extents = Vec::new();
        let mut ddb = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                extents.push(parse_extent(line).ok_or_else(|| VmdkError::BadExtent {
                    line: i + 1,
                    text: line.to_owned(),
                })?);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            let value = value.trim().trim_matches('"').to_owned();
            match key.to_ascii_lowercase().as_str() {
                "createtype" => create_type = Some(value),
                "cid" => cid = Some(value.to_ascii_lowercase()),
                "parentcid" => parent_cid = Some(value.to_ascii_lowercase()),
                "parentfilenamehint" => parent_hint = Some(value),
                k if k.starts_with("ddb.") => {
                    ddb.insert(k["ddb.".len()..].to_owned(), value);
                }
                _ => {}
            }
        }
        let create_type = create_type.ok_or(VmdkError::NotADescriptor)?;
        if extents.is_empty() {
            return Err(VmdkError::NoExtents);
        }
        Ok(Self {
            create_type,
            cid,
            parent_cid,
            parent_file_name_hint: parent_hint,
            extents,
            ddb,
        })
    }

    /// Capacity of the disk in bytes: the sum of its extents, at most [`MAX_CAPACITY_BYTES`].
    pub fn capacity_bytes(&self) -> Result<u64, VmdkError> {
        let too_big = VmdkError::OutOfRange("the sum of the extents' sizes");
        let mut total: u64 = 0;
        for e in &self.extents {
            let bytes = e.sectors.checked_mul(SECTOR).ok_or(too_big.clone())?;
            total = total.checked_add(bytes).ok_or(too_big.clone())?;
        }
        if total > MAX_CAPACITY_BYTES {
            return Err(too_big);
        }
        Ok(total)
    }

    /// Check the descriptor against QEMU's own reading of `raw` (the bytes QEMU reads,
    /// up to the first NUL): QEMU takes the first `parentFileNameHint` anywhere, even in a
    /// comment, so a hint there must be the one this parser saw on a key line.
    pub fn check_qemu_parent(&self, raw: &[u8]) -> Result<(), VmdkError> {
        let Some(hint) = qemu_parent_hint(raw) else {
            return Ok(());
        };
        if self.parent_file_name_hint.as_deref() == Some(hint.as_str()) {
            Ok(())
        } else {
            Err(VmdkError::HiddenParentHint { hint })
        }
    }

    /// Whether this is a snapshot delta: it has a parent disk.
    pub fn has_parent(&self) -> bool {
        self.parent_file_name_hint.is_some()
            || self
                .parent_cid
                .as_deref()
                .is_some_and(|p| p != NO_PARENT_CID)
    }

    /// Whether this describes a raw device mapping.
    pub fn is_rdm(&self) -> bool {
        RDM_SUBFORMATS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&self.create_type))
            || self.extents.iter().any(|e| e.kind == ExtentKind::Rdm)
    }

    /// Refuse subformats that are neither convertible nor an RDM (which the advisor reports).
    pub fn check_supported(&self) -> Result<(), VmdkError> {
        if self.is_rdm()
            || SUPPORTED_SUBFORMATS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&self.create_type))
        {
            Ok(())
        } else {
            Err(VmdkError::UnsupportedSubformat(self.create_type.clone()))
        }
    }

    /// The adapter type the disk was created for (`lsilogic`, `ide`, ...), if recorded.
    pub fn adapter_type(&self) -> Option<&str> {
        self.ddb.get("adaptertype").map(String::as_str)
    }

    /// Whether the disk records an installed VMware Tools version.
    pub fn has_tools_version(&self) -> bool {
        self.ddb
            .get("toolsversion")
            .is_some_and(|v| v != "0" && !v.is_empty())
    }
}

/// The parent QEMU 7.2 would open for a descriptor (`vmdk_parent_open`): the first
/// `parentFileNameHint` anywhere before the first NUL, its value starting two bytes after
/// the key and ending at the next `"`. A hint with no closing quote is returned whole, so
/// the caller refuses it rather than ignores it.
pub fn qemu_parent_hint(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let text = String::from_utf8_lossy(&raw[..end]);
    let at = text.find(PARENT_HINT_KEY)?;
    let rest = text.get(at + PARENT_HINT_KEY.len()..).unwrap_or_default();
    let value: String = rest.chars().skip(2).take_while(|c| *c != '"').collect();
    Some(value)
}

/// `RW 8192 SPARSE "disk.vmdk"`, `RW 2048 FLAT "disk-flat.vmdk" 0`, `RW 100 ZERO`.
fn parse_extent(line: &str) -> Option<Extent> {
    let (head, rest) = match line.find('"') {
        Some(q) => (&line[..q], Some(&line[q..])),
        None => (line, None),
    };
    let mut words = head.split_whitespace();
    let access = match words.next()? {
        "RW" => Access::Rw,
        "RDONLY" => Access::Rdonly,
        "NOACCESS" => Access::NoAccess,
        _ => return None,
    };
    let sectors: u64 = words.next()?.parse().ok()?;
    let kind = match words.next()?.to_ascii_uppercase().as_str() {
        "FLAT" => ExtentKind::Flat,
        "SPARSE" | "VMFSSPARSE" => ExtentKind::Sparse,
        "ZERO" => ExtentKind::Zero,
        "VMFSRDM" | "VMFSRAW" => ExtentKind::Rdm,
        "VMFS" => ExtentKind::Vmfs,
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    let (file, offset) = match rest {
        None if kind == ExtentKind::Zero => (None, 0),
        None => return None,
        Some(r) => {
            let r = &r[1..];
            let end = r.find('"')?;
            let file = r[..end].to_owned();
            let tail = r[end + 1..].trim();
            let offset = if tail.is_empty() {
                0
            } else {
                tail.parse().ok()?
            };
            (Some(file), offset)
        }
    };
    Some(Extent {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

/// The fields of a hosted sparse extent header (the first 512 bytes) that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1, 2 or 3).
    pub version: u32,
    /// Flags (compression, markers, ...).
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    /// Sector of the embedded descriptor (0 when there is none).
    pub descriptor_offset: u64,
    /// Size of the embedded descriptor in sectors.
    pub descriptor_size: u64,
    /// Grain table entries per grain table.
    pub num_gtes_per_gt: u32,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl SparseHeader {
    /// Whether a buffer starts with the sparse magic.
    pub fn is_sparse(buf: &[u8]) -> bool {
        buf.len() >= 4 && le_u32(buf, 0) == SPARSE_MAGIC
    }

    /// Parse and sanity-check a 512-byte header.
    pub fn parse(buf: &[u8]) -> Result<Self, VmdkError> {
        if buf.len() < SECTOR as usize || !Self::is_sparse(buf) {
            return Err(VmdkError::BadHeader("no KDMV magic"));
        }
        let h = Self {
            version: le_u32(buf, 4),
            flags: le_u32(buf, 8),
            capacity: le_u64(buf, 12),
            grain_size: le_u64(buf, 20),
            descriptor_offset: le_u64(buf, 28),
            descriptor_size: le_u64(buf, 36),
            num_gtes_per_gt: le_u32(buf, 44),
            gd_offset: le_u64(buf, 56),
            overhead: le_u64(buf, 64),
        };
        if !(1..=3).contains(&h.version) {
            return Err(VmdkError::BadHeader("unknown version"));
        }
        if h.grain_size == 0 || !h.grain_size.is_power_of_two() || h.grain_size > 128 {
            return Err(VmdkError::BadHeader(
                "grain size is not a power of two up to 64 KiB",
            ));
        }
        if h.num_gtes_per_gt == 0 || h.num_gtes_per_gt > 4096 {
            return Err(VmdkError::BadHeader("grain table size out of range"));
        }
        if h.descriptor_size > 4096 {
            return Err(VmdkError::BadHeader(
                "embedded descriptor larger than 2 MiB",
            ));
        }
        let capacity = h
            .capacity
            .checked_mul(SECTOR)
            .filter(|b| *b <= MAX_CAPACITY_BYTES);
        if capacity.is_none() {
            return Err(VmdkError::OutOfRange("header capacity"));
        }
        if h.descriptor_offset.checked_mul(SECTOR).is_none() {
            return Err(VmdkError::OutOfRange("embedded descriptor offset"));
        }
        if h.gd_offset != GD_AT_END && h.gd_offset.checked_mul(SECTOR).is_none() {
            return Err(VmdkError::OutOfRange("grain directory offset"));
        }
        Ok(h)
    }

    /// Byte offset of the embedded descriptor (checked in [`Self::parse`]).
    pub fn descriptor_byte_offset(&self) -> Result<u64, VmdkError> {
        self.descriptor_offset
            .checked_mul(SECTOR)
            .ok_or(VmdkError::OutOfRange("embedded descriptor offset"))
    }

    /// Whether grains are compressed and framed by markers (streamOptimized).
    pub fn is_stream_optimized(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Entries in the grain directory (`None` when a field is zero or the product overflows;
    /// [`Self::parse`] refuses both).
    pub fn gd_entries(&self) -> Option<u64> {
        let per_gt = self
            .grain_size
            .checked_mul(u64::from(self.num_gtes_per_gt))
            .filter(|n| *n > 0)?;
        Some(self.capacity.div_ceil(per_gt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = "# Disk DescriptorFile\nversion=1\nCID=6062ed4b\nparentCID=ffffffff\n\
        createType=\"monolithicFlat\"\n\n# Extent description\nRW 12288 FLAT \"disk-flat.vmdk\" 0\n\n\
        # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"lsilogic\"\n\
        ddb.toolsVersion = \"2147483647\"\n";

    #[test]
    fn a_flat_descriptor_lists_its_extent_and_disk_database() {
        let d = Descriptor::parse(FLAT).unwrap();
        assert_eq!(d.create_type, "monolithicFlat");
        assert_eq!(d.extents.len(), 1);
        assert_eq!(d.extents[0].kind, ExtentKind::Flat);
        assert_eq!(d.extents[0].file.as_deref(), Some("disk-flat.vmdk"));
        assert_eq!(d.capacity_bytes(), Ok(12288 * 512));
        assert_eq!(d.adapter_type(), Some("lsilogic"));
        assert!(!d.has_parent());
        assert!(d.has_tools_version());
        d.check_supported().unwrap();
    }

    #[test]
    fn nul_padding_after_an_embedded_descriptor_is_ignored() {
        let padded = format!("{FLAT}\0\0\0garbage");
        assert_eq!(Descriptor::parse(&padded).unwrap().extents.len(), 1);
    }

    #[test]
    fn multi_extent_zero_and_spaced_file_names_parse() {
        let text = "createType=\"twoGbMaxExtentFlat\"\nRW 4 FLAT \"my disk-f001.vmdk\" 0\n\
                    RDONLY 8 FLAT \"my disk-f002.vmdk\" 16\nRW 2 ZERO\n";
        let d = Descriptor::parse(text).unwrap();
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[1].file.as_deref(), Some("my disk-f002.vmdk"));
        assert_eq!(d.extents[1].offset, 16);
        assert_eq!(d.extents[1].access, Access::Rdonly);
        assert_eq!(d.extents[2].file, None);
        assert_eq!(d.capacity_bytes(), Ok(14 * 512));
    }

    #[test]
    fn a_snapshot_delta_has_a_parent() {
        let text = "CID=1\nparentCID=abcdef01\nparentFileNameHint=\"base.vmdk\"\n\
                    createType=\"monolithicSparse\"\nRW 8 SPARSE \"delta.vmdk\"\n";
        let d = Descriptor::parse(text).unwrap();
        assert!(d.has_parent());
        assert_eq!(d.parent_file_name_hint.as_deref(), Some("base.vmdk"));
    }

    #[test]
    fn rdm_and_unknown_subformats_are_told_apart() {
        let rdm = Descriptor::parse(
            "createType=\"vmfsPassthroughRawDeviceMap\"\nRW 8 VMFSRDM \"x-rdmp.vmdk\"\n",
        )
        .unwrap();
        assert!(rdm.is_rdm());
        rdm.check_supported().unwrap();
        let se = Descriptor::parse("createType=\"seSparse\"\nRW 8 SPARSE \"x.vmdk\"\n").unwrap();
        assert_eq!(
            se.check_supported(),
            Err(VmdkError::UnsupportedSubformat("seSparse".into()))
        );
    }

    #[test]
    fn malformed_extents_and_missing_create_type_are_errors() {
        assert!(matches!(
            Descriptor::parse("createType=\"monolithicFlat\"\nRW many FLAT \"a\" 0\n"),
            Err(VmdkError::BadExtent { line: 2, .. })
        ));
        assert_eq!(
            Descriptor::parse("RW 8 FLAT \"a\" 0\n"),
            Err(VmdkError::NotADescriptor)
        );
        assert_eq!(
            Descriptor::parse("createType=\"monolithicFlat\"\n"),
            Err(VmdkError::NoExtents)
        );
    }

    fn header(version: u32, grain: u64) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&SPARSE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&version.to_le_bytes());
        b[12..20].copy_from_slice(&2048u64.to_le_bytes());
        b[20..28].copy_from_slice(&grain.to_le_bytes());
        b[28..36].copy_from_slice(&1u64.to_le_bytes());
        b[36..44].copy_from_slice(&20u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b[56..64].copy_from_slice(&21u64.to_le_bytes());
        b[64..72].copy_from_slice(&128u64.to_le_bytes());
        b
    }

    #[test]
    fn a_sparse_header_is_read_and_checked() {
        let h = SparseHeader::parse(&header(1, 128)).unwrap();
        assert_eq!(
            (h.capacity, h.grain_size, h.descriptor_offset, h.gd_offset),
            (2048, 128, 1, 21)
        );
        assert_eq!(h.gd_entries(), Some(1));
        assert!(!h.is_stream_optimized());
        assert!(SparseHeader::parse(&header(9, 128)).is_err());
        assert!(SparseHeader::parse(&header(1, 100)).is_err());
        assert!(SparseHeader::parse(&[0u8; 512]).is_err());
    }
}
