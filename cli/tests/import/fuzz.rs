//! Fuzz targets for the parsers a crafted bundle reaches: VMDK sparse headers with their
//! embedded descriptors, VMDK text descriptors, OVF, VMX and the OVA reader. Each runs in
//! the normal suite for a bounded number of cases (a few seconds in all) on random bytes
//! and on structure-aware mutations of real-shaped inputs (qemu-img's own VMDKs, the OVF
//! and VMX fixtures). Properties: no panic, no overflow, and the security invariants — a
//! descriptor that parses has no parent hint QEMU would read differently, and a capacity
//! that parses is in range. Crashes found are kept as named regression tests below.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use ivctl::import::vmdk::{self, Descriptor, MAX_CAPACITY_BYTES, SparseHeader};
use ivctl::import::vmdk_check::check_image;
use ivctl::import::{ova, ovf, vmx};
use proptest::prelude::*;

use crate::fixtures::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Real VMDKs from qemu-img (1 MiB, monolithicSparse and streamOptimized), made once.
fn real_vmdks() -> &'static [Vec<u8>] {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_disk(dir.path(), "d.raw", 1, 5);
        ["monolithicSparse", "streamOptimized"]
            .iter()
            .map(|f| {
                let p = dir.path().join(format!("{f}.vmdk"));
                vmdk_from_raw(&raw, &p, f, "lsilogic");
                std::fs::read(p).unwrap()
            })
            .collect()
    })
}

/// Header fields as (offset, width in bytes).
const HEADER_FIELDS: [(usize, usize); 9] = [
    (4, 4),  // version
    (8, 4),  // flags
    (12, 8), // capacity
    (20, 8), // grain size
    (28, 8), // descriptor offset
    (36, 8), // descriptor size
    (44, 4), // GTEs per GT
    (56, 8), // GD offset
    (64, 8), // overhead
];

/// Values that break naive arithmetic.
fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(128),
        Just(512),
        Just(4096),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(u64::MAX / 512 + 1),
        Just(u64::MAX / 4 + 1),
        Just(1 << 55),
        Just((64 << 40) / 512 + 1),
        any::<u64>(),
    ]
}

