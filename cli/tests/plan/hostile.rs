//! Inventories that lie: a real .xlsx with formulas, text and absurd numbers in number
//! columns, missing tabs, and a proptest over the column matcher and the row parser.

use ivctl::import::plan::columns::{self, HeaderMap, MAX_COUNT, MAX_MIB, SheetKind};
use ivctl::import::plan::inventory;
use ivctl::import::plan::table::{self, Sheet, Tables};
use proptest::prelude::*;

use crate::estate;

#[test]
fn the_header_rows_of_a_real_rvtools_4_export_are_all_known_and_give_every_field() {
    use ivctl::import::plan::columns::Field::*;
    use ivctl::import::plan::known::header_row;
    let want = [
        (
            SheetKind::VInfo,
            vec![
                Vm,
                Powerstate,
                Template,
                Cpus,
                Memory,
                Provisioned,
                InUse,
                Folder,
                ResourcePool,
                Cluster,
                Host,
                Datacenter,
                Annotation,
                OsConfig,
                OsTools,
                Firmware,
                SecureBoot,
                HwVersion,
            ],
        ),
        (
            SheetKind::VDisk,
            vec![
                Vm,
                Disk,
                Capacity,
                DiskMode,
                SharingMode,
                Raw,
                Controller,
                Unit,
                SharedBus,
            ],
        ),
        (
            SheetKind::VNetwork,
            vec![Vm, NicLabel, Adapter, Network, Mac, DirectPathIo],
        ),
        (SheetKind::VCpu, vec![Vm, Cpus, Sockets, CoresPerSocket]),
        (
            SheetKind::VMemory,
            vec![Vm, MemorySize, MemoryActive, MemoryConsumed],
        ),
        (SheetKind::VSnapshot, vec![Vm, SnapshotName]),
        (SheetKind::VUsb, vec![Vm, UsbDevice]),
    ];
    for (sheet, fields) in want {
        let headers: Vec<String> = header_row(sheet).iter().map(|h| h.to_string()).collect();
        let map = HeaderMap::new(sheet, &headers);
        assert!(
            map.unrecognised.is_empty() && map.duplicates.is_empty(),
            "{sheet:?}: {map:?}"
        );
        for f in fields {
            assert!(map.fields.contains_key(&f), "{sheet:?} lacks {f:?}");
        }
        assert_eq!(
            map.fields.len() + map.known_unused.len(),
            headers.len(),
            "{sheet:?}"
        );
    }
    assert_eq!(header_row(SheetKind::VInfo).len(), 93);
}

#[test]
fn a_real_xlsx_estate_reads_like_its_csv_twin() {
    let dir = tempfile::tempdir().unwrap();
    let vms = estate::estate(55);
    estate::write_xlsx(&dir.path().join("rvtools.xlsx"), &vms);
    estate::write_csv_dir(&dir.path().join("csv"), &vms, estate::Style::V4, ',');
    let x = inventory::build(&table::read(&dir.path().join("rvtools.xlsx")).unwrap());
    let c = inventory::build(&table::read(&dir.path().join("csv")).unwrap());
    assert_eq!(x.vms.len(), 54);
    assert_eq!(x.vms, c.vms);
    assert!(x.problems.is_empty(), "{:?}", x.problems);
}

#[test]
fn formulas_text_negative_and_huge_numbers_are_reported_cell_by_cell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.xlsx");
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("vInfo").unwrap();
    for (c, h) in ["VM", "CPUs", "Memory", "Provisioned MiB"]
        .iter()
        .enumerate()
    {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    let rows: [(&str, Cell, Cell, Cell); 5] = [
        (
            "formula",
            Cell::Formula("=1+1"),
            Cell::Num(4096.0),
            Cell::Num(10.0),
        ),
        (
            "text",
            Cell::Text("four"),
            Cell::Text("4,096"),
            Cell::Num(10.0),
        ),
        (
            "negative",
            Cell::Num(-2.0),
            Cell::Num(-1.0),
            Cell::Num(-5.0),
        ),
        (
            "huge",
            Cell::Num(1e300),
            Cell::Num(f64::MAX),
            Cell::Num(9e18),
        ),
        ("fine", Cell::Num(2.0), Cell::Num(1024.0), Cell::Num(2048.0)),
    ];
    for (r, (name, cpus, mem, prov)) in rows.iter().enumerate() {
        let r = r as u32 + 1;
        ws.write_string(r, 0, *name).unwrap();
        for (c, cell) in [(1u16, cpus), (2, mem), (3, prov)] {
            match cell {
                Cell::Num(n) => ws.write_number(r, c, *n).map(|_| ()).unwrap(),
                Cell::Text(t) => ws.write_string(r, c, *t).map(|_| ()).unwrap(),
                Cell::Formula(f) => ws.write_formula(r, c, *f).map(|_| ()).unwrap(),
            }
        }
    }
    wb.save(&path).unwrap();
    let inv = inventory::build(&table::read(&path).unwrap());
    let by = |n: &str| inv.vms.iter().find(|v| v.name == n).unwrap();
    // A formula cell without a cached value reads as empty: no vCPUs, never a guess.
    assert_eq!(by("formula").vcpus, 0);
    assert_eq!((by("text").vcpus, by("text").memory_mib), (0, 4096));
    assert_eq!(
        (
            by("negative").vcpus,
            by("negative").memory_mib,
            by("negative").provisioned_mib
        ),
        (0, 0, None)
    );
    assert_eq!((by("huge").vcpus, by("huge").memory_mib), (0, 0));
    assert_eq!((by("fine").vcpus, by("fine").memory_mib), (2, 1024));
    let msgs: Vec<String> = inv
        .problems
        .iter()
        .map(|p| format!("{} {}", p.row, p.message))
        .collect();
    for want in [
        "3 vInfo CPUs: \"four\" is not a number",
        "4 vInfo CPUs: \"-2\" is negative",
        "5 vInfo CPUs",
        "5 vInfo Memory",
    ] {
        assert!(
            msgs.iter().any(|m| m.starts_with(want)),
            "{want:?} not in {msgs:#?}"
        );
    }
    // The tabs that were not there are said to be missing.
    assert_eq!(
        inv.missing_tabs,
        ["vDisk", "vNetwork", "vCPU", "vMemory", "vSnapshot", "vUSB"]
    );
}

