//! RVTools column names, matched tolerantly, and the parsing of one cell.
//!
//! RVTools renames columns between versions ("Provisioned MB" became "Provisioned MiB",
//! "Num CPUs" became "CPUs", exports re-saved by other tools use "Name" for "VM"). A header is
//! normalised (case, spaces and punctuation dropped, a trailing size unit split off) and looked
//! up in a per-sheet alias table; the unit found in the header scales the values, so
//! "Capacity GiB" and "Capacity MiB" both read as MiB. Headers not in the table are reported,
//! never guessed. Pure: no I/O.
//!
//! The canonical names are those of RVTools 4.x exports (sheet by sheet, as listed in
//! `Yoobuu/Kylow: vmware_rvtools_exporter/out/compare/report.md`, a comparison of a real
//! RVTools 4.x workbook with 93 vInfo columns); the older spellings are RVTools 3.x ones
//! ("Provisioned MB", "In Use MB", "Capacity MB", "Num CPUs").

use serde::{Deserialize, Serialize};

/// The RVTools sheets (tabs) the planner reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SheetKind {
    /// One row per VM: the inventory's spine (required).
    #[serde(rename = "vInfo")]
    VInfo,
    /// One row per virtual disk.
    #[serde(rename = "vDisk")]
    VDisk,
    /// One row per network adapter.
    #[serde(rename = "vNetwork")]
    VNetwork,
    /// One row per VM: sockets and cores.
    #[serde(rename = "vCPU")]
    VCpu,
    /// One row per VM: memory size and usage.
    #[serde(rename = "vMemory")]
    VMemory,
    /// One row per snapshot.
    #[serde(rename = "vSnapshot")]
    VSnapshot,
    /// One row per USB device.
    #[serde(rename = "vUSB")]
    VUsb,
}

impl SheetKind {
    /// Every sheet, vInfo first.
    pub const ALL: [SheetKind; 7] = [
        Self::VInfo,
        Self::VDisk,
        Self::VNetwork,
        Self::VCpu,
        Self::VMemory,
        Self::VSnapshot,
        Self::VUsb,
    ];

    /// The tab's name as RVTools writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::VInfo => "vInfo",
            Self::VDisk => "vDisk",
            Self::VNetwork => "vNetwork",
            Self::VCpu => "vCPU",
            Self::VMemory => "vMemory",
            Self::VSnapshot => "vSnapshot",
            Self::VUsb => "vUSB",
        }
    }

    /// Whether a sheet or CSV file name (`vInfo`, `RVTools_tabvInfo.csv`) is this tab.
    pub fn matches_name(self, name: &str) -> bool {
        let stem = name
            .rsplit_once('.')
            .filter(|(_, ext)| ext.eq_ignore_ascii_case("csv"))
            .map_or(name, |(s, _)| s);
        let norm = normalise(stem);
        norm.ends_with(&normalise(self.name()))
    }
}

/// A column the planner understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    /// The VM's name (every sheet's key).
    Vm,
    /// poweredOn, poweredOff, suspended.
    Powerstate,
    /// Whether the row is a template.
    Template,
    /// Whether the row is a Site Recovery Manager placeholder (a shadow of a VM elsewhere).
    SrmPlaceholder,
    /// vCPUs.
    Cpus,
    /// Configured memory (vInfo).
    Memory,
    /// Provisioned storage (vInfo).
    Provisioned,
    /// Storage in use (vInfo).
    InUse,
    /// Inventory folder.
    Folder,
    /// Resource pool.
    ResourcePool,
    /// vSphere cluster.
    Cluster,
    /// ESXi host.
    Host,
    /// Datacenter.
    Datacenter,
    /// Free-text notes.
    Annotation,
    /// Guest OS from the .vmx.
    OsConfig,
    /// Guest OS as VMware Tools reports it.
    OsTools,
    /// bios or efi.
    Firmware,
    /// EFI secure boot.
    SecureBoot,
    /// Virtual hardware version.
    HwVersion,
    /// Sockets (vCPU).
    Sockets,
    /// Cores per socket (vCPU).
    CoresPerSocket,
    /// Memory size (vMemory).
    MemorySize,
    /// Memory the guest actively uses (vMemory).
    MemoryActive,
    /// Memory consumed on the host (vMemory).
    MemoryConsumed,
    /// Disk name, e.g. "Hard disk 1" (vDisk).
    Disk,
    /// Disk capacity (vDisk).
    Capacity,
    /// persistent, independent_persistent, ... (vDisk).
    DiskMode,
    /// sharingNone, sharingMultiWriter (vDisk).
    SharingMode,
    /// Whether the disk is a raw device mapping (vDisk).
    Raw,
    /// The disk's controller, e.g. "SCSI controller 0" (vDisk).
    Controller,
    /// Unit number on the controller (vDisk).
    Unit,
    /// Bus sharing of the disk's controller (vDisk).
    SharedBus,
    /// Adapter name, e.g. "Network adapter 1" (vNetwork).
    NicLabel,
    /// Adapter model: Vmxnet3, E1000E, ... (vNetwork).
    Adapter,
    /// Port group (vNetwork).
    Network,
    /// MAC address (vNetwork).
    Mac,
    /// DirectPath I/O (passthrough) of the adapter (vNetwork).
    DirectPathIo,
    /// Snapshot name (vSnapshot).
    SnapshotName,
    /// USB device node (vUSB).
    UsbDevice,
}

