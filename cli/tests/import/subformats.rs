//! Every VMDK subformat converts to a qcow2 that reads byte for byte like the source.

use crate::fixtures::*;
use crate::schema::validated;
use ivctl::import::report::Status;

fn import_one(subformat: &str) {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_disk(dir.path(), "disk.raw", 4, 0x5eed ^ subformat.len() as u64);
    vmdk_from_raw(&raw, &dir.path().join("disk.vmdk"), subformat, "lsilogic");
    let spec = OvfSpec::simple(vec![disk("disk.vmdk", 4 << 20, "lsilogic", 0)]);
    std::fs::write(dir.path().join("vm.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    let report = import(&request(&dir.path().join("vm.ovf"), &out)).unwrap();
    assert_eq!(report.status, Status::Imported);
    assert_eq!(report.disks[0].subformat, subformat);
    let vm_dir = out.join("simple");
    assert_eq!(
        entries(&vm_dir),
        vec!["simple-scsi0-0.qcow2", "simple.yaml"]
    );
    assert_qcow2_equals(
        &vm_dir.join("simple-scsi0-0.qcow2"),
        &std::fs::read(&raw).unwrap(),
    );
    let vm = validated(&vm_dir.join("simple.yaml"));
    assert_eq!(
        vm.spec.disks[0].source.host_path.as_ref().unwrap().path,
        "/var/lib/ironvisor/images/simple/simple-scsi0-0.qcow2"
    );
    assert_eq!(
        entries(&out),
        vec!["simple"],
        "no staging directory is left behind"
    );
}

#[test]
fn monolithic_sparse_converts_byte_for_byte() {
    import_one("monolithicSparse");
}

#[test]
fn stream_optimized_converts_byte_for_byte() {
    import_one("streamOptimized");
}

#[test]
fn monolithic_flat_converts_byte_for_byte() {
    import_one("monolithicFlat");
}

#[test]
fn two_gb_max_extent_sparse_converts_byte_for_byte() {
    import_one("twoGbMaxExtentSparse");
}

#[test]
fn two_gb_max_extent_flat_converts_byte_for_byte() {
    import_one("twoGbMaxExtentFlat");
}

/// Two extents of each kind in one descriptor, as a >2 GiB twoGbMaxExtent disk has, made
/// small: each extent made by qemu-img from one half of the raw disk.
fn multi_extent(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_disk(dir.path(), "disk.raw", 4, 99);
    let bytes = std::fs::read(&raw).unwrap();
    let half = bytes.len() / 2;
    let (sub, suffix, extent_kind) = if kind == "sparse" {
        ("twoGbMaxExtentSparse", "s001", "SPARSE")
    } else {
        ("twoGbMaxExtentFlat", "f001", "FLAT")
    };
    let mut lines = String::new();
    for (i, part) in [&bytes[..half], &bytes[half..]].into_iter().enumerate() {
        let p = dir.path().join(format!("part{i}.raw"));
        std::fs::write(&p, part).unwrap();
        vmdk_from_raw(&p, &dir.path().join(format!("p{i}.vmdk")), sub, "lsilogic");
        let offset = if kind == "sparse" { "" } else { " 0" };
        lines.push_str(&format!(
            "RW {} {extent_kind} \"p{i}-{suffix}.vmdk\"{offset}\n",
            part.len() / 512
        ));
    }
    std::fs::write(
        dir.path().join("disk.vmdk"),
        format!("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"{sub}\"\n\n# Extent description\n{lines}\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"),
    )
    .unwrap();
    let spec = OvfSpec::simple(vec![disk("disk.vmdk", 4 << 20, "lsilogic", 0)]);
    std::fs::write(dir.path().join("vm.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    import(&request(&dir.path().join("vm.ovf"), &out)).unwrap();
    assert_qcow2_equals(&out.join("simple/simple-scsi0-0.qcow2"), &bytes);
}

#[test]
fn a_sparse_disk_split_over_two_extents_is_joined_in_order() {
    multi_extent("sparse");
}

#[test]
fn a_flat_disk_split_over_two_extents_is_joined_in_order() {
    multi_extent("flat");
}

#[test]
fn a_converted_disk_keeps_its_virtual_size_when_it_is_not_a_whole_mib() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("odd.raw");
    let mut data = vec![0x5au8; (3 << 20) + 64 * 1024];
    data[12345] = 1;
    std::fs::write(&raw, &data).unwrap();
    vmdk_from_raw(&raw, &dir.path().join("odd.vmdk"), "streamOptimized", "ide");
    let spec = OvfSpec::simple(vec![disk("odd.vmdk", data.len() as u64, "ide", 0)]);
    std::fs::write(dir.path().join("vm.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    import(&request(&dir.path().join("vm.ovf"), &out)).unwrap();
    assert_qcow2_equals(&out.join("simple/simple-ide0-0.qcow2"), &data);
    let vm = validated(&out.join("simple/simple.yaml"));
    assert_eq!(vm.spec.disks[0].size.as_ref().unwrap().0, "3136Ki");
}

/// qemu 7.2 counts the first extent twice when a blank line stands right before it; the
/// converted disk would then be larger than the descriptor says and silently wrong.
#[test]
fn a_descriptor_that_qemu_reads_differently_from_its_extents_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_disk(dir.path(), "part.raw", 1, 5);
    vmdk_from_raw(
        &raw,
        &dir.path().join("p.vmdk"),
        "twoGbMaxExtentFlat",
        "lsilogic",
    );
    std::fs::write(
        dir.path().join("disk.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n\nRW 2048 FLAT \"p-f001.vmdk\" 0\n",
    )
    .unwrap();
    let spec = OvfSpec::simple(vec![disk("disk.vmdk", 1 << 20, "lsilogic", 0)]);
    std::fs::write(dir.path().join("vm.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    let err = import(&request(&dir.path().join("vm.ovf"), &out)).unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains("disk.vmdk") && text.contains("extents add up to 1048576"),
        "{text}"
    );
    assert!(entries(&out).is_empty());
}

/// A disk made as `disk.vmdk`, moved to `dest` (under the bundle), imported through an OVF.
fn import_moved(subformat: &str, dest: &str) {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_disk(dir.path(), "disk.raw", 4, 0x0dd ^ subformat.len() as u64);
    let made = dir.path().join("made");
    std::fs::create_dir(&made).unwrap();
    vmdk_from_raw(&raw, &made.join("disk.vmdk"), subformat, "lsilogic");
    let target = dir.path().join(dest);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    for entry in std::fs::read_dir(&made).unwrap() {
        let from = entry.unwrap().path();
        let name = from.file_name().unwrap().to_str().unwrap().to_owned();
        // The descriptor takes the new name; its extents keep theirs, beside it.
        let to = if name == "disk.vmdk" {
            target.clone()
        } else {
            target.parent().unwrap().join(name)
        };
        std::fs::rename(from, to).unwrap();
    }
    let spec = OvfSpec::simple(vec![disk(dest, 4 << 20, "lsilogic", 0)]);
    std::fs::write(dir.path().join("vm.ovf"), ovf_text(&spec)).unwrap();
    let out = dir.path().join("out");
    let report = import(&request(&dir.path().join("vm.ovf"), &out))
        .unwrap_or_else(|e| panic!("{subformat} at {dest}: {}", chain(&e)));
    assert_eq!(report.status, Status::Imported);
    assert_qcow2_equals(
        &out.join("simple").join("simple-scsi0-0.qcow2"),
        &std::fs::read(&raw).unwrap(),
    );
}

#[test]
fn a_sparse_disk_renamed_after_it_was_made_is_its_own_extent() {
    // The embedded descriptor still names "disk.vmdk".
    import_one_renamed("monolithicSparse");
    import_one_renamed("streamOptimized");
}

fn import_one_renamed(subformat: &str) {
    import_moved(subformat, "web-0.vmdk");
}

#[test]
fn extents_are_found_beside_a_descriptor_in_a_subfolder() {
    import_moved("monolithicFlat", "disks/web.vmdk");
    import_moved("twoGbMaxExtentSparse", "disks/web.vmdk");
}