enum Cell {
    Num(f64),
    Text(&'static str),
    Formula(&'static str),
}

#[test]
fn a_workbook_without_vinfo_and_a_file_that_is_not_a_workbook_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts.xlsx");
    let mut wb = rust_xlsxwriter::Workbook::new();
    wb.add_worksheet().set_name("vHost").unwrap();
    wb.save(&path).unwrap();
    let e = table::read(&path).unwrap_err().to_string();
    assert!(e.contains("no vInfo") && e.contains("vHost"), "{e}");
    std::fs::write(dir.path().join("fake.xlsx"), b"PK\x03\x04 not a zip").unwrap();
    let e = table::read(&dir.path().join("fake.xlsx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the workbook"), "{e}");
}

#[test]
fn rows_for_vms_not_in_vinfo_and_duplicates_are_reported() {
    let mut t = Tables::default();
    let sheet = |headers: &[&str], rows: &[&[&str]]| Sheet {
        origin: "t".into(),
        headers: headers.iter().map(|s| s.to_string()).collect(),
        rows: rows
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect(),
    };
    t.sheets.insert(
        SheetKind::VInfo,
        sheet(&["VM", "CPUs"], &[&["a", "1"], &["a", "2"], &["", "3"]]),
    );
    t.sheets.insert(
        SheetKind::VDisk,
        sheet(&["VM", "Capacity MiB"], &[&["ghost", "10"]]),
    );
    t.sheets
        .insert(SheetKind::VCpu, sheet(&["Sockets"], &[&["1"]]));
    let inv = inventory::build(&t);
    assert_eq!(inv.vms.len(), 1);
    assert_eq!(inv.vms[0].vcpus, 1);
    let msgs: Vec<&str> = inv.problems.iter().map(|p| p.message.as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("appears twice")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("no VM name")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.contains("\"ghost\" is not in vInfo")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("vCPU: no VM column")),
        "{msgs:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_cell_parses_to_a_bounded_number_or_an_error(raw in ".{0,40}", max in 1u64..u64::MAX) {
        if let Ok(Some(v)) = columns::parse_whole(&raw, max) {
            prop_assert!(v <= max);
        }
        if let Ok(Some(v)) = columns::parse_mib(&raw, None) {
            prop_assert!(v <= MAX_MIB);
        }
    }

    #[test]
    fn whole_numbers_round_trip_through_grouping(n in 0u64..=MAX_COUNT) {
        let grouped = n.to_string().as_bytes().rchunks(3).rev().map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(",");
        prop_assert_eq!(columns::parse_whole(&grouped, MAX_COUNT), Ok(Some(n)));
        prop_assert_eq!(columns::parse_whole(&format!("{n}.0"), MAX_COUNT), Ok(Some(n)));
    }

    #[test]
    fn header_spelling_noise_does_not_change_the_field(
        upper in proptest::collection::vec(any::<bool>(), 0..32),
        sep in prop::sample::select(vec!["", " ", "_", "-", "  "]),
    ) {
        for (sheet, h) in [(SheetKind::VInfo, "Provisioned MiB"), (SheetKind::VInfo, "In Use MiB"), (SheetKind::VDisk, "Capacity MiB"), (SheetKind::VCpu, "Cores p/s")] {
            let noisy: String = h.split(' ').collect::<Vec<_>>().join(sep).chars().enumerate()
                .map(|(i, c)| if upper.get(i).copied().unwrap_or(false) { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            prop_assert_eq!(columns::match_column(sheet, &noisy), columns::match_column(sheet, h), "{:?}", noisy);
        }
    }

    #[test]
    fn any_table_builds_an_inventory_without_panicking(
        headers in proptest::collection::vec(prop::sample::select(vec!["VM", "Name", "CPUs", "Memory", "Provisioned MB", "Capacity GiB", "Folder", "x", ""]), 0..8),
        rows in proptest::collection::vec(proptest::collection::vec(prop::sample::select(vec!["", "a", "b", "-1", "1e9", "99999999999999999999999", "=A1", "4,096", "2", "True"]), 0..9), 0..20),
    ) {
        let to_sheet = || Sheet {
            origin: "p".into(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            rows: rows.iter().map(|r| r.iter().map(|s| s.to_string()).collect()).collect(),
        };
        let mut t = Tables::default();
        for kind in SheetKind::ALL {
            t.sheets.insert(kind, to_sheet());
        }
        let inv = inventory::build(&t);
        let map = HeaderMap::new(SheetKind::VInfo, &to_sheet().headers);
        prop_assert!(inv.vms.len() <= rows.len());
        prop_assert_eq!(inv.columns[0].unrecognised.clone(), map.unrecognised);
        for vm in &inv.vms {
            prop_assert!(vm.memory_mib <= MAX_MIB);
            prop_assert!(u64::from(vm.vcpus) <= MAX_COUNT);
        }
    }
}
