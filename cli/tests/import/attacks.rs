//! Crafted bundles through the real binary (`ivctl import vmware`): a parent hint QEMU
//! would follow, extents outside the bundle, an OVA with a huge unreferenced entry, and
//! VMDK headers whose fields overflow. Each is refused with a message naming the file and
//! the reference, exits 1 (never a panic's 101), and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::fixtures::*;

fn ivctl(source: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .args(["import", "vmware"])
        .arg(source)
        .arg("--out")
        .arg(out)
        .args(["--offline", "--storage-quota-remaining", "10Gi", "--force"])
        .args(extra)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

/// Expect exit 1, every needle on stderr, no panic and an empty (or absent) --out.
fn refused(out: &Output, dir: &Path, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {err}\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
    assert!(entries(dir).is_empty(), "left behind: {:?}", entries(dir));
}

/// A one-disk OVF bundle in `dir` (its VMDK of `subformat`, 1 MiB); returns the OVF.
fn bundle(dir: &Path, subformat: &str) -> PathBuf {
    let raw = raw_disk(dir, "d.raw", 1, 9);
    vmdk_from_raw(&raw, &dir.join("disk.vmdk"), subformat, "lsilogic");
    std::fs::remove_file(raw).unwrap();
    let spec = OvfSpec::simple(vec![disk("disk.vmdk", 1 << 20, "lsilogic", 0)]);
    std::fs::write(dir.join("vm.ovf"), ovf_text(&spec)).unwrap();
    dir.join("vm.ovf")
}

fn tar(dir: &Path, ova: &Path, files: &[&str], sparse: bool) {
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(dir).arg("-cf").arg(ova);
    if sparse {
        cmd.arg("--sparse");
    }
    run_ok(cmd.args(files));
}

#[test]
fn an_ova_whose_descriptor_hides_a_parent_hint_in_a_comment_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "monolithicFlat");
    // Inside the text: qemu-img pads descriptors with NULs, and QEMU stops at the first.
    let desc = std::fs::read_to_string(src.join("disk.vmdk"))
        .unwrap()
        .replacen(
            "# Disk DescriptorFile\n",
            "# Disk DescriptorFile\n# parentFileNameHint=\"/etc/passwd\"\n",
            1,
        );
    assert!(desc.contains("/etc/passwd"));
    std::fs::write(src.join("disk.vmdk"), desc).unwrap();
    write_manifest(
        &src,
        "vm.mf",
        &["vm.ovf", "disk.vmdk", "disk-flat.vmdk"],
        false,
    );
    let ova = dir.path().join("vm.ova");
    tar(
        &src,
        &ova,
        &["vm.ovf", "vm.mf", "disk.vmdk", "disk-flat.vmdk"],
        false,
    );
    let out = dir.path().join("out");
    refused(
        &ivctl(&ova, &out, &[]),
        &out,
        &["disk.vmdk", "parentFileNameHint", "/etc/passwd"],
    );
    let dry = dir.path().join("dry");
    refused(&ivctl(&ova, &dry, &["--dry-run"]), &dry, &["/etc/passwd"]);
    assert!(!dry.exists(), "a dry run creates nothing, not even --out");
}

#[test]
fn a_declared_parent_outside_the_bundle_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = bundle(dir.path(), "monolithicFlat");
    let desc = std::fs::read_to_string(dir.path().join("disk.vmdk"))
        .unwrap()
        .replace(
            "parentCID=ffffffff",
            "parentCID=12345678\nparentFileNameHint=\"/etc/passwd\"",
        );
    std::fs::write(dir.path().join("disk.vmdk"), desc).unwrap();
    let out = dir.path().join("out");
    refused(
        &ivctl(&ovf, &out, &[]),
        &out,
        &["disk.vmdk", "\"/etc/passwd\" points outside the bundle"],
    );
}

#[test]
fn flat_extents_outside_the_bundle_are_refused_naming_the_extent() {
    let json = r#"json:{"driver":"file","filename":"/etc/hostname"}"#;
    for target in ["/etc/hostname", "../x", "nbd:127.0.0.1:10809", json] {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("bundle");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(dir.path().join("x"), vec![0u8; 1 << 20]).unwrap();
        let ovf = bundle(&inner, "monolithicFlat");
        let desc = std::fs::read_to_string(inner.join("disk.vmdk"))
            .unwrap()
            .replace("\"disk-flat.vmdk\"", &format!("\"{target}\""));
        std::fs::write(inner.join("disk.vmdk"), desc).unwrap();
        let out = dir.path().join("out");
        let res = ivctl(&ovf, &out, &[]);
        let err = String::from_utf8_lossy(&res.stderr).into_owned();
        assert_eq!(res.status.code(), Some(1), "{target}: {err}");
        assert!(err.contains("disk.vmdk"), "{target}: {err}");
        assert!(entries(&out).is_empty(), "{target}: {:?}", entries(&out));
    }
}

