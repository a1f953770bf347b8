//! Disk conversion and verification with `qemu-img`, several disks at once.
//!
//! Each disk is one `qemu-img convert -p -O qcow2` process whose progress output
//! (`    (42.00/100%)\r`) drives one progress bar; then `qemu-img compare` proves the qcow2
//! reads the same as the source. Up to `parallel` disks run at once; the first failure
//! stops the others (their processes are killed) and is returned naming its file. The
//! caller owns the destination directory and removes it on failure.
//!
//! `qemu-img` runs in the [`Sandbox`] (no network, no privileges, empty environment). A disk
//! with no parent is opened with its backing disabled (`json:{..., "backing": null}`), so
//! a parent hint that got past every check still opens nothing; a snapshot delta keeps
//! its chain, which `qemu_view` has confined to the bundle.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::qemu_view::standalone_spec;
use super::sandbox::Sandbox;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// `qemu-img` could not be started.
    #[error("cannot run {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The destination file system is full.
    #[error("{dest}: no space left on device while converting {source_file}")]
    NoSpace {
        /// The image being written.
        dest: PathBuf,
        /// The disk being converted.
        source_file: PathBuf,
    },
    /// `qemu-img convert` failed.
    #[error("{source_file}: qemu-img convert failed: {message}")]
    Convert {
        /// The disk being converted.
        source_file: PathBuf,
        /// qemu-img's message.
        message: String,
    },
    /// The converted image differs from its source.
    #[error("{dest}: differs from {source_file} after conversion: {message}")]
    Mismatch {
        /// The image.
        dest: PathBuf,
        /// The disk.
        source_file: PathBuf,
        /// qemu-img compare's message.
        message: String,
    },
    /// The converted image's size is not what the descriptor says.
    #[error(
        "{source_file}: qemu-img read {actual} bytes, the descriptor's extents add up to {expected}"
    )]
    SizeMismatch {
        /// The disk.
        source_file: PathBuf,
        /// Bytes from the descriptor.
        expected: u64,
        /// Virtual size of the converted image.
        actual: u64,
    },
    /// Stopped because another disk failed.
    #[error("cancelled")]
    Cancelled,
}

/// One disk to convert.
#[derive(Clone, Debug)]
pub struct Job {
    /// Shown on the progress bar.
    pub label: String,
    /// The VMDK (descriptor or monolithic file).
    pub source: PathBuf,
    /// The qcow2 to write.
    pub dest: PathBuf,
    /// The virtual size the VMDK's descriptor promises; checked against the result.
    pub expected_bytes: Option<u64>,
    /// The disk has no parent: QEMU opens it with backing disabled.
    pub standalone: bool,
}

impl Job {
    /// The source as `qemu-img` is given it, with the format option that goes with it.
    fn source_args(&self, sandbox: &Sandbox) -> Vec<std::ffi::OsString> {
        let path = sandbox.arg(&self.source);
        if self.standalone {
            vec![standalone_spec(&path).into()]
        } else {
            vec!["-f".into(), "vmdk".into(), path.into_os_string()]
        }
    }
}

/// Timing of one finished disk.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTiming {
    /// The job's label.
    pub label: String,
    /// Seconds spent converting.
    pub convert_seconds: f64,
    /// Seconds spent verifying.
    pub verify_seconds: f64,
}

/// How to run conversions.
#[derive(Clone, Debug)]
pub struct Converter {
    /// The `qemu-img` binary.
    pub qemu_img: PathBuf,
    /// Disks converted at the same time.
    pub parallel: usize,
    /// Run `qemu-img compare` after each conversion.
    pub verify: bool,
    /// Draw progress bars (on stderr, when it is a terminal).
    pub progress: bool,
    /// How `qemu-img` runs.
    pub sandbox: Sandbox,
}

impl Default for Converter {
    fn default() -> Self {
        Self {
            qemu_img: std::env::var_os("IVCTL_QEMU_IMG")
                .map_or_else(|| "qemu-img".into(), PathBuf::from),
            parallel: 4,
            verify: true,
            progress: true,
            sandbox: Sandbox::default(),
        }
    }
}