/// A size unit found at the end of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// Kibibytes (RVTools writes "KB" and means KiB).
    KiB,
    /// Mebibytes.
    MiB,
    /// Gibibytes.
    GiB,
    /// Tebibytes.
    TiB,
}

impl Unit {
    /// Convert a value in this unit to MiB, rounding up; `None` on overflow.
    pub fn to_mib(self, v: u64) -> Option<u64> {
        match self {
            Self::KiB => Some(v.div_ceil(1024)),
            Self::MiB => Some(v),
            Self::GiB => v.checked_mul(1024),
            Self::TiB => v.checked_mul(1024 * 1024),
        }
    }
}

/// Lower case, letters and digits only.
pub fn normalise(header: &str) -> String {
    header
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Split a normalised header into its base and a trailing unit (`provisionedmib` →
/// `provisioned`, MiB). A header that is only a unit keeps it as its base.
fn split_unit(norm: &str) -> (&str, Option<Unit>) {
    const SUFFIXES: [(&str, Unit); 8] = [
        ("kib", Unit::KiB),
        ("mib", Unit::MiB),
        ("gib", Unit::GiB),
        ("tib", Unit::TiB),
        ("kb", Unit::KiB),
        ("mb", Unit::MiB),
        ("gb", Unit::GiB),
        ("tb", Unit::TiB),
    ];
    for (suffix, unit) in SUFFIXES {
        if let Some(base) = norm.strip_suffix(suffix)
            && !base.is_empty()
        {
            return (base, Some(unit));
        }
    }
    (norm, None)
}

/// The alias table: for each sheet, the fields and their normalised spellings (unit removed).
fn aliases(sheet: SheetKind) -> &'static [(Field, &'static [&'static str])] {
    use Field::*;
    const COMMON: [(Field, &[&str]); 10] = [
        (Vm, &["vm", "vmname", "virtualmachine"]),
        (Powerstate, &["powerstate"]),
        (Template, &["template"]),
        (Folder, &["folder", "vmfolder"]),
        (ResourcePool, &["resourcepool"]),
        (Cluster, &["cluster", "clustername"]),
        (Host, &["host", "esxhost", "hostname"]),
        (Datacenter, &["datacenter", "datacentre"]),
        (Annotation, &["annotation", "notes"]),
        (OsConfig, &["osaccordingtotheconfigurationfile", "guestos"]),
    ];
    const VINFO: [(Field, &[&str]); 20] = [
        COMMON[0],
        COMMON[1],
        COMMON[2],
        COMMON[3],
        COMMON[4],
        COMMON[5],
        COMMON[6],
        COMMON[7],
        COMMON[8],
        COMMON[9],
        (Vm, &["name"]),
        (SrmPlaceholder, &["srmplaceholder"]),
        (Cpus, &["cpus", "numcpus", "numcpu", "vcpus", "cpu"]),
        (Memory, &["memory", "memorysize", "ram"]),
        (
            Provisioned,
            &["provisioned", "provisionedspace", "provisionedstorage"],
        ),
        (InUse, &["inuse", "inusespace", "usedspace"]),
        (OsTools, &["osaccordingtothevmwaretools", "toolsos"]),
        (Firmware, &["firmware"]),
        (SecureBoot, &["efisecureboot", "secureboot"]),
        (HwVersion, &["hwversion", "hardwareversion"]),
    ];
    const VDISK: [(Field, &[&str]); 11] = [
        COMMON[0],
        (Vm, &["name"]),
        (Disk, &["disk", "diskname"]),
        (Capacity, &["capacity", "disksize", "size"]),
        (DiskMode, &["diskmode", "mode"]),
        (SharingMode, &["sharingmode", "sharing"]),
        (Raw, &["raw", "rdm"]),
        (Controller, &["controller"]),
        (Unit, &["unit", "unitnumber"]),
        (SharedBus, &["sharedbus"]),
        COMMON[3],
    ];
    const VNETWORK: [(Field, &[&str]); 7] = [
        COMMON[0],
        (Vm, &["name"]),
        (NicLabel, &["niclabel", "nic"]),
        // Not "Type": in RVTools that is the MAC address type (assigned, generated).
        (Adapter, &["adapter", "adaptertype"]),
        (Network, &["network", "portgroup"]),
        (Mac, &["macaddress", "mac"]),
        (DirectPathIo, &["directpathio", "directpath"]),
    ];
    const VCPU: [(Field, &[&str]); 5] = [
        COMMON[0],
        (Vm, &["name"]),
        (Cpus, &["cpus", "numcpus", "vcpus"]),
        (Sockets, &["sockets", "numsockets"]),
        (
            CoresPerSocket,
            &["coresps", "corespersocket", "corespersockets"],
        ),
    ];
    const VMEMORY: [(Field, &[&str]); 5] = [
        COMMON[0],
        (Vm, &["name"]),
        (MemorySize, &["size", "memory", "memorysize"]),
        (MemoryActive, &["active", "activememory"]),
        (MemoryConsumed, &["consumed", "consumedmemory"]),
    ];
    // In vSnapshot "Name" is the snapshot's name, never the VM's.
    const VSNAPSHOT: [(Field, &[&str]); 2] = [COMMON[0], (SnapshotName, &["name", "snapshot"])];
    const VUSB: [(Field, &[&str]); 3] = [
        COMMON[0],
        (Vm, &["name"]),
        (UsbDevice, &["devicenode", "device"]),
    ];
    match sheet {
        SheetKind::VInfo => &VINFO,
        SheetKind::VDisk => &VDISK,
        SheetKind::VNetwork => &VNETWORK,
        SheetKind::VCpu => &VCPU,
        SheetKind::VMemory => &VMEMORY,
        SheetKind::VSnapshot => &VSNAPSHOT,
        SheetKind::VUsb => &VUSB,
    }
}

/// The field a header names on a sheet, and the unit its header states.
pub fn match_column(sheet: SheetKind, header: &str) -> Option<(Field, Option<Unit>)> {
    let norm = normalise(header);
    let (base, unit) = split_unit(&norm);
    aliases(sheet)
        .iter()
        .find(|(_, names)| names.contains(&base) || (unit.is_some() && names.contains(&&*norm)))
        .map(|(f, names)| {
            // A header that is an alias with nothing split off ("Disks" is not "Dis"+"ks").
            if names.contains(&&*norm) {
                (*f, None)
            } else {
                (*f, unit)
            }
        })
}

/// Where each field sits in a sheet's header row, and the headers not recognised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    /// Column index and unit of each recognised field (the first column wins).
    pub fields: std::collections::BTreeMap<Field, (usize, Option<Unit>)>,
    /// Known RVTools columns of the tab that the planner does not need.
    pub known_unused: Vec<String>,
    /// Headers that are neither a field nor a known RVTools column, in sheet order (custom
    /// attributes land here, and columns of other RVTools versions).
    pub unrecognised: Vec<String>,
    /// Headers that named a field already taken by an earlier column.
    pub duplicates: Vec<String>,
}

impl HeaderMap {
    /// Map a header row.
    pub fn new(sheet: SheetKind, headers: &[String]) -> Self {
        let mut map = Self::default();
        for (i, h) in headers.iter().enumerate() {
            if h.trim().is_empty() {
                continue;
            }
            match match_column(sheet, h) {
                Some((field, unit)) => {
                    if let std::collections::btree_map::Entry::Vacant(e) = map.fields.entry(field) {
                        e.insert((i, unit));
                    } else {
                        map.duplicates.push(h.clone());
                    }
                }
                None if super::known::is_known(sheet, h) => map.known_unused.push(h.clone()),
                None => map.unrecognised.push(h.clone()),
            }
        }
        map
    }

    /// The trimmed text of a field in a row, when the column exists and is not empty.
    pub fn text<'r>(&self, row: &'r [String], field: Field) -> Option<&'r str> {
        let (i, _) = self.fields.get(&field)?;
        let t = row.get(*i)?.trim();
        (!t.is_empty()).then_some(t)
    }

    /// The index of the column holding a header, for columns read by name (attributes).
    pub fn index_of(headers: &[String], name: &str) -> Option<usize> {
        let want = normalise(name);
        headers.iter().position(|h| normalise(h) == want)
    }
}

