//! The header gate on files qemu-img made, and on the crafted ones a tenant could serve.

use super::*;
use std::path::Path;
use std::process::Command;

/// Run qemu-img with `args` (test helper; panics with its stderr on failure).
pub(crate) fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first bytes of a file, as the gate reads them.
pub(crate) fn head(p: &Path) -> Vec<u8> {
    let mut b = std::fs::read(p).unwrap();
    b.truncate(HEADER_READ_BYTES);
    b
}

/// A fresh qcow2 of 1 MiB made with extra `-o` options; returns its first bytes.
pub(crate) fn made(dir: &Path, name: &str, opts: &str) -> Vec<u8> {
    let p = dir.join(name);
    let p = p.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", "qcow2", p, "1M"]);
    } else {
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p, "1M"]);
    }
    head(Path::new(p))
}

/// Write `ext` (type, data) as the first header extension of a v3 image made by qemu-img,
/// keeping the extensions that were there after it and every offset of the image: the
/// bytes it takes come out of the zero padding at the end of the first cluster.
pub(crate) fn with_extension(mut img: Vec<u8>, kind: u32, data: &[u8]) -> Vec<u8> {
    let at = usize::try_from(be32(&img, 100).unwrap()).unwrap();
    let cluster = 1usize << be32(&img, 20).unwrap();
    let mut e = kind.to_be_bytes().to_vec();
    e.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
    e.extend(data);
    e.resize(8 + data.len().div_ceil(8) * 8, 0);
    let len = e.len();
    let end = cluster.min(img.len());
    assert!(img[end - len..end].iter().all(|b| *b == 0), "no room");
    img.splice(at..at, e);
    img.drain(end..end + len);
    img
}

#[test]
fn a_plain_qcow2_of_either_version_passes_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    for (opts, version) in [("compat=0.10", 2), ("compat=1.1", 3)] {
        let h = parse(&made(dir.path(), "a.qcow2", opts)).unwrap();
        assert_eq!((h.version, h.size, h.cluster_bits), (version, 1 << 20, 16));
        assert!(h.unknown_extensions().is_empty(), "{h:?}");
    }
}

#[test]
fn a_backing_file_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let opts = "backing_file=/etc/hostname,backing_fmt=raw";
    let err = parse(&made(dir.path(), "b.qcow2", opts)).unwrap_err();
    assert_eq!(err, HeaderError::Backing("/etc/hostname".into()));
}

#[test]
fn an_external_data_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("other-vm.raw");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let opts = format!("data_file={}", data.display());
    let err = parse(&made(dir.path(), "d.qcow2", &opts)).unwrap_err();
    assert!(matches!(err, HeaderError::DataFile(_)), "{err}");
    assert!(err.to_string().contains("external data file"), "{err}");
}

#[test]
fn a_data_file_name_extension_alone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = with_extension(
        made(dir.path(), "e.qcow2", "compat=1.1"),
        ext::DATA_FILE,
        b"/var/lib/ironvisor/vms/x/disk-root.qcow2",
    );
    let err = parse(&img).unwrap_err();
    assert!(
        err.to_string().contains("data-file-name extension"),
        "{err}"
    );
}

#[test]
fn unknown_extensions_are_listed_and_unknown_incompatible_bits_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = with_extension(
        made(dir.path(), "u.qcow2", "compat=1.1"),
        0x1234_5678,
        b"hello",
    );
    assert_eq!(parse(&img).unwrap().unknown_extensions(), vec![0x1234_5678]);
    let mut bits = img.clone();
    bits[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
    assert_eq!(
        parse(&bits).unwrap_err(),
        HeaderError::UnknownFeatures(1 << 40)
    );
    let mut corrupt = img;
    corrupt[72..80].copy_from_slice(&2u64.to_be_bytes());
    assert_eq!(parse(&corrupt).unwrap_err(), HeaderError::Corrupt);
}

#[test]
fn an_extension_that_crosses_the_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = made(dir.path(), "x.qcow2", "compat=1.1");
    let at = usize::try_from(be32(&img, 100).unwrap()).unwrap();
    img[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    img[at + 4..at + 8].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = parse(&img).unwrap_err();
    assert!(
        matches!(
            err,
            HeaderError::Field {
                field: "extension length",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn encryption_odd_versions_and_truncation_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = made(dir.path(), "v.qcow2", "compat=1.1");
    let mut enc = img.clone();
    enc[32..36].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(parse(&enc).unwrap_err(), HeaderError::Encrypted(1));
    let mut v1 = img.clone();
    v1[4..8].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(parse(&v1).unwrap_err(), HeaderError::Version(1));
    assert!(matches!(
        parse(&img[..50]).unwrap_err(),
        HeaderError::Truncated(50)
    ));
    let mut big_cluster = img;
    big_cluster[20..24].copy_from_slice(&40u32.to_be_bytes());
    assert!(matches!(
        parse(&big_cluster).unwrap_err(),
        HeaderError::Field {
            field: "cluster_bits",
            ..
        }
    ));
}

#[test]
fn other_formats_are_refused_and_anything_else_is_raw() {
    let dir = tempfile::tempdir().unwrap();
    let vmdk = dir.path().join("a.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", vmdk.to_str().unwrap(), "1M"]);
    assert_eq!(
        detect(&head(&vmdk)).unwrap_err(),
        HeaderError::OtherFormat("VMDK")
    );
    let descriptor = b"# Disk DescriptorFile\nRW 2048 FLAT \"/etc/shadow\" 0\n";
    assert!(detect(descriptor).is_err());
    let vdi = dir.path().join("a.vdi");
    qemu_img(&["create", "-q", "-f", "vdi", vdi.to_str().unwrap(), "1M"]);
    assert_eq!(
        detect(&head(&vdi)).unwrap_err(),
        HeaderError::OtherFormat("VDI")
    );
    assert_eq!(detect(&[0u8; 4096]).unwrap(), Detected::Raw);
    assert_eq!(detect(b"").unwrap(), Detected::Raw);
    let q = made(dir.path(), "q.qcow2", "");
    assert_eq!(detect(&q).unwrap().format(), "qcow2");
}