/// Parse the last `(NN.NN/100%)` in a chunk of `qemu-img -p` output.
pub fn parse_progress(chunk: &str) -> Option<f64> {
    chunk
        .rsplit(['\r', '\n'])
        .filter_map(|line| {
            let inner = line.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
            inner.parse::<f64>().ok()
        })
        .next()
}

impl Converter {
    /// Convert and verify every job; returns per-disk timings in job order.
    pub fn run(&self, jobs: &[Job]) -> Result<Vec<JobTiming>, ConvertError> {
        let multi = MultiProgress::with_draw_target(if self.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style =
            ProgressStyle::with_template("{prefix:>12} [{bar:40}] {percent:>3}% {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bars: Vec<ProgressBar> = jobs
            .iter()
            .map(|j| {
                let b = multi.add(ProgressBar::new(10_000));
                b.set_style(style.clone());
                b.set_prefix(j.label.clone());
                b
            })
            .collect();
        let next = AtomicUsize::new(0);
        let cancel = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<JobTiming, ConvertError>>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        let workers = self.parallel.clamp(1, jobs.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= jobs.len() {
                            break;
                        }
                        let r = if cancel.load(Ordering::SeqCst) {
                            Err(ConvertError::Cancelled)
                        } else {
                            self.one(&jobs[i], &bars[i], &cancel)
                        };
                        if r.is_err() {
                            cancel.store(true, Ordering::SeqCst);
                            bars[i].abandon_with_message("failed");
                        }
                        if let Ok(mut all) = results.lock() {
                            all[i] = Some(r);
                        }
                    }
                });
            }
        });
        let all = results.into_inner().unwrap_or_default();
        let mut out = Vec::with_capacity(jobs.len());
        let mut first_err = None;
        for r in all.into_iter().flatten() {
            match r {
                Ok(t) => out.push(t),
                Err(ConvertError::Cancelled) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if out.len() == jobs.len() => Ok(out),
            None => Err(ConvertError::Cancelled),
        }
    }

    fn spawn<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Child, ConvertError> {
        let spawn_err = |source| ConvertError::Spawn {
            binary: self.qemu_img.clone(),
            source,
        };
        self.sandbox
            .command(&self.qemu_img)
            .map_err(spawn_err)?
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)
    }

    fn one(
        &self,
        job: &Job,
        bar: &ProgressBar,
        cancel: &AtomicBool,
    ) -> Result<JobTiming, ConvertError> {
        let started = Instant::now();
        let mut args: Vec<std::ffi::OsString> = vec!["convert".into(), "-p".into()];
        args.extend(job.source_args(&self.sandbox));
        args.extend(["-O".into(), "qcow2".into()]);
        args.push(self.sandbox.arg(&job.dest).into_os_string());
        let mut child = self.spawn(&args)?;
        let stderr = drain_in_background(child.stderr.take());
        if let Some(mut out) = child.stdout.take() {
            let mut buf = [0u8; 256];
            loop {
                if cancel.load(Ordering::SeqCst) {
                    let _ = child.kill();
                    break;
                }
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(p) = parse_progress(&String::from_utf8_lossy(&buf[..n])) {
                            bar.set_position((p * 100.0) as u64);
                        }
                    }
                }
            }
        }
        let status = child.wait().map_err(|source| ConvertError::Spawn {
            binary: self.qemu_img.clone(),
            source,
        })?;
        let message = stderr.join().unwrap_or_default();
        if cancel.load(Ordering::SeqCst) && !status.success() {
            return Err(ConvertError::Cancelled);
        }
        if !status.success() {
            return Err(classify(job, &message));
        }
        let convert_seconds = started.elapsed().as_secs_f64();
        if let Some(expected) = job.expected_bytes {
            let actual = self.virtual_size(job)?;
            if actual != expected {
                return Err(ConvertError::SizeMismatch {
                    source_file: job.source.clone(),
                    expected,
                    actual,
                });
            }
        }
        bar.set_position(10_000);
        let verify_started = Instant::now();
        if self.verify {
            bar.set_message("verifying");
            self.compare(job)?;
        }
        bar.finish_with_message(if self.verify { "verified" } else { "done" });
        Ok(JobTiming {
            label: job.label.clone(),
            convert_seconds,
            verify_seconds: verify_started.elapsed().as_secs_f64(),
        })
    }

    /// Virtual size of the converted image, from `qemu-img info`.
    fn virtual_size(&self, job: &Job) -> Result<u64, ConvertError> {
        let dest = self.sandbox.arg(&job.dest);
        let child = self.spawn(&[
            "info".as_ref(),
            "--output=json".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            dest.as_os_str(),
        ])?;
        let out = child
            .wait_with_output()
            .map_err(|source| ConvertError::Spawn {
                binary: self.qemu_img.clone(),
                source,
            })?;
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        info["virtual-size"]
            .as_u64()
            .ok_or_else(|| ConvertError::Convert {
                source_file: job.source.clone(),
                message: format!(
                    "qemu-img info gave no virtual size for {}",
                    job.dest.display()
                ),
            })
    }

    fn compare(&self, job: &Job) -> Result<(), ConvertError> {
        let mut args: Vec<std::ffi::OsString> = vec!["compare".into(), "-U".into()];
        args.extend(["-F".into(), "qcow2".into()]);
        args.extend(job.source_args(&self.sandbox));
        args.push(self.sandbox.arg(&job.dest).into_os_string());
        let child = self.spawn(&args)?;
        let out = child
            .wait_with_output()
            .map_err(|source| ConvertError::Spawn {
                binary: self.qemu_img.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let mut message = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.trim().is_empty() {
            message = format!("{message} {}", err.trim()).trim().to_owned();
        }
        Err(ConvertError::Mismatch {
            dest: job.dest.clone(),
            source_file: job.source.clone(),
            message,
        })
    }
}

fn drain_in_background(
    stream: Option<impl Read + Send + 'static>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = stream {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// Turn qemu-img's stderr into an error that names the right file.
fn classify(job: &Job, stderr: &str) -> ConvertError {
    if stderr.contains("No space left on device") || stderr.contains("ENOSPC") {
        return ConvertError::NoSpace {
            dest: job.dest.clone(),
            source_file: job.source.clone(),
        };
    }
    let message = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_owned();
    ConvertError::Convert {
        source_file: job.source.clone(),
        message,
    }
}

/// Convert one disk with plain `qemu-img convert` (no progress, no verification): the
/// benchmark's baseline.
pub fn plain_convert(qemu_img: &Path, source: &Path, dest: &Path) -> std::io::Result<Duration> {
    let started = Instant::now();
    let status = Command::new(qemu_img)
        .args(["convert", "-f", "vmdk", "-O", "qcow2"])
        .arg(source)
        .arg(dest)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "qemu-img convert exited with {status}"
        )));
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_read_from_the_last_update_in_a_chunk() {
        assert_eq!(
            parse_progress("    (0.00/100%)\r    (12.50/100%)\r"),
            Some(12.5)
        );
        assert_eq!(parse_progress("    (100.00/100%)\n"), Some(100.0));
        assert_eq!(parse_progress("garbage"), None);
    }

    #[test]
    fn a_full_disk_message_becomes_a_no_space_error_naming_the_image() {
        let job = Job {
            label: "d".into(),
            source: "/in/a.vmdk".into(),
            dest: "/out/a.qcow2".into(),
            expected_bytes: None,
            standalone: true,
        };
        let e = classify(
            &job,
            "qemu-img: error while writing at byte 0: No space left on device\n",
        );
        assert!(matches!(e, ConvertError::NoSpace { .. }));
        assert!(e.to_string().starts_with("/out/a.qcow2"), "{e}");
        let e = classify(
            &job,
            "qemu-img: Could not open '/in/a.vmdk': Invalid footer\n",
        );
        assert!(
            e.to_string().contains("/in/a.vmdk") && e.to_string().contains("Invalid footer"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_qemu_img_is_a_spawn_error() {
        let c = Converter {
            qemu_img: "/nonexistent/qemu-img".into(),
            progress: false,
            ..Converter::default()
        };
        let job = Job {
            label: "d".into(),
            source: "/in/a.vmdk".into(),
            dest: "/tmp/never.qcow2".into(),
            expected_bytes: None,
            standalone: true,
        };
        assert!(matches!(c.run(&[job]), Err(ConvertError::Spawn { .. })));
    }
}
