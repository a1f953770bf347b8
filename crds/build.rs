//! Records the commit the binaries are built from (`IRONVISOR_COMMIT`, set by
//! `hack/release.sh`) for `--version`; builds without it say `unknown`.

fn main() {
    println!("cargo:rerun-if-env-changed=IRONVISOR_COMMIT");
    let commit = std::env::var("IRONVISOR_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=IRONVISOR_COMMIT={commit}");
}
