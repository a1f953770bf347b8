//! An RVTools export as a list of VMs: vInfo rows joined with their vDisk, vNetwork, vCPU,
//! vMemory, vSnapshot and vUSB rows by VM name.
//!
//! A cell that does not hold what its column promises (a formula, text in a number column, a
//! negative or absurd size) is reported with its tab, row and column, and read as absent; it
//! never becomes a number by accident. Pure: works on [`Tables`] already read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::columns::{
    CellError, Field, HeaderMap, MAX_COUNT, SheetKind, parse_bool, parse_mib, parse_whole,
};
use super::table::{Sheet, Tables};

/// A virtual disk from vDisk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvDisk {
    /// "Hard disk 1".
    pub label: String,
    /// Capacity in MiB.
    pub capacity_mib: u64,
    /// persistent, independent_persistent, ...
    pub mode: Option<String>,
    /// Shared with other VMs (multi-writer sharing or a shared SCSI bus).
    pub shared: bool,
    /// A raw device mapping.
    pub raw: bool,
    /// "SCSI controller 0", "SATA controller 0", "IDE 0", "NVME controller 0".
    pub controller: Option<String>,
    /// Unit number on the controller.
    pub unit: Option<u32>,
}

/// A network adapter from vNetwork.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvNic {
    /// "Network adapter 1".
    pub label: String,
    /// Vmxnet3, E1000E, ...
    pub adapter: Option<String>,
    /// Port group.
    pub network: Option<String>,
    /// MAC address.
    pub mac: Option<String>,
    /// DirectPath I/O enabled.
    pub direct_path_io: bool,
}

/// One VM of the inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvVm {
    /// Its vSphere name.
    pub name: String,
    /// poweredOn, poweredOff, suspended.
    pub powerstate: Option<String>,
    /// vCPUs (0 when the inventory does not say).
    pub vcpus: u32,
    /// Cores per socket (1 when not given).
    pub cores_per_socket: u32,
    /// Configured memory in MiB (0 when the inventory does not say).
    pub memory_mib: u64,
    /// Provisioned storage in MiB.
    pub provisioned_mib: Option<u64>,
    /// Storage in use in MiB.
    pub in_use_mib: Option<u64>,
    /// Guest memory actively used (vMemory "Active"), MiB.
    pub memory_active_mib: Option<u64>,
    /// Host memory consumed (vMemory "Consumed"), MiB.
    pub memory_consumed_mib: Option<u64>,
    /// Inventory folder.
    pub folder: Option<String>,
    /// Resource pool.
    pub resource_pool: Option<String>,
    /// vSphere cluster.
    pub cluster: Option<String>,
    /// ESXi host.
    pub host: Option<String>,
    /// Datacenter.
    pub datacenter: Option<String>,
    /// Notes.
    pub annotation: Option<String>,
    /// Guest OS (configuration file, else VMware Tools).
    pub guest_os: Option<String>,
    /// Whether VMware Tools reported a guest OS (Tools are installed and running).
    pub tools_running: bool,
    /// bios or efi.
    pub firmware: Option<String>,
    /// EFI secure boot.
    pub secure_boot: bool,
    /// Virtual hardware version.
    pub hw_version: Option<String>,
    /// Disks (vDisk).
    pub disks: Vec<InvDisk>,
    /// Adapters (vNetwork).
    pub nics: Vec<InvNic>,
    /// Snapshots (vSnapshot rows).
    pub snapshots: u32,
    /// USB devices (vUSB rows).
    pub usb_devices: Vec<String>,
    /// Values of vInfo columns the planner does not know (custom attributes), by header.
    pub attributes: BTreeMap<String, String>,
}

/// What the column matcher made of one tab.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnReport {
    /// The tab.
    pub sheet: String,
    /// Headers recognised, as written.
    pub recognised: Vec<String>,
    /// Known RVTools columns the planner does not need.
    pub known_unused: Vec<String>,
    /// Headers not recognised (vInfo's are kept as attributes for tenant rules).
    pub unrecognised: Vec<String>,
    /// Headers naming a field an earlier column already gave.
    pub duplicates: Vec<String>,
}

/// A cell or row that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowProblem {
    /// Tab and file.
    pub origin: String,
    /// Row number as a spreadsheet shows it (the header is row 1).
    pub row: usize,
    /// The VM, when known.
    pub vm: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The whole inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// The VMs, in vInfo order (templates left out).
    pub vms: Vec<InvVm>,
    /// Templates and SRM placeholders left out.
    pub templates: Vec<String>,
    /// The column matcher's report, per tab read.
    pub columns: Vec<ColumnReport>,
    /// Tabs the planner reads that were not in the export.
    pub missing_tabs: Vec<String>,
    /// Tabs present but not read.
    pub ignored_tabs: Vec<String>,
    /// Cells and rows that could not be used.
    pub problems: Vec<RowProblem>,
}

