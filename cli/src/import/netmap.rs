//! Network mapping files: which Ironvisor network each VMware port group goes to, for a
//! whole estate at once (`--network-map FILE`).
//!
//! Two forms: YAML (`.yaml`/`.yml`), a mapping of port group to target; or text, one
//! `PORTGROUP=TARGET` per line with `#` comments. A TARGET is what `--network-map
//! VMNET=TARGET` takes (`NAME`, `network:NAME`, `bridge:NAME`, `user`). A port group named
//! twice in one file is an error (one of the two is a mistake). Parsing is pure; the caller
//! reads the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::manifest::{NetworkTarget, parse_network_map};

/// One `--network-map` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMapArg {
    /// `VMNET=TARGET`.
    Pair(String, NetworkTarget),
    /// A mapping file.
    File(PathBuf),
}

/// `--network-map`: a `VMNET=TARGET` pair, or a file (an argument without `=`, or one that
/// names an existing file).
pub fn parse_arg(arg: &str) -> Result<NetworkMapArg, String> {
    if !arg.contains('=') || Path::new(arg).is_file() {
        return Ok(NetworkMapArg::File(arg.into()));
    }
    parse_network_map(arg).map(|(k, v)| NetworkMapArg::Pair(k, v))
}

/// Why a mapping file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum NetMapError {
    /// It cannot be read.
    #[error("{file}: cannot read the network map")]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a YAML mapping of strings.
    #[error("{file}: not a YAML mapping of port group to network")]
    Yaml {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A bad entry.
    #[error("{file}:{line}: {message}")]
    Entry {
        /// The file.
        file: PathBuf,
        /// Its line (1-based; 0 for a YAML entry).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The entries of mapping file `file` whose text is `text`.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<(String, NetworkTarget)>, NetMapError> {
    let yaml = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let raw: Vec<(usize, String, String)> = if yaml {
        let map: BTreeMap<String, String> =
            serde_saphyr::from_str(text).map_err(|source| NetMapError::Yaml {
                file: file.to_owned(),
                source: Box::new(source),
            })?;
        map.into_iter().map(|(k, v)| (0, k, v)).collect()
    } else {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i.saturating_add(1), l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .map(|(n, l)| match l.rsplit_once('=') {
                Some((k, v)) => Ok((n, k.trim().to_owned(), v.trim().to_owned())),
                None => Err(NetMapError::Entry {
                    file: file.to_owned(),
                    line: n,
                    message: format!("{l:?} is not PORTGROUP=TARGET"),
                }),
            })
            .collect::<Result<_, _>>()?
    };
    let mut seen = BTreeMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (line, from, to) in raw {
        let entry = |message: String| NetMapError::Entry {
            file: file.to_owned(),
            line,
            message,
        };
        let (from, target) = parse_network_map(&format!("{from}={to}"))
            .map_err(|e| entry(format!("port group {from:?}: {e}")))?;
        if let Some(first) = seen.insert(from.clone(), line) {
            return Err(entry(format!(
                "port group {from:?} is mapped twice (first on line {first})"
            )));
        }
        out.push((from, target));
    }
    Ok(out)
}

/// Every `--network-map` argument resolved (files read), in order: a later entry for the
/// same port group wins.
pub fn resolve(args: &[NetworkMapArg]) -> Result<BTreeMap<String, NetworkTarget>, NetMapError> {
    let mut out = BTreeMap::new();
    for a in args {
        match a {
            NetworkMapArg::Pair(k, v) => {
                out.insert(k.clone(), v.clone());
            }
            NetworkMapArg::File(f) => {
                let text = std::fs::read_to_string(f).map_err(|source| NetMapError::Read {
                    file: f.clone(),
                    source,
                })?;
                out.extend(parse_file(f, &text)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_maps_read_port_groups_with_spaces_comments_and_every_target() {
        let text =
            "# estate network map\nVM Network = prod\n\nDMZ (vlan 20)=bridge:br-dmz\nlab=user\n";
        let got = parse_file(Path::new("map.txt"), text).unwrap();
        assert_eq!(
            got,
            [
                ("VM Network".into(), NetworkTarget::Network("prod".into())),
                (
                    "DMZ (vlan 20)".into(),
                    NetworkTarget::Bridge("br-dmz".into())
                ),
                ("lab".into(), NetworkTarget::User),
            ]
        );
    }

    #[test]
    fn yaml_maps_read_as_a_mapping() {
        let text = "\"VM Network\": prod\nBackup: bridge:br-backup\n";
        let got = parse_file(Path::new("map.yaml"), text).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.contains(&("Backup".into(), NetworkTarget::Bridge("br-backup".into()))));
        let err = parse_file(Path::new("map.yml"), "- a\n- b\n").unwrap_err();
        assert!(matches!(err, NetMapError::Yaml { .. }), "{err}");
    }

    #[test]
    fn bad_lines_and_duplicates_name_the_line() {
        let err = parse_file(Path::new("m"), "a=prod\nno equals here\n").unwrap_err();
        assert!(err.to_string().starts_with("m:2:"), "{err}");
        let err = parse_file(Path::new("m"), "a=prod\nb=bad name\n").unwrap_err();
        assert!(err.to_string().contains("m:2: port group \"b\""), "{err}");
        let err = parse_file(Path::new("m"), "a=prod\na=test\n").unwrap_err();
        assert!(err.to_string().contains("first on line 1"), "{err}");
    }

    #[test]
    fn an_argument_is_a_pair_unless_it_has_no_equals_or_names_a_file() {
        assert_eq!(
            parse_arg("VM Network=prod").unwrap(),
            NetworkMapArg::Pair("VM Network".into(), NetworkTarget::Network("prod".into()))
        );
        assert_eq!(
            parse_arg("maps/estate.yaml").unwrap(),
            NetworkMapArg::File("maps/estate.yaml".into())
        );
        let f = tempfile::Builder::new().suffix("a=b").tempfile().unwrap();
        let p = f.path().to_str().unwrap();
        assert_eq!(parse_arg(p).unwrap(), NetworkMapArg::File(p.into()));
    }
}