#[test]
fn an_ova_with_a_huge_sparse_unreferenced_entry_skips_it_and_a_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "streamOptimized");
    // 64 GiB of holes: a few KiB in the archive, 64 GiB if unpacked.
    let big = std::fs::File::create(src.join("big.iso")).unwrap();
    big.set_len(64 << 30).unwrap();
    drop(big);
    let ova = dir.path().join("vm.ova");
    tar(&src, &ova, &["vm.ovf", "disk.vmdk", "big.iso"], true);
    assert!(std::fs::metadata(&ova).unwrap().len() < 16 << 20);

    let dry = dir.path().join("dry");
    let started = Instant::now();
    let res = ivctl(&ova, &dry, &["--dry-run", "--report", "json"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(!dry.exists(), "a dry run creates nothing, not even --out");
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(report["status"], "dry-run");
    assert_eq!(report["disks"][0]["capacityBytes"], 1 << 20);

    let out = dir.path().join("out");
    let res = ivctl(&ova, &out, &[]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let written: u64 = walk(&out)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(written < 8 << 20, "{written} bytes written");
    assert!(walk(&out).iter().all(|p| !p.ends_with("big.iso")));
}

#[test]
fn an_ova_entry_above_the_cap_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "monolithicFlat");
    let ova = dir.path().join("vm.ova");
    tar(
        &src,
        &ova,
        &["vm.ovf", "disk.vmdk", "disk-flat.vmdk"],
        false,
    );
    let out = dir.path().join("out");
    refused(
        &ivctl(&ova, &out, &["--max-ova-entry", "64Ki"]),
        &out,
        &["disk-flat.vmdk", "larger than 65536 bytes"],
    );
}

#[test]
fn vmdk_headers_with_overflowing_fields_exit_with_an_error_not_a_panic() {
    // (field offset, width, value): capacity, grain size, descriptor offset, GTEs, GD offset.
    let crafted: [(usize, usize, u64); 6] = [
        (12, 8, u64::MAX),
        (12, 8, (64 << 40) / 512 + 1),
        (20, 8, 1 << 63),
        (28, 8, u64::MAX / 512 + 1),
        (44, 4, u64::from(u32::MAX)),
        (56, 8, u64::MAX / 512 + 1),
    ];
    for (subformat, (at, width, value)) in ["monolithicSparse", "streamOptimized"]
        .iter()
        .flat_map(|s| crafted.iter().map(move |c| (*s, *c)))
    {
        let dir = tempfile::tempdir().unwrap();
        let ovf = bundle(dir.path(), subformat);
        let vmdk = dir.path().join("disk.vmdk");
        let mut img = std::fs::read(&vmdk).unwrap();
        img[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        std::fs::write(&vmdk, img).unwrap();
        let out = dir.path().join("out");
        let res = ivctl(&ovf, &out, &[]);
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(
            res.status.code(),
            Some(1),
            "{subformat} @{at}={value}: {err}"
        );
        assert!(
            err.contains("disk.vmdk") && !err.contains("panicked"),
            "{err}"
        );
        assert!(entries(&out).is_empty());
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// QEMU's view on its own (without the parser's checks in front of it): a parent hint in
/// a comment and a FLAT extent outside the bundle are both caught from `qemu-img info`,
/// and the host file is never opened as a backing file.
#[test]
fn qemus_own_view_catches_what_the_parser_would_have_missed() {
    use ivctl::import::qemu_view::{self, ViewError};
    use ivctl::import::sandbox::Sandbox;
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), "monolithicFlat");
    let vmdk = dir.path().join("disk.vmdk");
    let clean = std::fs::read_to_string(&vmdk).unwrap();
    let sandbox = Sandbox::default();
    qemu_view::check(Path::new(QEMU_IMG), &sandbox, dir.path(), &vmdk).unwrap();

    let hinted = clean.replacen(
        "# Disk DescriptorFile\n",
        "# Disk DescriptorFile\n# parentFileNameHint=\"/etc/passwd\"\n",
        1,
    );
    std::fs::write(&vmdk, hinted).unwrap();
    let err = qemu_view::check(Path::new(QEMU_IMG), &sandbox, dir.path(), &vmdk).unwrap_err();
    assert!(
        matches!(&err, ViewError::Outside { what: "backing file", reference, .. } if reference == "/etc/passwd"),
        "{err}"
    );

    let outside = clean.replace("\"disk-flat.vmdk\"", "\"/etc/hostname\"");
    std::fs::write(&vmdk, outside).unwrap();
    let err = qemu_view::check(Path::new(QEMU_IMG), &sandbox, dir.path(), &vmdk).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("disk.vmdk") && text.contains("extent") && text.contains("/etc/hostname"),
        "{text}"
    );
}