/// Text that a hostile descriptor could hold.
fn descriptor_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("# parentFileNameHint=\"/etc/passwd\"\n".to_owned()),
        Just("parentFileNameHint=\"base.vmdk\"\n".to_owned()),
        Just("parentFileNameHint = \"base.vmdk\"\n".to_owned()),
        Just("parentFileNameHint".to_owned()),
        Just("parentCID=12345678\n".to_owned()),
        Just("createType=\"monolithicFlat\"\n".to_owned()),
        Just("createType=\"monolithicSparse\"\n".to_owned()),
        Just("RW 18446744073709551615 FLAT \"x-flat.vmdk\" 18446744073709551615\n".to_owned()),
        Just("RW 36028797018963968 SPARSE \"x.vmdk\"\n".to_owned()),
        Just("RW 2048 FLAT \"/etc/hostname\" 0\n".to_owned()),
        Just("RW 2048 FLAT \"../x\" 0\n".to_owned()),
        Just("RW 8 ZERO\n".to_owned()),
        Just("RDONLY 8 VMFS \"json:{}\"\n".to_owned()),
        Just("\0".to_owned()),
        "[ -~]{0,40}\n",
        (any::<u64>(), any::<u64>()).prop_map(|(s, o)| format!("RW {s} FLAT \"f.vmdk\" {o}\n")),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Field(usize, u64),
    Byte(usize, u8),
    Text(usize, String),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (0..HEADER_FIELDS.len(), interesting()).prop_map(|(f, v)| Mutation::Field(f, v)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Byte(p, b)),
        2 => (any::<usize>(), descriptor_token()).prop_map(|(p, t)| Mutation::Text(p, t)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(img: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Field(f, v) => {
            let (at, width) = HEADER_FIELDS[*f];
            if img.len() >= at + width {
                img[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
        }
        Mutation::Byte(p, b) if !img.is_empty() => {
            let n = img.len();
            img[p % n] = *b;
        }
        // Text goes where descriptors live: the first sectors.
        Mutation::Text(p, t) => {
            let at = (p % 4096).min(img.len());
            let end = (at + t.len()).min(img.len());
            img.splice(at..end, t.bytes());
        }
        Mutation::Truncate(p) => {
            let n = img.len().max(1);
            img.truncate(p % n);
        }
        Mutation::Byte(..) => {}
    }
}

/// What check_image promises when it accepts.
fn accepted_is_sane(img: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(d) = check_image(img) {
        let cap = d.capacity_bytes();
        prop_assert!(matches!(cap, Ok(c) if c <= MAX_CAPACITY_BYTES), "{cap:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1200))]

    #[test]
    fn vmdk_images_mutated_from_qemu_img_never_panic(
        which in 0..2usize,
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut img = real_vmdks()[which].clone();
        for m in &muts {
            apply(&mut img, m);
        }
        accepted_is_sane(&img)?;
    }
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn random_bytes_behind_a_sparse_magic_never_panic(
        header in prop::collection::vec(any::<u8>(), 508..2048),
        fields in prop::collection::vec((0..HEADER_FIELDS.len(), interesting()), 0..6),
    ) {
        let mut img = vmdk::SPARSE_MAGIC.to_le_bytes().to_vec();
        img.extend(header);
        for (f, v) in fields {
            apply(&mut img, &Mutation::Field(f, v));
        }
        if let Ok(h) = SparseHeader::parse(&img) {
            prop_assert!(h.gd_entries().is_some());
        }
        accepted_is_sane(&img)?;
    }

    #[test]
    fn descriptors_never_disagree_with_qemu_about_the_parent(
        lines in prop::collection::vec(descriptor_token(), 0..12),
    ) {
        let text: String = lines.concat();
        if let Ok(d) = Descriptor::parse(&text) {
            let _ = d.capacity_bytes();
            if d.check_qemu_parent(text.as_bytes()).is_ok() {
                let qemu = vmdk::qemu_parent_hint(text.as_bytes());
                prop_assert!(
                    qemu.is_none() || qemu == d.parent_file_name_hint,
                    "QEMU reads {qemu:?}, the parser {:?}", d.parent_file_name_hint
                );
            }
        }
        accepted_is_sane(text.as_bytes())?;
    }

    #[test]
    fn random_bytes_as_a_descriptor_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Descriptor::parse(&String::from_utf8_lossy(&bytes));
        let _ = vmdk::qemu_parent_hint(&bytes);
        accepted_is_sane(&bytes)?;
    }
}

/// The OVF fixture, rendered once.
fn real_ovf() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| {
        ovf_text(&OvfSpec::simple(vec![disk(
            "disk.vmdk",
            8 << 30,
            "lsilogic",
            0,
        )]))
    })
}

/// Numbers and units that a hostile OVF could hold.
fn ovf_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("18446744073709551615".to_owned()),
        Just("byte * 2^64".to_owned()),
        Just("byte * 2^63".to_owned()),
        Just("byte * 1024 * 1024 * 1024 * 1024 * 1024 * 1024 * 1024".to_owned()),
        Just("byte * 0^0".to_owned()),
        Just("4294967295".to_owned()),
        Just("-1".to_owned()),
        Just(String::new()),
        Just("${log.size}".to_owned()),
        Just("${".to_owned()),
        Just("tiny normal".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..80).prop_map(|e| format!("byte * 2^{e}")),
    ]
}