/// Why a cell does not hold the number it should.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    /// Not a number at all.
    #[error("{0:?} is not a number")]
    NotANumber(String),
    /// A formula kept as text (a CSV saved without values).
    #[error("{0:?} is a formula, not its value; export the values")]
    Formula(String),
    /// Below zero.
    #[error("{0:?} is negative")]
    Negative(String),
    /// Beyond anything a VM can have.
    #[error("{0:?} is larger than {1}")]
    TooLarge(String, u64),
}

/// Largest memory or disk size accepted, in MiB (1 EiB).
pub const MAX_MIB: u64 = 1 << 40;
/// Largest count accepted (vCPUs, sockets, cores).
pub const MAX_COUNT: u64 = 1 << 20;

/// Remove digit-group separators: `4,096`, `4 096`, `4'096`, `4.096,5` (decimal comma).
fn strip_grouping(t: &str) -> String {
    let t: String = t
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\''))
        .collect();
    let has_dot = t.contains('.');
    let comma_groups = t.split(',').skip(1).all(|g| g.len() == 3);
    if t.contains(',') && (has_dot || comma_groups) {
        if has_dot && t.rfind(',') > t.rfind('.') {
            // 4.096,5: dots group, the comma is the decimal mark.
            t.replace('.', "").replace(',', ".")
        } else {
            t.replace(',', "")
        }
    } else {
        t.replace(',', ".")
    }
}

