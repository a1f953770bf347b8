//! The report for people (a table that fits 120 columns, long cells wrapped) and for tools
//! (JSON). Pure.

use std::fmt::Write as _;

use super::verdict::{Report, Status};

/// Widths of the CHECK, STATUS, FINDING and REMEDY columns; with the gaps, 120 columns.
const WIDTHS: [usize; 4] = [18, 6, 48, 42];
/// Between columns.
const GAP: &str = "  ";

/// `text` broken at spaces into lines of at most `width` characters (a longer word is cut).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// One row: cells wrapped to their columns, side by side, trailing blanks trimmed.
fn row(out: &mut String, cells: [&str; 4]) {
    let wrapped: Vec<Vec<String>> = cells.iter().zip(WIDTHS).map(|(c, w)| wrap(c, w)).collect();
    let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
    for i in 0..height {
        let mut line = String::new();
        for (col, w) in wrapped.iter().zip(WIDTHS) {
            let cell = col.get(i).map_or("", String::as_str);
            let _ = write!(line, "{cell:<w$}{GAP}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The last line: the verdict and what the exit status will be.
pub fn summary(r: &Report) -> String {
    let counts = format!(
        "{} fail, {} warn, {} pass",
        r.count(Status::Fail),
        r.count(Status::Warn),
        r.count(Status::Pass)
    );
    if r.qualifies {
        format!(
            "This host qualifies for the {} profile ({counts}).",
            r.profile.name()
        )
    } else {
        format!(
            "This host does NOT qualify for the {} profile ({counts}); fix the failed checks.",
            r.profile.name()
        )
    }
}

/// The table.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    row(&mut out, ["CHECK", "STATUS", "FINDING", "REMEDY"]);
    for c in &r.checks {
        row(
            &mut out,
            [
                c.id,
                c.status.as_str(),
                &c.finding,
                c.remedy.as_deref().unwrap_or(""),
            ],
        );
    }
    out.push('\n');
    out.push_str(&summary(r));
    out.push('\n');
    out
}

/// The JSON document.
pub fn json(r: &Report) -> String {
    // A Report holds only strings, numbers and enums: serialising it cannot fail.
    serde_json::to_string_pretty(r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::args::Profile;
    use crate::host::verdict::Check;

    fn report() -> Report {
        Report::new(
            Profile::Production,
            "qemu:///system",
            vec![
                Check::pass("cpu-flags", "vmx (Intel VT-x)"),
                Check::problem(
                    "kvm",
                    Status::Fail,
                    "crw------- root root: libvirt-qemu cannot open it; libvirt re-probes QEMU \
                     on every call (~56 s per define)",
                    "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (what udev's rule does), or run \
                     hack/start-libvirtd.sh",
                ),
            ],
        )
    }

    #[test]
    fn lines_wrap_at_spaces_and_long_words_are_cut() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("/very/long/path", 6), ["/very/", "long/p", "ath"]);
        assert_eq!(wrap("", 5), [""]);
    }

    #[test]
    fn the_table_fits_120_columns_and_keeps_every_word() {
        let t = table(&report());
        assert!(t.lines().all(|l| l.chars().count() <= 120), "{t}");
        assert!(t.starts_with("CHECK               STATUS  FINDING"));
        let words: Vec<&str> = t.split_whitespace().collect();
        for w in [
            "kvm",
            "fail",
            "crw-------",
            "(~56",
            "hack/start-libvirtd.sh",
        ] {
            assert!(words.contains(&w), "{w} missing from\n{t}");
        }
        assert!(t.trim_end().ends_with(
            "This host does NOT qualify for the production profile (1 fail, 0 warn, 1 pass); \
             fix the failed checks."
        ));
    }

    #[test]
    fn the_json_has_stable_field_names() {
        let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        assert_eq!(v["profile"], "production");
        assert_eq!(v["qualifies"], false);
        assert_eq!(v["libvirtUri"], "qemu:///system");
        assert_eq!(v["checks"][0]["id"], "cpu-flags");
        assert_eq!(v["checks"][0]["status"], "pass");
        assert_eq!(v["checks"][0]["remedy"], serde_json::Value::Null);
        assert_eq!(v["checks"][1]["status"], "fail");
        assert!(
            v["checks"][1]["remedy"]
                .as_str()
                .unwrap()
                .contains("chmod 0660")
        );
    }
}
