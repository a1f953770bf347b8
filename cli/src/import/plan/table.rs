//! Reading an RVTools export into header rows and text cells: an .xlsx workbook (any format
//! `calamine` opens) or a directory of CSV files, one per tab (`vInfo.csv`,
//! `RVTools_tabvInfo.csv`, as RVTools' command line and Excel's "save as CSV" name them).
//!
//! Every cell becomes text here; `columns` decides what a text means. Nothing is interpreted
//! and nothing is guessed: a tab that is missing is recorded as missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use calamine::{Data, Reader};

use super::columns::SheetKind;

/// Most rows read from one tab (RVTools exports of the largest estates have ~100,000 disks).
pub const MAX_ROWS: usize = 1_000_000;
/// Most columns read from one tab (RVTools 4.x vInfo has 93 plus custom attributes).
pub const MAX_COLUMNS: usize = 1_000;
/// Largest inventory file read.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// One tab: its header row and its rows of text cells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sheet {
    /// Where it came from (`file.xlsx#vInfo`, `dir/vInfo.csv`).
    pub origin: String,
    /// The header row.
    pub headers: Vec<String>,
    /// The data rows (blank rows dropped).
    pub rows: Vec<Vec<String>>,
}

/// The tabs of one export.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// The tabs the planner reads that were found.
    pub sheets: BTreeMap<SheetKind, Sheet>,
    /// Tabs or files that are not read (vHost, vDatastore, ...).
    pub ignored: Vec<String>,
}

/// Why an inventory cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The workbook does not open.
    #[error("{path}: cannot read the workbook (is it an .xlsx saved by RVTools or Excel?)")]
    Workbook {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: calamine::Error,
    },
    /// A CSV file does not parse.
    #[error("{path}: cannot read the CSV file")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// A file or directory cannot be read.
    #[error("{path}: cannot read")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No vInfo tab, which lists the VMs.
    #[error("{path}: no vInfo tab or vInfo.csv (found: {found}); export the vInfo tab too")]
    NoVInfo {
        /// The inventory.
        path: PathBuf,
        /// What was there.
        found: String,
    },
    /// Beyond the limits above.
    #[error("{path}: {what}; split the inventory (e.g. one export per vCenter)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Which limit.
        what: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TableError {
    let path = path.to_owned();
    move |source| TableError::Io { path, source }
}

/// Read an .xlsx (or .xls/.xlsb/.ods), a directory of CSV files, or one CSV file (its name
/// says its tab; a file named after no tab is taken as vInfo).
pub fn read(path: &Path) -> Result<Tables, TableError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let tables = if meta.is_dir() {
        read_csv_dir(path)?
    } else {
        if meta.len() > MAX_FILE_BYTES {
            return Err(TableError::TooLarge {
                path: path.into(),
                what: format!("{} bytes, more than {MAX_FILE_BYTES}", meta.len()),
            });
        }
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if is_csv {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let kind = name
                .as_deref()
                .and_then(|n| SheetKind::ALL.into_iter().find(|k| k.matches_name(n)))
                .unwrap_or(SheetKind::VInfo);
            let mut t = Tables::default();
            t.sheets.insert(kind, read_csv(path)?);
            t
        } else {
            read_workbook(path)?
        }
    };
    if !tables.sheets.contains_key(&SheetKind::VInfo) {
        let mut found: Vec<&str> = tables
            .sheets
            .keys()
            .map(|k| k.name())
            .chain(tables.ignored.iter().map(String::as_str))
            .collect();
        found.sort_unstable();
        return Err(TableError::NoVInfo {
            path: path.into(),
            found: if found.is_empty() {
                "nothing".into()
            } else {
                found.join(", ")
            },
        });
    }
    Ok(tables)
}

/// A cell as text. Whole floats print without ".0"; errors print as Excel shows them.
pub fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 1e18 => {
            format!("{}", *f as i64)
        }
        Data::Float(f) => f.to_string(),
        Data::Int(i) => i.to_string(),
        Data::Bool(b) => if *b { "True" } else { "False" }.into(),
        Data::DateTime(dt) => dt.as_f64().to_string(),
        Data::Error(e) => e.to_string(),
    }
}

fn check_size(path: &Path, origin: &str, rows: usize, cols: usize) -> Result<(), TableError> {
    if rows > MAX_ROWS || cols > MAX_COLUMNS {
        return Err(TableError::TooLarge {
            path: path.into(),
            what: format!(
                "{origin} has {rows} rows and {cols} columns (at most {MAX_ROWS} and {MAX_COLUMNS})"
            ),
        });
    }
    Ok(())
}

