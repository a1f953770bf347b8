//! Options of `ivctl usage`.

/// How `usage` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UsageFormat {
    /// Aligned columns.
    #[default]
    Table,
    /// The UsageReport objects as a JSON list.
    Json,
    /// CSV (RFC 4180) for spreadsheets.
    Csv,
    /// A self-contained HTML page to mail (usage, the children's parts and right-sizing).
    Html,
}

/// Options of `usage`.
#[derive(Clone, Debug, clap::Args)]
pub struct UsageArgs {
    /// The tenant (its report holds its own usage and its descendants' total). Without it,
    /// every tenant's report of the month (needs the right to list them).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The UTC month, YYYY-MM (default: the current one).
    #[arg(long, value_parser = parse_month)]
    pub month: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = UsageFormat::Table)]
    pub output: UsageFormat,
    /// Also list the days and VMs (always with --tenant).
    #[arg(long)]
    pub detail: bool,
    /// Show right-sizing instead: each running VM's verdict (idle, oversized, right-sized),
    /// allocated vs used, the recommended size and its monthly saving.
    #[arg(long)]
    pub rightsizing: bool,
}

/// `YYYY-MM` with a real month.
pub fn parse_month(s: &str) -> Result<String, String> {
    let ok = s.len() == 7
        && s.as_bytes()[4] == b'-'
        && s[..4].bytes().all(|b| b.is_ascii_digit())
        && s[5..].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
        && s[5..].bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a month of the form YYYY-MM (e.g. 2026-11)"
        ))
    }
}