/// A `qemu-img` that logs who runs it, where, with what, then runs the real one.
fn logging_qemu_img(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("qemu-img.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let real = ivctl::import::sandbox::locate(Path::new(QEMU_IMG)).unwrap();
    let script = dir.join("qemu-img");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"uid=$(id -u) $(grep CapEff /proc/self/status | tr -d '\\t') \
             net=$(tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,) \
             env=$(env | cut -d= -f1 | sort | tr '\\n' ,)\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            real.display()
        ),
    )
    .unwrap();
    for p in [dir, script.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (script, log)
}

#[test]
fn qemu_img_runs_without_network_capabilities_or_environment_and_as_nobody_under_root() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let (qemu_img, log) = logging_qemu_img(&tools);
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "streamOptimized");
    let ova = dir.path().join("vm.ova");
    tar(&src, &ova, &["vm.ovf", "disk.vmdk"], false);
    let out = dir.path().join("out");
    let res = Command::new(env!("CARGO_BIN_EXE_ivctl"))
        .args(["import", "vmware"])
        .arg(&ova)
        .arg("--out")
        .arg(&out)
        .args(["--offline", "--storage-quota-remaining", "10Gi", "--force"])
        .env("IVCTL_QEMU_IMG", &qemu_img)
        .env("SECRET_TOKEN", "must-not-leak")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let runs = std::fs::read_to_string(&log).unwrap();
    assert!(
        runs.lines().count() >= 4,
        "info, chain, convert, compare: {runs}"
    );
    let root = nix::unistd::geteuid().is_root();
    for run in runs.lines() {
        assert!(run.contains("CapEff:0000000000000000"), "{run}");
        assert!(run.contains("net=lo,"), "only a loopback: {run}");
        assert!(!run.contains("SECRET_TOKEN"), "{run}");
        if root {
            assert!(run.starts_with("uid=65534 "), "{run}");
        }
    }
    let image = walk(&out)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "qcow2"));
    let meta = std::fs::metadata(image.expect("an image")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        meta.uid(),
        nix::unistd::geteuid().as_raw(),
        "images are given back"
    );
}

#[test]
fn a_bundle_nobody_cannot_read_is_converted_without_capabilities_and_the_report_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("private");
    std::fs::create_dir(&src).unwrap();
    let ovf = bundle(&src, "monolithicSparse");
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o700)).unwrap();
    let res = ivctl(&ovf, &dir.path().join("out"), &[]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    let noted =
        err.contains("note: qemu-img ran as root without capabilities: user nobody cannot read");
    assert_eq!(noted, nix::unistd::geteuid().is_root(), "{err}");
}

#[test]
fn relative_source_and_out_paths_still_convert_with_qemu_img_in_the_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    bundle(&src, "monolithicFlat");
    tar(
        &src,
        &dir.path().join("vm.ova"),
        &["vm.ovf", "disk.vmdk", "disk-flat.vmdk"],
        false,
    );
    for (source, out) in [("src/vm.ovf", "out-ovf"), ("vm.ova", "out-ova")] {
        let res = Command::new(env!("CARGO_BIN_EXE_ivctl"))
            .current_dir(dir.path())
            .args(["import", "vmware", source, "--out", out, "--offline"])
            .args(["--storage-quota-remaining", "10Gi", "--force"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(res.status.success(), "{source}: {err}");
        assert!(
            dir.path()
                .join(out)
                .join("simple/simple-scsi0-0.qcow2")
                .is_file()
        );
    }
}
