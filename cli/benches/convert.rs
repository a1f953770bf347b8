//! Conversion benchmark: `ivctl`'s converter against plain `qemu-img convert` of the same
//! disk in the same run, and a multi-disk VM converted in parallel against one disk after
//! another.
//!
//! Run: `cargo bench -p ivctl --bench convert` (env: `IVCTL_BENCH_MIB` disk size, default
//! 256; `IVCTL_BENCH_DISKS` disks of the multi-disk VM, default 3; `IVCTL_BENCH_REPS`
//! repetitions, default 5; `IVCTL_BENCH_DIR` scratch directory, default /var/tmp).
//! Prints a Markdown table; figures are medians.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ivctl::import::convert::{Converter, Job, plain_convert};

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A disk like a real one: half incompressible data, a quarter zeros, a quarter text-like.
fn raw_disk(path: &Path, mib: usize, seed: u64) {
    let len = mib << 20;
    let mut data = vec![0u8; len];
    let mut x = seed | 1;
    for (i, chunk) in data.chunks_mut(8).enumerate() {
        let at = i * 8;
        if at < len / 2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        } else if at >= len * 3 / 4 {
            chunk.copy_from_slice(&b"log line"[..chunk.len()]);
        }
    }
    std::fs::write(path, data).expect("write raw disk");
}

fn vmdk(raw: &Path, dest: &Path, subformat: &str) {
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o"])
        .arg(format!("subformat={subformat}"))
        .arg(raw)
        .arg(dest)
        .status()
        .expect("qemu-img runs");
    assert!(st.success());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rm(p: &Path) {
    let _ = std::fs::remove_file(p);
}

/// Remove the previous output and flush dirty pages before a timed run.
fn settle(dest: &Path) {
    rm(dest);
    let _ = Command::new("sync").status();
}

fn main() {
    let mib = env_num("IVCTL_BENCH_MIB", 256);
    let disks = env_num("IVCTL_BENCH_DISKS", 3);
    let reps = env_num("IVCTL_BENCH_REPS", 5).max(1);
    let base = std::env::var_os("IVCTL_BENCH_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let dir = tempfile::tempdir_in(base).expect("scratch directory");
    let qemu_img = Converter::default().qemu_img;
    let quiet = |parallel| Converter {
        parallel,
        verify: false,
        progress: false,
        ..Converter::default()
    };

    println!(
        "disk: {mib} MiB (half random, a quarter zeros, a quarter repetitive); {reps} repetitions, medians\n"
    );
    println!(
        "| subformat | plain qemu-img convert | ivctl converter | ratio (ivctl/plain) | ivctl + verify |"
    );
    println!("|---|---|---|---|---|");
    let raw = dir.path().join("disk.raw");
    raw_disk(&raw, mib, 1);
    for sub in ["streamOptimized", "monolithicSparse", "monolithicFlat"] {
        let src = dir.path().join(format!("{sub}.vmdk"));
        vmdk(&raw, &src, sub);
        let dest = dir.path().join("out.qcow2");
        let (mut plain, mut ours, mut verified) = (Vec::new(), Vec::new(), Vec::new());
        let job = Job {
            label: sub.into(),
            source: src.clone(),
            dest: dest.clone(),
            expected_bytes: None,
            standalone: true,
        };
        for rep in 0..reps {
            // Alternate which goes first, and start each run with no dirty pages in flight,
            // so neither side pays for the other's writeback.
            for side in [rep % 2, 1 - rep % 2] {
                settle(&dest);
                if side == 0 {
                    plain.push(plain_convert(&qemu_img, &src, &dest).expect("plain convert"));
                } else {
                    let t = Instant::now();
                    quiet(1)
                        .run(std::slice::from_ref(&job))
                        .expect("ivctl convert");
                    ours.push(t.elapsed());
                }
            }
            settle(&dest);
            let t = Instant::now();
            Converter {
                verify: true,
                ..quiet(1)
            }
            .run(std::slice::from_ref(&job))
            .expect("ivctl convert + verify");
            verified.push(t.elapsed());
        }
        let (p, o, v) = (median(plain), median(ours), median(verified));
        let mbps = |d: Duration| mib as f64 / d.as_secs_f64();
        println!(
            "| {sub} | {:.2} s ({:.0} MiB/s) | {:.2} s ({:.0} MiB/s) | {:.2} | {:.2} s |",
            p.as_secs_f64(),
            mbps(p),
            o.as_secs_f64(),
            mbps(o),
            o.as_secs_f64() / p.as_secs_f64(),
            v.as_secs_f64()
        );
        rm(&src);
    }

    let per_disk = (mib / disks).max(1);
    let mut jobs = Vec::new();
    for i in 0..disks {
        let r = dir.path().join(format!("m{i}.raw"));
        raw_disk(&r, per_disk, 7 + i as u64);
        let src = dir.path().join(format!("m{i}.vmdk"));
        vmdk(&r, &src, "streamOptimized");
        rm(&r);
        jobs.push(Job {
            label: format!("disk{i}"),
            source: src,
            dest: dir.path().join(format!("m{i}.qcow2")),
            expected_bytes: None,
            standalone: true,
        });
    }
    let clean = |jobs: &[Job]| jobs.iter().for_each(|j| rm(&j.dest));
    let (mut seq, mut par) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        for side in [rep % 2, 1 - rep % 2] {
            clean(&jobs);
            let _ = Command::new("sync").status();
            let t = Instant::now();
            if side == 0 {
                quiet(1).run(&jobs).expect("sequential");
                seq.push(t.elapsed());
            } else {
                quiet(disks).run(&jobs).expect("parallel");
                par.push(t.elapsed());
            }
        }
    }
    let (s, p) = (median(seq), median(par));
    println!(
        "\nmulti-disk VM: {disks} streamOptimized disks of {per_disk} MiB, {} CPU(s)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| mode | time | speed-up |");
    println!("|---|---|---|");
    println!(
        "| one disk after another | {:.2} s | 1.00 |",
        s.as_secs_f64()
    );
    println!(
        "| in parallel | {:.2} s | {:.2} |",
        p.as_secs_f64(),
        s.as_secs_f64() / p.as_secs_f64()
    );
}
