//! Conversion throughput, measured on this host: a scratch VMDK is made, converted to qcow2
//! and compared with `qemu-img`, as an import does, and timed.
//!
//! The figure is stated as measured (or as given with `--throughput`), with the sample size,
//! so nobody mistakes it for a promise: real exports on other storage convert at their own
//! speed. The scratch file has no zero blocks, so qemu-img cannot skip them.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A conversion rate and where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    /// Bytes of guest data converted and verified per second.
    pub bytes_per_second: u64,
    /// `measured` or `given`.
    pub source: String,
    /// How it was obtained, in words.
    pub detail: String,
}

/// Why the measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Writing the scratch file failed.
    #[error("cannot write the scratch file")]
    Io(#[from] std::io::Error),
    /// qemu-img failed or is missing.
    #[error("qemu-img {step} failed: {detail}; install qemu-utils or pass --throughput")]
    QemuImg {
        /// Which step.
        step: &'static str,
        /// Its stderr.
        detail: String,
    },
}

fn qemu_img(bin: &Path, step: &'static str, args: &[&std::ffi::OsStr]) -> Result<(), MeasureError> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| MeasureError::QemuImg {
            step,
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MeasureError::QemuImg {
            step,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Measure: write `sample_bytes` of non-zero data, make it a VMDK (untimed), then time
/// `qemu-img convert -f vmdk -O qcow2` plus `qemu-img compare`.
pub fn measure(qemu_img_bin: &Path, sample_bytes: u64) -> Result<Throughput, MeasureError> {
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("sample.raw");
    let vmdk = dir.path().join("sample.vmdk");
    let qcow2 = dir.path().join("sample.qcow2");
    write_sample(&raw, sample_bytes)?;
    let os = |p: &Path| p.as_os_str().to_owned();
    let (raw_s, vmdk_s, qcow2_s) = (os(&raw), os(&vmdk), os(&qcow2));
    qemu_img(
        qemu_img_bin,
        "convert (making the sample)",
        &[
            "convert".as_ref(),
            "-f".as_ref(),
            "raw".as_ref(),
            "-O".as_ref(),
            "vmdk".as_ref(),
            &raw_s,
            &vmdk_s,
        ],
    )?;
    let start = Instant::now();
    qemu_img(
        qemu_img_bin,
        "convert",
        &[
            "convert".as_ref(),
            "-f".as_ref(),
            "vmdk".as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            &vmdk_s,
            &qcow2_s,
        ],
    )?;
    let converted = start.elapsed();
    qemu_img(
        qemu_img_bin,
        "compare",
        &[
            "compare".as_ref(),
            "-f".as_ref(),
            "vmdk".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            &vmdk_s,
            &qcow2_s,
        ],
    )?;
    let total = start.elapsed().as_secs_f64().max(1e-3);
    let rate = (sample_bytes as f64 / total).max(1.0);
    Ok(Throughput {
        bytes_per_second: rate as u64,
        source: "measured".into(),
        detail: format!(
            "measured on this host: a {} MiB VMDK converted to qcow2 in {:.2} s and compared in {:.2} s",
            sample_bytes >> 20,
            converted.as_secs_f64(),
            total - converted.as_secs_f64()
        ),
    })
}

/// A rate the user gave.
pub fn given(bytes_per_second: u64) -> Throughput {
    Throughput {
        bytes_per_second: bytes_per_second.max(1),
        source: "given".into(),
        detail: format!("given with --throughput: {} MiB/s", bytes_per_second >> 20),
    }
}

fn write_sample(path: &Path, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    // A cheap pseudo-random stream (xorshift): no zero blocks and poorly compressible.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// Seconds to import `bytes` of guest data at a rate, rounded up.
pub fn seconds_for(bytes: u64, t: &Throughput) -> u64 {
    bytes.div_ceil(t.bytes_per_second.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up_and_never_divide_by_zero() {
        let t = given(0);
        assert_eq!(seconds_for(10, &t), 10);
        let t = given(100 << 20);
        assert_eq!(seconds_for((100 << 20) + 1, &t), 2);
        assert_eq!(seconds_for(u64::MAX, &t), u64::MAX.div_ceil(100 << 20));
    }

    #[test]
    fn a_missing_qemu_img_says_how_to_go_on() {
        let e = measure(Path::new("/nonexistent/qemu-img"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("--throughput"), "{e}");
    }
}
