//! A generator of RVTools-shaped inventories: deterministic estates of any size written as
//! a CSV directory (RVTools 4.x headers, or older/re-saved spellings) or as a real .xlsx.
//! Header names follow a real RVTools 4.x workbook (see cli/src/import/plan/columns.rs).

use std::fmt::Write as _;
use std::path::Path;

/// One generated VM.
#[derive(Clone, Debug)]
pub struct GenVm {
    pub name: String,
    pub folder: String,
    pub cluster: String,
    pub pool: String,
    pub app: String,
    pub os: &'static str,
    pub cpus: u32,
    pub mem_mib: u64,
    pub active_mib: u64,
    pub disks_mib: Vec<u64>,
    pub in_use_mib: u64,
    pub network: &'static str,
    pub adapter: &'static str,
    pub powered_on: bool,
    pub template: bool,
    pub snapshot: bool,
    pub usb: bool,
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `n` VMs; every 10th is a problem VM (passthrough NIC, USB, or snapshot), one is a template.
pub fn estate(n: usize) -> Vec<GenVm> {
    let mut r = Lcg(17);
    let folders = ["DC1/vm/Finance", "DC1/vm/Web", "DC1/vm/HR", "DC1/vm/Lab"];
    let apps = ["SAP", "Shop", "Payroll", "Test"];
    let oses = [
        "Ubuntu Linux (64-bit)",
        "Red Hat Enterprise Linux 8 (64-bit)",
        "Microsoft Windows Server 2019 (64-bit)",
        "Debian GNU/Linux 11 (64-bit)",
    ];
    (0..n)
        .map(|i| {
            let f = r.next(4) as usize;
            let disks: Vec<u64> = (0..=r.next(2)).map(|_| (8 + r.next(56)) * 1024).collect();
            let total: u64 = disks.iter().sum();
            let mem_mib = [1024, 2048, 4096, 8192][r.next(4) as usize];
            GenVm {
                name: format!("{}-{i:03}", apps[f].to_lowercase()),
                folder: folders[f].into(),
                cluster: if i % 2 == 0 {
                    "Prod-A".into()
                } else {
                    "Prod-B".into()
                },
                pool: "Resources".into(),
                app: apps[f].into(),
                os: oses[r.next(4) as usize],
                cpus: 1 << r.next(3),
                mem_mib,
                active_mib: mem_mib / 4,
                in_use_mib: total / 3,
                disks_mib: disks,
                network: if i % 3 == 0 { "DMZ" } else { "VM Network" },
                adapter: if i % 10 == 3 {
                    "PCIPassthrough"
                } else {
                    "Vmxnet3"
                },
                powered_on: i % 7 != 0,
                template: i == 5,
                snapshot: i % 10 == 7,
                usb: i % 10 == 9,
            }
        })
        .collect()
}

/// Header spellings: RVTools 4.x, or older/re-saved ones.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    V4,
    Old,
}