/// A non-negative number, rounded up to a whole, at most `max`; `None` for an empty cell.
pub fn parse_whole(raw: &str, max: u64) -> Result<Option<u64>, CellError> {
    let t = raw.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.starts_with('=') {
        return Err(CellError::Formula(t.into()));
    }
    let t = strip_grouping(t);
    if let Some(rest) = t.strip_prefix('-') {
        let is_zero = rest.chars().all(|c| c == '0' || c == '.');
        return if is_zero && t.len() > 1 {
            Ok(Some(0))
        } else {
            Err(CellError::Negative(raw.trim().into()))
        };
    }
    let t = t.strip_prefix('+').unwrap_or(&t);
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
        return Err(CellError::NotANumber(raw.trim().into()));
    }
    let too_large = || CellError::TooLarge(raw.trim().into(), max);
    let whole: u64 = if int.is_empty() {
        0
    } else if int.len() > 20 {
        return Err(too_large());
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let up = u64::from(frac.chars().any(|c| c != '0'));
    let v = whole.checked_add(up).ok_or_else(too_large)?;
    if v > max {
        return Err(too_large());
    }
    Ok(Some(v))
}

/// A size in MiB from a cell in `unit` (MiB when the header states none).
pub fn parse_mib(raw: &str, unit: Option<Unit>) -> Result<Option<u64>, CellError> {
    let unit = unit.unwrap_or(Unit::MiB);
    // Accept the raw value up to what still fits MAX_MIB after scaling.
    let max_raw = match unit {
        Unit::KiB => MAX_MIB.saturating_mul(1024),
        Unit::MiB => MAX_MIB,
        Unit::GiB => MAX_MIB / 1024,
        Unit::TiB => MAX_MIB / (1024 * 1024),
    };
    let Some(v) = parse_whole(raw, max_raw)? else {
        return Ok(None);
    };
    unit.to_mib(v)
        .filter(|m| *m <= MAX_MIB)
        .map(Some)
        .ok_or_else(|| CellError::TooLarge(raw.trim().into(), MAX_MIB))
}