proptest! {
    #![proptest_config(config(900))]

    #[test]
    fn ovf_fixtures_with_hostile_numbers_never_panic(
        swaps in prop::collection::vec((any::<usize>(), ovf_value()), 1..6),
        cut in any::<Option<usize>>(),
    ) {
        let mut text = real_ovf().to_owned();
        // Replace the text of some element or attribute value with a hostile one.
        let spots: Vec<(usize, usize)> = text
            .match_indices(['>', '"'])
            .filter_map(|(i, c)| {
                let end = text[i + 1..].find(if c == ">" { '<' } else { '"' })? + i + 1;
                (end > i + 1 || c == "\"").then_some((i + 1, end))
            })
            .collect();
        for (pick, value) in swaps {
            let (a, b) = spots[pick % spots.len()];
            if b <= text.len() && text.is_char_boundary(a) && text.is_char_boundary(b) && a <= b {
                text.replace_range(a..b, &value);
            }
        }
        if let Some(c) = cut {
            let c = c % (text.len() + 1);
            if text.is_char_boundary(c) {
                text.truncate(c);
            }
        }
        let _ = ovf::parse(&text);
    }

    #[test]
    fn appliance_ovfs_with_hostile_values_options_and_properties_never_panic(
        swaps in prop::collection::vec((any::<usize>(), ovf_value()), 1..6),
        option in prop::option::of(prop_oneof![Just("tiny".to_owned()), Just("large".to_owned()), "[a-z]{0,6}"]),
        prop_value in prop::option::of(ovf_value()),
    ) {
        let mut text = crate::appliances::appliance_ovf(" ovf:compression=\"gzip\"");
        for (pick, value) in swaps {
            // Quote positions move as values are replaced: find them each time.
            let spots: Vec<usize> = text.match_indices('"').map(|(i, _)| i + 1).collect();
            let a = spots[pick % spots.len()];
            if let Some(len) = text[a..].find('"') {
                text.replace_range(a..a + len, &value);
            }
        }
        let opts = ovf::ParseOptions {
            deployment_option: option,
            properties: prop_value.map(|v| ("log.size".to_owned(), v)).into_iter().collect(),
        };
        let _ = ovf::parse_with(&text, &opts);
    }

    #[test]
    fn random_bytes_as_gzip_never_panic_nor_exceed_the_cap(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        member in any::<bool>(),
    ) {
        use ivctl::import::gunzip::{Target, gunzip};
        // Half the cases start with a real gzip header so the decoder gets past it.
        let mut data = if member { vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255] } else { Vec::new() };
        data.extend(bytes);
        let t = Target { shown: Path::new("f.vmdk"), dest: None, cap: 4096, why: "fuzz", head_len: 64 };
        if let Ok(done) = gunzip(data.as_slice(), t) {
            prop_assert!(done.bytes <= 4096 && done.head.len() <= 64);
        }
    }

    #[test]
    fn random_network_maps_never_panic_and_every_entry_parses_as_a_pair(
        text in "[ -~\n#=:]{0,300}",
        yaml in any::<bool>(),
    ) {
        use ivctl::import::netmap::parse_file;
        let file = Path::new(if yaml { "m.yaml" } else { "m.txt" });
        if let Ok(entries) = parse_file(file, &text) {
            for (from, _) in entries {
                prop_assert!(!from.is_empty());
            }
        }
    }

    #[test]
    fn hostile_vapp_values_make_user_data_that_reads_back(
        values in prop::collection::vec("[ -~\n\t\\\"'&<>:#{}\\[\\]]{0,40}", 1..5),
    ) {
        use ivctl::import::ovf::VappProperty;
        let keys = ["guestinfo.hostname", "public-keys", "guestinfo.dns", "x"];
        let props: Vec<VappProperty> = values
            .iter()
            .zip(keys)
            .map(|(v, k)| VappProperty {
                key: k.into(),
                kind: "string".into(),
                value: Some(v.clone()),
                password: false,
                user_configurable: true,
                label: None,
            })
            .collect();
        if let Some(ci) = ivctl::import::vapp::cloud_init(&props) {
            let body = ci.user_data.strip_prefix("#cloud-config\n").unwrap();
            let doc: serde_json::Value = serde_saphyr::from_str(body).unwrap();
            let env = doc["write_files"][0]["content"].as_str().unwrap();
            // The OVF environment is well-formed XML whatever the values.
            prop_assert!(ivctl::import::xml::parse(env).is_ok(), "{env}");
        }
    }

    #[test]
    fn random_text_as_an_ovf_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ovf::parse(&String::from_utf8_lossy(&bytes));
        let _ = ovf::units(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn vmx_keys_with_hostile_values_never_panic(
        pairs in prop::collection::vec((vmx_key(), vmx_value()), 0..16),
        noise in "[ -~|\n]{0,64}",
    ) {
        let mut text = String::from(".encoding = \"UTF-8\"\n");
        for (k, v) in pairs {
            text.push_str(&format!("{k} = \"{v}\"\n"));
        }
        text.push_str(&noise);
        if let Ok(keys) = vmx::Vmx::parse(&text) {
            let _ = vmx::to_source_vm(&keys, "x");
            let _ = vmx::snapshot_count(&keys);
        }
    }

    #[test]
    fn ova_streams_mutated_from_a_real_one_never_panic_and_write_nothing(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let mut tar = real_ova().to_vec();
        for (p, b) in flips {
            let n = tar.len();
            tar[p % n] = b;
        }
        tar.truncate(cut % (tar.len() + 1));
        let limits = ova::Limits { max_entry_bytes: 1 << 20 };
        let _ = ova::extract_from(tar.as_slice(), Path::new("f.ova"), None, limits, &Default::default());
    }
}

