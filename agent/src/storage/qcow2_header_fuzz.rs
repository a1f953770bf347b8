//! Fuzz targets for the qcow2 header gate, run in the normal suite for a bounded number of
//! cases: random bytes, and structure-aware mutations of qemu-img's own qcow2 files
//! (header fields set to overflowing values, extensions with hostile lengths, feature bits).
//! Properties: no panic, and an accepted header never has a backing file, a data file,
//! encryption or an unknown incompatible bit. A smaller set of mutations is also handed to
//! `qemu-img info -f qcow2`: whatever the gate accepts, QEMU must see no backing file and
//! no data file in it. Crashes found are kept as named regression tests below.

use super::*;
use crate::storage::qcow2_header::tests::{made, with_extension};
use proptest::prelude::*;
use std::sync::OnceLock;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// qemu-img's own images: v2, v3, v3 with an unknown extension, v3 with a backing file.
fn seeds() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let v3 = made(dir.path(), "v3.qcow2", "compat=1.1");
        vec![
            made(dir.path(), "v2.qcow2", "compat=0.10"),
            with_extension(v3.clone(), 0x0bad_cafe, b"tenant data"),
            made(
                dir.path(),
                "b.qcow2",
                "backing_file=/etc/hostname,backing_fmt=raw",
            ),
            v3,
        ]
    })
}

/// Header fields as (offset, width in bytes).
const FIELDS: [(usize, usize); 14] = [
    (4, 4),   // version
    (8, 8),   // backing_file_offset
    (16, 4),  // backing_file_size
    (20, 4),  // cluster_bits
    (24, 8),  // size
    (32, 4),  // crypt_method
    (36, 4),  // l1_size
    (40, 8),  // l1_table_offset
    (72, 8),  // incompatible_features
    (80, 8),  // compatible_features
    (96, 4),  // refcount_order
    (100, 4), // header_length
    (104, 4), // first extension's type
    (108, 4), // first extension's length
];

fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(4),
        Just(7),
        Just(72),
        Just(104),
        Just(112),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(1 << 61),
        Just(u64::from(ext::DATA_FILE)),
        Just(u64::from(ext::BACKING_FORMAT)),
        any::<u64>(),
    ]
}

fn set(buf: &mut [u8], (at, width): (usize, usize), v: u64) {
    let bytes = v.to_be_bytes();
    if let Some(dst) = buf.get_mut(at..at + width) {
        dst.copy_from_slice(&bytes[8 - width..]);
    }
}

/// What an accepted header must never carry.
fn assert_safe(buf: &[u8], h: &Header) {
    assert!((2..=3).contains(&h.version));
    assert!((9..=21).contains(&h.cluster_bits));
    assert_eq!(h.incompatible & (INCOMPAT_DATA_FILE | INCOMPAT_CORRUPT), 0);
    assert_eq!(h.incompatible & !INCOMPAT_KNOWN, 0);
    assert!(h.extensions.iter().all(|e| e.kind != ext::DATA_FILE));
    assert_eq!(be64(buf, 8), Some(0), "backing offset");
    assert_eq!(be32(buf, 16), Some(0), "backing size");
    assert_eq!(be32(buf, 32), Some(0), "crypt method");
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds().len(),
        prop::collection::vec((0..FIELDS.len(), interesting()), 1..4),
        prop::option::of(0usize..200),
    )
        .prop_map(|(seed, edits, cut)| {
            let mut b = seeds()[seed].clone();
            for (f, v) in edits {
                set(&mut b, FIELDS[f], v);
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            b
        })
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = detect(&bytes);
        let mut q = QCOW2_MAGIC.to_be_bytes().to_vec();
        q.extend(&bytes);
        if let Ok(Detected::Qcow2(h)) = detect(&q) {
            assert_safe(&q, &h);
        }
    }

    #[test]
    fn mutated_headers_are_accepted_only_when_safe(buf in mutated()) {
        if let Ok(h) = parse(&buf) {
            assert_safe(&buf, &h);
        }
    }

    #[test]
    fn extensions_with_hostile_lengths_never_panic(
        kind in prop_oneof![Just(ext::DATA_FILE), Just(ext::END), any::<u32>()],
        len in interesting(),
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = with_extension(seeds()[3].clone(), kind, &data);
        set(&mut b, (108, 4), len);
        if let Ok(h) = parse(&b) {
            assert_safe(&b, &h);
        }
    }
}

/// Mutations of the fields a hostile image may set while still passing the gate (no
/// backing, data file or encryption seeds): what QEMU then makes of them is the question.
fn plausible() -> impl Strategy<Value = Vec<u8>> {
    const SOFT: [usize; 7] = [4, 6, 7, 9, 10, 11, 13]; // size, l1, compat, refcount, ext len
    (
        prop_oneof![Just(0usize), Just(1), Just(3)],
        prop::collection::vec((prop::sample::select(&SOFT[..]), interesting()), 1..3),
    )
        .prop_map(|(seed, edits)| {
            let mut b = seeds()[seed].clone();
            for (f, v) in edits {
                set(&mut b, FIELDS[f], v);
            }
            b
        })
}

/// Whatever the gate accepts, QEMU's own reading of it names no other file; and enough
/// cases are accepted for that to mean something.
#[test]
fn what_the_gate_accepts_qemu_reads_without_other_files() {
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(config(48));
    runner
        .run(&plausible(), |buf| {
            if parse(&buf).is_err() {
                return Ok(());
            }
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("m.qcow2");
            let mut full = buf.clone();
            full.resize(full.len().max(1 << 20), 0);
            std::fs::write(&p, &full).unwrap();
            let out = std::process::Command::new("qemu-img")
                .args(["info", "-f", "qcow2", "--output=json", "-U"])
                .arg(&p)
                .output()
                .unwrap();
            if out.status.success() {
                let info: crate::storage::qcow2::ImageInfo =
                    serde_json::from_slice(&out.stdout).unwrap();
                prop_assert!(info.backing_filename.is_none(), "{info:?}");
                prop_assert!(info.data_file().is_none(), "{info:?}");
            }
            Ok(())
        })
        .unwrap();
    let n = accepted.into_inner();
    assert!(n >= 10, "only {n} of 48 cases reached QEMU");
}