/// A yes/no cell: True/False, Yes/No, 1/0, On/Off, Enabled/Disabled (any case).
pub fn parse_bool(raw: &str) -> Option<bool> {
    match normalise(raw).as_str() {
        "true" | "yes" | "1" | "on" | "enabled" | "y" => Some(true),
        "false" | "no" | "0" | "off" | "disabled" | "n" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rvtools_spellings_of_several_versions_name_the_same_field() {
        let cases = [
            (SheetKind::VInfo, "VM", Field::Vm),
            (SheetKind::VInfo, "Name", Field::Vm),
            (SheetKind::VInfo, "CPUs", Field::Cpus),
            (SheetKind::VInfo, "Num CPUs", Field::Cpus),
            (SheetKind::VInfo, "Memory", Field::Memory),
            (SheetKind::VInfo, "Memory MB", Field::Memory),
            (SheetKind::VInfo, "Provisioned MB", Field::Provisioned),
            (SheetKind::VInfo, "Provisioned MiB", Field::Provisioned),
            (SheetKind::VInfo, "provisioned_mib", Field::Provisioned),
            (SheetKind::VInfo, "In Use MiB", Field::InUse),
            (
                SheetKind::VInfo,
                "OS according to the configuration file",
                Field::OsConfig,
            ),
            (SheetKind::VInfo, "EFI Secure boot", Field::SecureBoot),
            (SheetKind::VDisk, "Capacity MiB", Field::Capacity),
            (SheetKind::VDisk, "Capacity MB", Field::Capacity),
            (SheetKind::VDisk, "Unit #", Field::Unit),
            (SheetKind::VCpu, "Cores p/s", Field::CoresPerSocket),
            (SheetKind::VMemory, "Size MiB", Field::MemorySize),
            (SheetKind::VNetwork, "Mac Address", Field::Mac),
            (SheetKind::VNetwork, "Direct Path IO", Field::DirectPathIo),
            (SheetKind::VSnapshot, "Name", Field::SnapshotName),
        ];
        for (sheet, header, field) in cases {
            assert_eq!(
                match_column(sheet, header).map(|m| m.0),
                Some(field),
                "{sheet:?} {header:?}"
            );
        }
    }

    #[test]
    fn the_header_unit_scales_and_unknown_headers_are_kept() {
        assert_eq!(
            match_column(SheetKind::VDisk, "Capacity GB"),
            Some((Field::Capacity, Some(Unit::GiB)))
        );
        assert_eq!(match_column(SheetKind::VInfo, "Disks"), None);
        assert_eq!(match_column(SheetKind::VInfo, "Heartbeat"), None);
        let headers: Vec<String> = ["VM", "CPUs", "Application Type", "Num CPUs", "", "DNS Name"]
            .map(String::from)
            .into();
        let map = HeaderMap::new(SheetKind::VInfo, &headers);
        assert_eq!(map.unrecognised, vec!["Application Type".to_string()]);
        assert_eq!(map.known_unused, vec!["DNS Name".to_string()]);
        assert_eq!(map.duplicates, vec!["Num CPUs".to_string()]);
        assert_eq!(map.fields[&Field::Cpus], (1, None));
    }

    #[test]
    fn csv_file_names_of_rvtools_name_their_tab() {
        assert!(SheetKind::VInfo.matches_name("RVTools_tabvInfo.csv"));
        assert!(SheetKind::VInfo.matches_name("vinfo.CSV"));
        assert!(SheetKind::VCpu.matches_name("vCPU"));
        assert!(!SheetKind::VInfo.matches_name("vDisk.csv"));
    }

    #[test]
    fn numbers_in_the_forms_spreadsheets_write_them() {
        assert_eq!(parse_whole("4,096", MAX_MIB), Ok(Some(4096)));
        assert_eq!(parse_whole("4 096", MAX_MIB), Ok(Some(4096)));
        assert_eq!(parse_whole("4096.0", MAX_MIB), Ok(Some(4096)));
        assert_eq!(parse_whole("1.5", MAX_MIB), Ok(Some(2)));
        assert_eq!(parse_whole("1,5", MAX_MIB), Ok(Some(2)));
        assert_eq!(parse_whole("4.096,5", MAX_MIB), Ok(Some(4097)));
        assert_eq!(parse_whole("", MAX_MIB), Ok(None));
        assert_eq!(parse_whole("-0", MAX_MIB), Ok(Some(0)));
        assert!(matches!(parse_whole("-4", 9), Err(CellError::Negative(_))));
        assert!(matches!(
            parse_whole("=A1*2", 9),
            Err(CellError::Formula(_))
        ));
        assert!(matches!(
            parse_whole("n/a", 9),
            Err(CellError::NotANumber(_))
        ));
        assert!(matches!(
            parse_whole("1e9", 9),
            Err(CellError::NotANumber(_))
        ));
        assert!(matches!(
            parse_whole("99999999999999999999999999", MAX_MIB),
            Err(CellError::TooLarge(..))
        ));
        assert_eq!(parse_mib("2", Some(Unit::GiB)), Ok(Some(2048)));
        assert_eq!(parse_mib("1025", Some(Unit::KiB)), Ok(Some(2)));
        assert!(matches!(
            parse_mib("2000000", Some(Unit::TiB)),
            Err(CellError::TooLarge(..))
        ));
    }
}
