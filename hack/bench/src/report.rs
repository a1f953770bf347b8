//! Output of a benchmark: an aligned text table for people and one JSON line (prefixed with
//! `BENCH_JSON `) for tools, optionally also written to a file. Formatting is pure.

use serde::Serialize;
use std::path::Path;

/// Columns padded to their widest cell, a rule under the header.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    out.push_str(&line(
        width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    out.push('\n');
    for row in rows {
        let mut cells: Vec<&str> = row.iter().map(String::as_str).take(cols).collect();
        cells.resize(cols, "");
        out.push_str(&line(cells));
        out.push('\n');
    }
    out
}

/// Milliseconds with a precision that suits the size.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.3} ms")
    }
}

/// A ratio such as `12.3×`, or `n/a`.
pub fn times(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}×"),
        Some(r) => format!("{r:.2}×"),
        None => "n/a".to_owned(),
    }
}

/// MiB with one decimal.
pub fn mib(v: f64) -> String {
    format!("{v:.1} MiB")
}

/// The machine-readable line: `BENCH_JSON {"bench":..., ...}`.
pub fn json_line<T: Serialize>(value: &T) -> String {
    format!(
        "BENCH_JSON {}",
        serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    )
}

/// Print the table and the JSON line; write the JSON to `path` too when given.
pub fn emit<T: Serialize>(
    title: &str,
    text: &str,
    value: &T,
    path: Option<&Path>,
) -> anyhow::Result<()> {
    println!("\n== {title} ==\n{text}");
    println!("{}", json_line(value));
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_vec_pretty(value)?)?;
        println!("JSON written to {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn a_table_pads_every_column_to_its_widest_cell() {
        let t = table(
            &["metric", "ours"],
            &[
                vec!["p50".into(), "1.0 ms".into()],
                vec!["max latency".into(), "2".into()],
            ],
        );
        assert_eq!(
            t,
            "metric       ours\n-----------  ------\np50          1.0 ms\nmax latency  2\n"
        );
    }

    #[test]
    fn a_short_row_is_padded_with_empty_cells() {
        let t = table(&["a", "b"], &[vec!["x".into()]]);
        assert_eq!(t.lines().nth(2), Some("x"));
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(ms(1234.4), "1234 ms");
        assert_eq!(ms(12.34), "12.3 ms");
        assert_eq!(ms(0.1234), "0.123 ms");
        assert_eq!(times(Some(123.4)), "123×");
        assert_eq!(times(Some(1.234)), "1.23×");
        assert_eq!(times(None), "n/a");
        assert_eq!(mib(12.34), "12.3 MiB");
    }

    #[test]
    fn the_json_line_is_prefixed_and_parses() {
        let line = json_line(&serde_json::json!({"bench": "density", "n": 3}));
        let body = line.strip_prefix("BENCH_JSON ").expect("prefix");
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(v["n"], 3);
    }
}
