//! Unit tests of the OVA reader on archives built in memory.

use super::*;

/// An OVF that references `disk.vmdk` (with `size`, when given).
fn ovf(size: Option<u64>) -> String {
    let size = size
        .map(|s| format!(" ovf:size=\"{s}\""))
        .unwrap_or_default();
    format!(
        r#"<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <ovf:References><ovf:File ovf:id="f1" ovf:href="disk.vmdk"{size}/></ovf:References>
  <ovf:VirtualSystem ovf:id="vm"><ovf:VirtualHardwareSection/></ovf:VirtualSystem>
</ovf:Envelope>"#
    )
}

fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses "..", so write the raw name as a hostile archive would.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn run(tar: &[u8], dest: Option<&Path>) -> Result<Extracted, OvaError> {
    extract_from(
        tar,
        Path::new("vm.ova"),
        dest,
        Limits::default(),
        &Default::default(),
    )
}

#[test]
fn referenced_files_are_extracted_with_both_digests_and_others_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let text = ovf(None);
    let tar = tar_with(&[
        ("vm.ovf", text.as_bytes()),
        ("vm.mf", b""),
        ("disk.vmdk", b"hello"),
        ("extra.iso", b"not referenced"),
    ]);
    let x = run(&tar, Some(dir.path())).unwrap();
    assert_eq!(x.ovf_name, "vm.ovf");
    assert_eq!(x.manifest, Some(("vm.mf".into(), String::new())));
    let (sha1, sha256) = &x.digests["disk.vmdk"];
    assert_eq!(sha1, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
    assert_eq!(
        sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(
        std::fs::read(dir.path().join("disk.vmdk")).unwrap(),
        b"hello"
    );
    assert_eq!(x.skipped, vec!["extra.iso".to_owned()]);
    assert!(!dir.path().join("extra.iso").exists());
    assert!(
        !dir.path().join("vm.ovf").exists(),
        "the descriptor stays in memory"
    );
}

#[test]
fn with_no_destination_nothing_is_written_and_heads_are_kept() {
    let text = ovf(None);
    let tar = tar_with(&[("vm.ovf", text.as_bytes()), ("disk.vmdk", b"hello")]);
    let x = run(&tar, None).unwrap();
    assert_eq!(x.heads["disk.vmdk"], b"hello");
    assert!(x.digests.contains_key("disk.vmdk"));
}

#[test]
fn a_file_larger_than_its_declared_size_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = ovf(Some(3));
    let tar = tar_with(&[("vm.ovf", text.as_bytes()), ("disk.vmdk", b"hello")]);
    let err = run(&tar, Some(dir.path())).unwrap_err();
    assert!(matches!(err, OvaError::TooLarge { limit: 3, .. }), "{err}");
    assert!(err.to_string().contains("disk.vmdk"), "{err}");
}

#[test]
fn the_absolute_cap_applies_when_nothing_is_declared() {
    let text = ovf(None);
    let tar = tar_with(&[("vm.ovf", text.as_bytes()), ("disk.vmdk", b"hello")]);
    let limits = Limits { max_entry_bytes: 4 };
    let err = extract_from(
        tar.as_slice(),
        Path::new("vm.ova"),
        None,
        limits,
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, OvaError::TooLarge { limit: 4, .. }), "{err}");
}

#[test]
fn an_entry_climbing_out_is_refused_naming_it_even_unreferenced() {
    let dir = tempfile::tempdir().unwrap();
    let text = ovf(None);
    let tar = tar_with(&[("vm.ovf", text.as_bytes()), ("../evil.vmdk", b"x")]);
    let err = run(&tar, Some(dir.path())).unwrap_err();
    assert!(matches!(err, OvaError::Traversal { .. }), "{err}");
    assert!(err.to_string().contains("../evil.vmdk"), "{err}");
    assert!(!dir.path().parent().unwrap().join("evil.vmdk").exists());
}

#[test]
fn a_truncated_archive_is_an_archive_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = ovf(None);
    let tar = tar_with(&[("vm.ovf", text.as_bytes()), ("disk.vmdk", &[7u8; 4096])]);
    let err = run(&tar[..2048], Some(dir.path())).unwrap_err();
    assert!(matches!(err, OvaError::Archive { .. }), "{err}");
}

#[test]
fn an_archive_not_starting_with_its_descriptor_is_refused() {
    let text = ovf(None);
    for tar in [
        tar_with(&[("disk.vmdk", b"x")]),
        tar_with(&[("disk.vmdk", b"x"), ("vm.ovf", text.as_bytes())]),
    ] {
        assert!(matches!(run(&tar, None), Err(OvaError::NoDescriptor(_))));
    }
}