/// The tabs as rows of text: (tab name, rows with the header first).
pub fn tabs(vms: &[GenVm], style: Style) -> Vec<(&'static str, Vec<Vec<String>>)> {
    let v4 = style == Style::V4;
    let h = |a: &str, b: &str| if v4 { a.to_string() } else { b.to_string() };
    let mut info = vec![vec![
        h("VM", "Name"),
        "Powerstate".into(),
        "Template".into(),
        h("CPUs", "Num CPUs"),
        h("Memory", "Memory MB"),
        h("Provisioned MiB", "Provisioned MB"),
        h("In Use MiB", "In Use MB"),
        "Folder".into(),
        "Resource pool".into(),
        "Cluster".into(),
        "Host".into(),
        "Datacenter".into(),
        "Annotation".into(),
        "Firmware".into(),
        "EFI Secure boot".into(),
        "HW version".into(),
        "OS according to the configuration file".into(),
        "OS according to the VMware Tools".into(),
        "Heartbeat".into(),
        "Application Type".into(),
    ]];
    let (mut disk, mut net, mut cpu, mut mem, mut snap, mut usb) = (
        vec![
            vec![
                "VM",
                "Disk",
                if v4 { "Capacity MiB" } else { "Capacity MB" },
                "Disk Mode",
                "Sharing mode",
                "Raw",
                "Controller",
                "Unit #",
                "Shared Bus",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
        ],
        vec![
            vec![
                "VM",
                "NIC label",
                "Adapter",
                "Network",
                "Mac Address",
                "Direct Path IO",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
        ],
        vec![
            vec!["VM", "CPUs", "Sockets", "Cores p/s"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
        ],
        vec![
            vec!["VM", "Size MiB", "Active", "Consumed"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
        ],
        vec![
            vec!["VM", "Name", "Description"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
        ],
        vec![
            vec!["VM", "Device Node", "Device Type"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
        ],
    );
    for (i, vm) in vms.iter().enumerate() {
        let total: u64 = vm.disks_mib.iter().sum();
        let s = |x: &dyn ToString| x.to_string();
        info.push(vec![
            vm.name.clone(),
            if vm.powered_on {
                "poweredOn"
            } else {
                "poweredOff"
            }
            .into(),
            if vm.template { "True" } else { "False" }.into(),
            s(&vm.cpus),
            s(&vm.mem_mib),
            s(&total),
            s(&vm.in_use_mib),
            vm.folder.clone(),
            vm.pool.clone(),
            vm.cluster.clone(),
            format!("esx{}.lab", i % 4),
            "DC1".into(),
            format!("owner={}", vm.app),
            if i % 4 == 0 { "efi" } else { "bios" }.into(),
            "False".into(),
            "vmx-19".into(),
            vm.os.into(),
            vm.os.into(),
            "green".into(),
            vm.app.clone(),
        ]);
        for (d, mib) in vm.disks_mib.iter().enumerate() {
            disk.push(vec![
                vm.name.clone(),
                format!("Hard disk {}", d + 1),
                s(mib),
                "persistent".into(),
                "sharingNone".into(),
                "False".into(),
                "SCSI controller 0".into(),
                s(&d),
                "noSharing".into(),
            ]);
        }
        net.push(vec![
            vm.name.clone(),
            "Network adapter 1".into(),
            vm.adapter.into(),
            vm.network.into(),
            format!("00:50:56:00:{:02x}:{:02x}", i / 256, i % 256),
            "False".into(),
        ]);
        cpu.push(vec![vm.name.clone(), s(&vm.cpus), s(&vm.cpus), "1".into()]);
        mem.push(vec![
            vm.name.clone(),
            s(&vm.mem_mib),
            s(&vm.active_mib),
            s(&vm.mem_mib),
        ]);
        if vm.snapshot {
            snap.push(vec![vm.name.clone(), "before-patch".into(), String::new()]);
        }
        if vm.usb {
            usb.push(vec![vm.name.clone(), "USB 1".into(), "dongle".into()]);
        }
    }
    vec![
        ("vInfo", info),
        ("vDisk", disk),
        ("vNetwork", net),
        ("vCPU", cpu),
        ("vMemory", mem),
        ("vSnapshot", snap),
        ("vUSB", usb),
    ]
}

fn csv_line(row: &[String], sep: char) -> String {
    let mut line = String::new();
    for (i, c) in row.iter().enumerate() {
        if i > 0 {
            line.push(sep);
        }
        if c.contains([sep, '"', '\n']) {
            let _ = write!(line, "\"{}\"", c.replace('"', "\"\""));
        } else {
            line.push_str(c);
        }
    }
    line
}

/// One CSV per tab as RVTools' command line names them (`RVTools_tabvInfo.csv`).
pub fn write_csv_dir(dir: &Path, vms: &[GenVm], style: Style, sep: char) {
    std::fs::create_dir_all(dir).unwrap();
    for (tab, rows) in tabs(vms, style) {
        let text: String = rows.iter().map(|r| csv_line(r, sep) + "\n").collect();
        std::fs::write(dir.join(format!("RVTools_tab{tab}.csv")), text).unwrap();
    }
}

/// A real .xlsx workbook: numbers as numbers, text as text.
pub fn write_xlsx(path: &Path, vms: &[GenVm]) {
    let mut wb = rust_xlsxwriter::Workbook::new();
    for (tab, rows) in tabs(vms, Style::V4) {
        let ws = wb.add_worksheet();
        ws.set_name(tab).unwrap();
        for (r, row) in rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                let (r, c) = (r as u32, c as u16);
                match cell.parse::<f64>() {
                    Ok(n) if r > 0 => ws.write_number(r, c, n).map(|_| ()).unwrap(),
                    _ => ws.write_string(r, c, cell).map(|_| ()).unwrap(),
                }
            }
        }
    }
    wb.save(path).unwrap();
}