/// Reads one tab's rows with its header map, collecting problems.
struct Rows<'a> {
    sheet: &'a Sheet,
    map: HeaderMap,
    kind: SheetKind,
}

impl Rows<'_> {
    fn problem(&self, out: &mut Vec<RowProblem>, i: usize, vm: Option<&str>, message: String) {
        out.push(RowProblem {
            origin: self.sheet.origin.clone(),
            row: i + 2,
            vm: vm.map(str::to_string),
            message,
        });
    }

    fn cell_err(&self, out: &mut Vec<RowProblem>, i: usize, vm: &str, f: Field, e: &CellError) {
        let header = self
            .map
            .fields
            .get(&f)
            .and_then(|(c, _)| self.sheet.headers.get(*c))
            .map_or("?", String::as_str);
        self.problem(
            out,
            i,
            Some(vm),
            format!("{} {header}: {e}", self.kind.name()),
        );
    }

    fn mib(&self, out: &mut Vec<RowProblem>, i: usize, vm: &str, f: Field) -> Option<u64> {
        let unit = self.map.fields.get(&f)?.1;
        let text = self.map.text(&self.sheet.rows[i], f)?;
        parse_mib(text, unit)
            .inspect_err(|e| self.cell_err(out, i, vm, f, e))
            .ok()
            .flatten()
    }

    fn count(&self, out: &mut Vec<RowProblem>, i: usize, vm: &str, f: Field) -> Option<u32> {
        let text = self.map.text(&self.sheet.rows[i], f)?;
        parse_whole(text, MAX_COUNT)
            .inspect_err(|e| self.cell_err(out, i, vm, f, e))
            .ok()
            .flatten()
            .and_then(|v| u32::try_from(v).ok())
    }

    fn text(&self, i: usize, f: Field) -> Option<String> {
        self.map.text(&self.sheet.rows[i], f).map(str::to_string)
    }

    fn flag(&self, i: usize, f: Field) -> bool {
        self.map
            .text(&self.sheet.rows[i], f)
            .and_then(parse_bool)
            .unwrap_or(false)
    }
}

/// Build the inventory from the tabs read.
pub fn build(tables: &Tables) -> Inventory {
    let mut inv = Inventory {
        ignored_tabs: tables.ignored.clone(),
        ..Inventory::default()
    };
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for kind in SheetKind::ALL {
        let Some(sheet) = tables.sheets.get(&kind) else {
            inv.missing_tabs.push(kind.name().into());
            continue;
        };
        let rows = Rows {
            sheet,
            map: HeaderMap::new(kind, &sheet.headers),
            kind,
        };
        inv.columns.push(column_report(&rows));
        if !rows.map.fields.contains_key(&Field::Vm) {
            inv.problems.push(RowProblem {
                origin: sheet.origin.clone(),
                row: 1,
                vm: None,
                message: format!("{}: no VM column; the tab is not used", kind.name()),
            });
            continue;
        }
        for i in 0..sheet.rows.len() {
            let Some(name) = rows.text(i, Field::Vm) else {
                rows.problem(&mut inv.problems, i, None, "no VM name; row skipped".into());
                continue;
            };
            if kind == SheetKind::VInfo {
                vinfo_row(&rows, i, name, &mut inv, &mut index);
                continue;
            }
            let Some(&at) = index.get(&name) else {
                if !inv.templates.contains(&name) {
                    let msg = format!("{}: VM {name:?} is not in vInfo; row skipped", kind.name());
                    rows.problem(&mut inv.problems, i, Some(&name), msg);
                }
                continue;
            };
            let mut problems = std::mem::take(&mut inv.problems);
            detail_row(&rows, i, &mut inv.vms[at], &mut problems);
            inv.problems = problems;
        }
    }
    inv
}

fn column_report(rows: &Rows<'_>) -> ColumnReport {
    let mut recognised: Vec<(usize, String)> = rows
        .map
        .fields
        .values()
        .filter_map(|(c, _)| Some((*c, rows.sheet.headers.get(*c)?.clone())))
        .collect();
    recognised.sort();
    ColumnReport {
        sheet: rows.kind.name().into(),
        recognised: recognised.into_iter().map(|(_, h)| h).collect(),
        known_unused: rows.map.known_unused.clone(),
        unrecognised: rows.map.unrecognised.clone(),
        duplicates: rows.map.duplicates.clone(),
    }
}

