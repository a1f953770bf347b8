//! Domain names derived from a VM's namespace and name.
//!
//! The name must be unique per namespace/name, stable across agent restarts, and safe as a
//! libvirt name and as part of QEMU's file names: only `[a-z0-9-]`, at most 63 characters.
//! Sanitising alone could map two VMs to the same name (`a.b` and `a-b`), so a short hash of
//! the exact namespace and name is appended.

use sha2::{Digest, Sha256};

/// Prefix of every domain the agent creates.
pub const PREFIX: &str = "iv-";
/// Longest domain name the agent creates.
pub const MAX_LEN: usize = 63;
const HASH_LEN: usize = 8;

/// The libvirt domain name of the VM `namespace/name`: `iv-<ns>-<name>-<hash8>`.
pub fn domain_name(namespace: &str, name: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update([0u8]);
    hasher.update(name.as_bytes());
    let hash = hex::encode(hasher.finalize());
    // Room for the readable part: prefix, two dashes and the hash come off the limit.
    let budget = MAX_LEN - PREFIX.len() - 2 - HASH_LEN;
    let ns = sanitise(namespace);
    let nm = sanitise(name);
    let ns_len = ns
        .len()
        .min(budget / 2)
        .max(budget.saturating_sub(nm.len()).min(ns.len()));
    let nm_len = nm.len().min(budget - ns_len);
    format!(
        "{PREFIX}{}-{}-{}",
        trim_dashes(&ns[..ns_len]),
        trim_dashes(&nm[..nm_len]),
        &hash[..HASH_LEN]
    )
}

fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect()
}

fn trim_dashes(s: &str) -> &str {
    s.trim_matches('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_vm_gets_a_readable_name_with_a_hash() {
        let n = domain_name("default", "web-1");
        assert!(n.starts_with("iv-default-web-1-"), "{n}");
        assert_eq!(n.len(), "iv-default-web-1-".len() + 8);
    }

    #[test]
    fn the_name_is_stable() {
        assert_eq!(domain_name("a", "b"), domain_name("a", "b"));
    }

    #[test]
    fn names_that_sanitise_alike_stay_distinct() {
        assert_ne!(domain_name("ns", "a.b"), domain_name("ns", "a-b"));
        assert_ne!(domain_name("a-b", "c"), domain_name("a", "b-c"));
    }

    #[test]
    fn hostile_names_become_safe_names_within_the_limit() {
        let long = "x".repeat(253);
        for (ns, name) in [
            ("default", "../../etc/passwd"),
            ("<script>", "a'b\"c&d"),
            ("ns", long.as_str()),
            (long.as_str(), long.as_str()),
            ("", ""),
            ("ns", "ünïcödé-名前"),
        ] {
            let n = domain_name(ns, name);
            assert!(n.len() <= MAX_LEN, "{n} is too long");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n} has unsafe characters"
            );
            assert!(n.starts_with(PREFIX));
        }
    }

    #[test]
    fn a_long_name_keeps_part_of_the_namespace() {
        let n = domain_name("team", &"y".repeat(200));
        assert!(n.starts_with("iv-team-yyy"), "{n}");
    }
}