/// Rows of text with blank rows dropped; the first remaining row is the header.
fn into_sheet(origin: String, mut rows: Vec<Vec<String>>) -> Sheet {
    rows.retain(|r| r.iter().any(|c| !c.trim().is_empty()));
    let mut rows = rows.into_iter();
    let headers = rows
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    Sheet {
        origin,
        headers,
        rows: rows.collect(),
    }
}

fn read_workbook(path: &Path) -> Result<Tables, TableError> {
    let wb_err = |source| TableError::Workbook {
        path: path.into(),
        source,
    };
    let mut wb = calamine::open_workbook_auto(path).map_err(wb_err)?;
    let mut tables = Tables::default();
    for name in wb.sheet_names() {
        let Some(kind) = SheetKind::ALL.into_iter().find(|k| k.matches_name(&name)) else {
            tables.ignored.push(name);
            continue;
        };
        if tables.sheets.contains_key(&kind) {
            tables.ignored.push(name);
            continue;
        }
        let range = wb.worksheet_range(&name).map_err(wb_err)?;
        let origin = format!("{}#{name}", path.display());
        let (h, w) = range.get_size();
        check_size(path, &origin, h, w)?;
        let rows = range
            .rows()
            .map(|r| r.iter().map(cell_text).collect())
            .collect();
        tables.sheets.insert(kind, into_sheet(origin, rows));
    }
    Ok(tables)
}

/// The delimiter of a CSV header line: `,`, `;` (Excel in many locales) or tab.
pub fn sniff_delimiter(first_line: &str) -> u8 {
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| first_line.bytes().filter(|b| b == d).count())
        .unwrap_or(b',')
}

fn read_csv(path: &Path) -> Result<Sheet, TableError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let delimiter = sniff_delimiter(&String::from_utf8_lossy(first_line));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes.as_slice());
    let origin = path.display().to_string();
    let mut rows = Vec::new();
    let mut widest = 0;
    for record in reader.byte_records() {
        let record = record.map_err(|source| TableError::Csv {
            path: path.into(),
            source,
        })?;
        widest = widest.max(record.len());
        check_size(path, &origin, rows.len(), widest)?;
        rows.push(
            record
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect(),
        );
    }
    Ok(into_sheet(origin, rows))
}

fn read_csv_dir(dir: &Path) -> Result<Tables, TableError> {
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, p)| n.to_ascii_lowercase().ends_with(".csv") && p.is_file())
        .collect();
    names.sort();
    let mut tables = Tables::default();
    for (name, file) in names {
        match SheetKind::ALL.into_iter().find(|k| k.matches_name(&name)) {
            Some(kind) if !tables.sheets.contains_key(&kind) => {
                let len = std::fs::metadata(&file).map_err(io(&file))?.len();
                if len > MAX_FILE_BYTES {
                    return Err(TableError::TooLarge {
                        path: file,
                        what: format!("{len} bytes, more than {MAX_FILE_BYTES}"),
                    });
                }
                tables.sheets.insert(kind, read_csv(&file)?);
            }
            _ => tables.ignored.push(name),
        }
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolon_csv_with_a_bom_and_blank_rows_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("RVTools_tabvInfo.csv"),
            "\u{feff}VM;CPUs;Memory\n\n\"a;b\";2;4096\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("vHost.csv"), "Host\nesx1\n").unwrap();
        let t = read(dir.path()).unwrap();
        let s = &t.sheets[&SheetKind::VInfo];
        assert_eq!(s.headers, ["VM", "CPUs", "Memory"]);
        assert_eq!(s.rows, vec![vec!["a;b", "2", "4096"]]);
        assert_eq!(t.ignored, ["vHost.csv"]);
    }

    #[test]
    fn an_inventory_without_vinfo_says_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vDisk.csv"), "VM,Disk\n").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no vInfo") && e.contains("found: vDisk"), "{e}");
    }

    #[test]
    fn float_cells_print_as_people_read_them() {
        assert_eq!(cell_text(&Data::Float(4096.0)), "4096");
        assert_eq!(cell_text(&Data::Float(1.5)), "1.5");
        assert_eq!(cell_text(&Data::Float(-2.0)), "-2");
        assert!(cell_text(&Data::Float(1e300)).len() > 20);
        assert_eq!(cell_text(&Data::Float(f64::NAN)), "NaN");
    }
}
