//! kube-apiserver's static token file (`--token-auth-file`): CSV lines
//! `token,user,uid,"group1,group2"`, the groups column optional.
//!
//! Pure parsing; the authenticator owns the resulting table.

use super::UserInfo;
use std::collections::HashMap;

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    /// A record has fewer than the three required columns.
    #[error(
        "line {line} of the token file has {found} column(s); each needs at least token, user name and uid"
    )]
    TooFewColumns {
        /// 1-based line number.
        line: usize,
        /// Columns found.
        found: usize,
    },
    /// A quoted field is not closed.
    #[error("line {line} of the token file has an unterminated quote")]
    Unterminated {
        /// 1-based line number.
        line: usize,
    },
}

/// Splits one CSV record (RFC 4180 quoting, leading spaces trimmed as Go's reader does).
fn record(line: &str, n: usize) -> Result<Vec<String>, TokenFileError> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if at_start => quoted = true,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            ' ' | '\t' if at_start && !quoted => continue,
            c => cur.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(TokenFileError::Unterminated { line: n });
    }
    out.push(cur);
    Ok(out)
}

/// Parses the file's text into token → user. Empty tokens are skipped, as kube-apiserver does.
pub fn parse(text: &str) -> Result<HashMap<String, UserInfo>, TokenFileError> {
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let r = record(line, i + 1)?;
        if r.len() < 3 {
            return Err(TokenFileError::TooFewColumns {
                line: i + 1,
                found: r.len(),
            });
        }
        if r[0].is_empty() {
            continue;
        }
        let groups: Vec<String> = match r.get(3) {
            Some(g) if !g.is_empty() => g.split(',').map(String::from).collect(),
            _ => vec![],
        };
        tokens.insert(r[0].clone(), UserInfo::new(&r[1], &r[2], &groups));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_column_is_optional_and_quoted_groups_split_on_commas() {
        let t = parse("t1,alice,u1,\"tenants,devs\"\nt2,bob,u2\n\n,nobody,u3\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["t1"].username, "alice");
        assert_eq!(t["t1"].uid, "u1");
        assert_eq!(
            t["t1"].groups,
            vec!["tenants", "devs", "system:authenticated"]
        );
        assert_eq!(t["t2"].groups, vec!["system:authenticated"]);
    }

    #[test]
    fn a_short_record_or_open_quote_names_the_line() {
        assert_eq!(
            parse("a,b,c\nt,user\n").unwrap_err(),
            TokenFileError::TooFewColumns { line: 2, found: 2 }
        );
        assert_eq!(
            parse("t,u,i,\"g1,g2\n").unwrap_err(),
            TokenFileError::Unterminated { line: 1 }
        );
    }
}