fn vinfo_row(
    rows: &Rows<'_>,
    i: usize,
    name: String,
    inv: &mut Inventory,
    index: &mut BTreeMap<String, usize>,
) {
    let p = &mut inv.problems;
    // Templates and SRM placeholders (shadows of VMs protected elsewhere) are not migrated.
    if rows.flag(i, Field::Template) || rows.flag(i, Field::SrmPlaceholder) {
        inv.templates.push(name);
        return;
    }
    if index.contains_key(&name) {
        let msg = format!("VM {name:?} appears twice in vInfo; the later row is skipped");
        rows.problem(p, i, Some(&name), msg);
        return;
    }
    let attributes = rows
        .map
        .unrecognised
        .iter()
        .filter_map(|h| {
            let c = HeaderMap::index_of(&rows.sheet.headers, h)?;
            let v = rows.sheet.rows[i].get(c)?.trim();
            (!v.is_empty()).then(|| (h.clone(), v.to_string()))
        })
        .collect();
    let vm = InvVm {
        powerstate: rows.text(i, Field::Powerstate),
        vcpus: rows.count(p, i, &name, Field::Cpus).unwrap_or(0),
        cores_per_socket: 1,
        memory_mib: rows.mib(p, i, &name, Field::Memory).unwrap_or(0),
        provisioned_mib: rows.mib(p, i, &name, Field::Provisioned),
        in_use_mib: rows.mib(p, i, &name, Field::InUse),
        folder: rows.text(i, Field::Folder),
        resource_pool: rows.text(i, Field::ResourcePool),
        cluster: rows.text(i, Field::Cluster),
        host: rows.text(i, Field::Host),
        datacenter: rows.text(i, Field::Datacenter),
        annotation: rows.text(i, Field::Annotation),
        guest_os: rows
            .text(i, Field::OsConfig)
            .or_else(|| rows.text(i, Field::OsTools)),
        tools_running: rows.text(i, Field::OsTools).is_some(),
        firmware: rows.text(i, Field::Firmware),
        secure_boot: rows.flag(i, Field::SecureBoot),
        hw_version: rows.text(i, Field::HwVersion),
        attributes,
        name: name.clone(),
        ..InvVm::default()
    };
    index.insert(name, inv.vms.len());
    inv.vms.push(vm);
}

fn detail_row(rows: &Rows<'_>, i: usize, vm: &mut InvVm, p: &mut Vec<RowProblem>) {
    let name = vm.name.clone();
    match rows.kind {
        SheetKind::VInfo => {}
        SheetKind::VDisk => {
            let sharing = rows.text(i, Field::SharingMode).unwrap_or_default();
            let bus = rows.text(i, Field::SharedBus).unwrap_or_default();
            let bus_shared = !bus.is_empty() && !bus.to_ascii_lowercase().contains("nosharing");
            let label = rows.text(i, Field::Disk);
            vm.disks.push(InvDisk {
                label: label.unwrap_or_else(|| format!("disk {}", vm.disks.len() + 1)),
                capacity_mib: rows.mib(p, i, &name, Field::Capacity).unwrap_or(0),
                mode: rows.text(i, Field::DiskMode),
                shared: sharing.to_ascii_lowercase().contains("multiwriter") || bus_shared,
                raw: rows.flag(i, Field::Raw),
                controller: rows.text(i, Field::Controller),
                unit: rows.count(p, i, &name, Field::Unit),
            });
        }
        SheetKind::VNetwork => vm.nics.push(InvNic {
            label: rows
                .text(i, Field::NicLabel)
                .unwrap_or_else(|| format!("Network adapter {}", vm.nics.len() + 1)),
            adapter: rows.text(i, Field::Adapter),
            network: rows.text(i, Field::Network),
            mac: rows.text(i, Field::Mac),
            direct_path_io: rows.flag(i, Field::DirectPathIo),
        }),
        SheetKind::VCpu => {
            if let Some(c) = rows.count(p, i, &name, Field::Cpus)
                && vm.vcpus == 0
            {
                vm.vcpus = c;
            }
            if let Some(c) = rows
                .count(p, i, &name, Field::CoresPerSocket)
                .filter(|c| *c > 0)
            {
                vm.cores_per_socket = c;
            }
        }
        SheetKind::VMemory => {
            if let Some(m) = rows.mib(p, i, &name, Field::MemorySize)
                && vm.memory_mib == 0
            {
                vm.memory_mib = m;
            }
            vm.memory_active_mib = rows.mib(p, i, &name, Field::MemoryActive);
            vm.memory_consumed_mib = rows.mib(p, i, &name, Field::MemoryConsumed);
        }
        SheetKind::VSnapshot => vm.snapshots = vm.snapshots.saturating_add(1),
        SheetKind::VUsb => vm.usb_devices.push(
            rows.text(i, Field::UsbDevice)
                .unwrap_or_else(|| format!("usb{}", vm.usb_devices.len())),
        ),
    }
}