fn vmx_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "numvcpus",
        "cpuid.coresPerSocket",
        "memsize",
        "firmware",
        "scsi0.present",
        "scsi0.virtualDev",
        "scsi0:0.present",
        "scsi0:0.fileName",
        "scsi0:0.deviceType",
        "sata0.present",
        "sata0:1.present",
        "ethernet0.present",
        "ethernet0.address",
        "snapshot.numSnapshots",
        "pciPassthru0.present",
        "serial0.present",
    ])
}

fn vmx_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("TRUE".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("4294967295".to_owned()),
        Just("|".to_owned()),
        Just("|2".to_owned()),
        Just("|zz|22".to_owned()),
        Just("../../etc/passwd".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}",
    ]
}

/// A small real OVA (OVF, then a referenced VMDK), made once.
fn real_ova() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("vm.ovf", real_ovf().as_bytes()),
            ("disk.vmdk", real_vmdks()[1].as_slice()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    })
}

// Regression cases: crafted headers that overflowed before the arithmetic was checked.

/// A sparse header whose descriptor offset times 512 overflows.
#[test]
fn a_descriptor_offset_overflowing_in_bytes_is_an_error() {
    let mut img = real_vmdks()[0].clone();
    apply(&mut img, &Mutation::Field(4, u64::MAX / 512 + 1));
    let err = check_image(img.as_slice()).unwrap_err();
    assert!(err.contains("out of range"), "{err}");
}

/// A capacity whose size in bytes overflows u64 is refused at the header (it reached the
/// grain walk's `entries * 4` before).
#[test]
fn a_capacity_overflowing_in_bytes_is_an_error() {
    let mut img = real_vmdks()[0].clone();
    apply(&mut img, &Mutation::Field(2, u64::MAX));
    let err = check_image(img.as_slice()).unwrap_err();
    assert!(err.contains("out of range"), "{err}");
}

/// A controller Address of u32::MAX made the next index overflow.
#[test]
fn an_ovf_controller_at_the_last_address_does_not_overflow() {
    let text = real_ovf().replacen(
        "<rasd:Address>0</rasd:Address>",
        "<rasd:Address>4294967295</rasd:Address>",
        1,
    );
    assert_ne!(text, real_ovf());
    ovf::parse(&text).unwrap();
}

/// Deeply nested elements are refused while reading: the element tree is dropped, cloned
/// and printed recursively, so its depth is what bounds those recursions.
#[test]
fn a_deeply_nested_ovf_is_refused_while_reading() {
    let depth = 1_000_000;
    let text = format!(
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\">{}{}</Envelope>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    );
    let err = ovf::parse(&text).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
}

/// Disk capacities and memory whose units overflow u64 are refused, not saturated.
#[test]
fn an_ovf_capacity_overflowing_in_bytes_is_an_error() {
    let text = real_ovf().replace(
        "ovf:capacityAllocationUnits=\"byte\"",
        "ovf:capacityAllocationUnits=\"byte * 2^40\"",
    );
    assert_ne!(text, real_ovf());
    let err = ovf::parse(&text).unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
}

/// The crafted descriptors of the issue: a hint in a comment, and a hint after the
/// declared descriptor size that QEMU still reads.
#[test]
fn a_parent_hint_qemu_would_read_is_refused_wherever_it_hides() {
    let text = "createType=\"monolithicFlat\"\nRW 8 FLAT \"f.vmdk\" 0\n# parentFileNameHint=\"/etc/passwd\"\n";
    let err = check_image(text.as_bytes()).unwrap_err();
    assert!(err.contains("/etc/passwd"), "{err}");

    // An embedded descriptor declared 1 sector long: QEMU still reads 20 sectors.
    let mut img = real_vmdks()[0].clone();
    apply(&mut img, &Mutation::Field(5, 1));
    let h = SparseHeader::parse(&img).unwrap();
    let start = h.descriptor_offset as usize * 512;
    let declared = start + 512;
    // Fill the declared sector so no NUL ends it, then hide the hint just after it.
    let desc_len = img[start..declared].iter().position(|b| *b == 0).unwrap();
    img[start + desc_len..declared].fill(b' ');
    let hint = b"parentFileNameHint=\"/etc/shadow\"";
    img[declared..declared + hint.len()].copy_from_slice(hint);
    let err = check_image(img.as_slice()).unwrap_err();
    assert!(err.contains("/etc/shadow"), "{err}");
}

#[test]
fn the_fuzz_inputs_are_real_vmdks() {
    for img in real_vmdks() {
        check_image(img.as_slice()).unwrap();
    }
    let out = Command::new(QEMU_IMG).arg("--version").output().unwrap();
    assert!(out.status.success());
}
