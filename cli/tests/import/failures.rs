//! Every failure names the file at fault and leaves nothing behind in --out.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::*;
use ivctl::import::report::Status;

/// A one-disk OVF bundle in `dir` with a VMDK of `subformat`; returns the OVF path.
fn bundle(dir: &Path, subformat: &str, mib: usize) -> PathBuf {
    let raw = raw_disk(dir, "d.raw", mib, 3);
    vmdk_from_raw(&raw, &dir.join("disk.vmdk"), subformat, "lsilogic");
    let spec = OvfSpec::simple(vec![disk("disk.vmdk", (mib as u64) << 20, "lsilogic", 0)]);
    std::fs::write(dir.join("vm.ovf"), ovf_text(&spec)).unwrap();
    dir.join("vm.ovf")
}

/// Run the import, expect an error containing every `needles`, and an empty --out.
fn fails_cleanly(source: &Path, out: &Path, needles: &[&str]) -> String {
    let err = import(&request(source, out)).expect_err("the import must fail");
    let text = chain(&err);
    for n in needles {
        assert!(text.contains(n), "error {text:?} does not mention {n:?}");
    }
    assert!(
        entries(out).is_empty(),
        "--out is not empty after a failure: {:?}",
        entries(out)
    );
    text
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_truncated_monolithic_sparse_vmdk_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "monolithicSparse", 2);
    let vmdk = dir.path().join("disk.vmdk");
    let len = std::fs::metadata(&vmdk).unwrap().len();
    truncate(&vmdk, len - 100_000);
    fails_cleanly(
        &ovf,
        &dir.path().join("out"),
        &["disk.vmdk", "truncated or corrupt", "beyond the end"],
    );
}

#[test]
fn a_truncated_stream_optimized_vmdk_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "streamOptimized", 2);
    let vmdk = dir.path().join("disk.vmdk");
    let len = std::fs::metadata(&vmdk).unwrap().len();
    truncate(&vmdk, len / 2);
    fails_cleanly(
        &ovf,
        &dir.path().join("out"),
        &["disk.vmdk", "truncated or corrupt", "beyond the end"],
    );
}

#[test]
fn a_truncated_flat_extent_is_refused_naming_the_extent() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "monolithicFlat", 2);
    truncate(&dir.path().join("disk-flat.vmdk"), 1 << 20);
    fails_cleanly(
        &ovf,
        &dir.path().join("out"),
        &["disk-flat.vmdk", "flat extent needs 2097152 bytes"],
    );
}

#[test]
fn a_vmdk_of_garbage_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "streamOptimized", 1);
    let mut garbage = b"KDMV".to_vec();
    garbage.extend(std::iter::repeat_n(0xff, 4096));
    std::fs::write(dir.path().join("disk.vmdk"), garbage).unwrap();
    fails_cleanly(
        &ovf,
        &dir.path().join("out"),
        &["disk.vmdk", "sparse header is corrupt"],
    );
}

#[test]
fn an_ovf_pointing_outside_its_bundle_is_refused_naming_the_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("bundle");
    std::fs::create_dir(&inner).unwrap();
    let raw = raw_disk(dir.path(), "d.raw", 1, 5);
    vmdk_from_raw(
        &raw,
        &dir.path().join("outside.vmdk"),
        "streamOptimized",
        "lsilogic",
    );
    let spec = OvfSpec::simple(vec![disk("../outside.vmdk", 1 << 20, "lsilogic", 0)]);
    std::fs::write(inner.join("vm.ovf"), ovf_text(&spec)).unwrap();
    fails_cleanly(
        &inner.join("vm.ovf"),
        &dir.path().join("out"),
        &["vm.ovf", "\"../outside.vmdk\" points outside the bundle"],
    );
}

#[test]
fn a_vmdk_extent_pointing_outside_its_bundle_is_refused_naming_the_vmdk() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "monolithicFlat", 1);
    std::fs::write(
        dir.path().join("disk.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"../../../../etc/hostname\" 0\n",
    )
    .unwrap();
    fails_cleanly(
        &ovf,
        &dir.path().join("out"),
        &["disk.vmdk", "points outside the bundle"],
    );
}

#[test]
fn a_checksum_mismatch_in_an_ovf_manifest_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "streamOptimized", 1);
    write_manifest(dir.path(), "vm.mf", &["vm.ovf", "disk.vmdk"], false);
    // Damage one byte of the disk after the manifest was written.
    let vmdk = dir.path().join("disk.vmdk");
    let mut data = std::fs::read(&vmdk).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0xff;
    std::fs::write(&vmdk, data).unwrap();
    fails_cleanly(
        &ovf,
        &dir.path().join("out"),
        &["disk.vmdk", "SHA256 checksum mismatch"],
    );
}

#[test]
fn a_checksum_mismatch_in_an_ova_is_refused_before_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "streamOptimized", 1);
    std::fs::write(
        src.join("vm.mf"),
        format!(
            "SHA256(vm.ovf)= {}\nSHA256(disk.vmdk)= {}\n",
            "0".repeat(64),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let ova = dir.path().join("vm.ova");
    write_ova(&src, &["vm.ovf", "vm.mf", "disk.vmdk"], &ova);
    fails_cleanly(
        &ova,
        &dir.path().join("out"),
        &["vm.ovf", "checksum mismatch"],
    );
}

#[test]
fn a_truncated_ova_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "streamOptimized", 2);
    let ova = dir.path().join("vm.ova");
    write_ova(&src, &["vm.ovf", "disk.vmdk"], &ova);
    let len = std::fs::metadata(&ova).unwrap().len();
    truncate(&ova, len / 2);
    fails_cleanly(&ova, &dir.path().join("out"), &["vm.ova"]);
}

#[test]
fn an_existing_vm_directory_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "streamOptimized", 1);
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("simple")).unwrap();
    std::fs::write(out.join("simple/keep.txt"), "mine").unwrap();
    let err = import(&request(&ovf, &out)).unwrap_err();
    assert!(chain(&err).contains("already exists"), "{}", chain(&err));
    assert_eq!(entries(&out), vec!["simple"]);
    assert_eq!(entries(&out.join("simple")), vec!["keep.txt"]);
}

#[test]
fn a_dry_run_writes_nothing_and_still_reports_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "monolithicSparse", 1);
    let out = dir.path().join("out");
    let mut req = request(&ovf, &out);
    req.dry_run = true;
    let report = import(&req).unwrap();
    assert_eq!(report.status, Status::DryRun);
    assert_eq!(report.manifest["kind"], "VirtualMachine");
    assert!(entries(&out).is_empty());
}

/// A small tmpfs mounted for one test and unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the CI runs as root)"
        );
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_during_conversion_is_an_error_naming_the_image_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "streamOptimized", 4);
    let fs = Tmpfs::mount("1m");
    let text = fails_cleanly(
        &ovf,
        fs.0.path(),
        &[
            "simple-scsi0-0.qcow2",
            "no space left on device",
            "disk.vmdk",
        ],
    );
    assert!(
        text.starts_with(&fs.0.path().display().to_string()),
        "{text}"
    );
}

#[test]
fn a_full_disk_while_unpacking_an_ova_is_an_error_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "monolithicFlat", 2);
    let ova = dir.path().join("vm.ova");
    write_ova(&src, &["vm.ovf", "disk.vmdk", "disk-flat.vmdk"], &ova);
    let fs = Tmpfs::mount("1m");
    fails_cleanly(
        &ova,
        fs.0.path(),
        &["disk-flat.vmdk", "No space left on device"],
    );
}
