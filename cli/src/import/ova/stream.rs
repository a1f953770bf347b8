//! Streaming one tar entry of an OVA: to a file or nowhere, under a byte cap, hashed both
//! ways as it passes (and for a gzip entry, decompressed with the digests taken over the
//! compressed bytes). No I/O beyond the entry and its target.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::{HEAD_BYTES, OvaError};
use crate::import::bundle::{Algorithm, Hasher};
use crate::import::gunzip;

/// Digest both ways while writing (or only digesting, with no file).
struct Tee {
    file: Option<io::BufWriter<File>>,
    sha1: Hasher,
    sha256: Hasher,
    head: Vec<u8>,
    written: u64,
}

impl Tee {
    fn new(file: Option<File>) -> Self {
        Self {
            file: file.map(|f| io::BufWriter::with_capacity(1 << 20, f)),
            sha1: Hasher::new(Algorithm::Sha1),
            sha256: Hasher::new(Algorithm::Sha256),
            head: Vec::new(),
            written: 0,
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            f.write_all(buf)?;
        }
        self.sha1.update(buf);
        self.sha256.update(buf);
        let room = HEAD_BYTES.saturating_sub(self.head.len()).min(buf.len());
        self.head.extend_from_slice(&buf[..room]);
        self.written = self.written.saturating_add(buf.len() as u64);
        Ok(())
    }

    fn finish(self) -> io::Result<(String, String, Vec<u8>)> {
        if let Some(f) = self.file {
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        Ok((self.sha1.finish_hex(), self.sha256.finish_hex(), self.head))
    }
}

/// A small entry (descriptor, manifest) read into memory with its digests.
pub(super) fn read_text(
    entry: &mut impl Read,
    ova: &Path,
    name: &str,
    cap: u64,
) -> Result<(String, (String, String)), OvaError> {
    let (sha1, sha256, bytes) = copy_entry(entry, ova, name, None, cap).map_err(|e| match e {
        CopyError::TooLarge => OvaError::TooLarge {
            ova: ova.to_owned(),
            entry: name.to_owned(),
            limit: cap,
            why: "the most a descriptor or manifest may hold".into(),
        },
        CopyError::Ova(e) => e,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| OvaError::NotText {
        ova: ova.to_owned(),
        entry: name.to_owned(),
    })?;
    Ok((text, (sha1, sha256)))
}

pub(super) enum CopyError {
    TooLarge,
    Ova(OvaError),
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    sha1: Hasher,
    sha256: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha1.update(&buf[..n]);
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
}

/// Decompress a gzip entry to `t.dest` (or nowhere); the digests are of the entry's own
/// (compressed) bytes, as the manifest lists them, and the head is decompressed.
pub(super) fn gunzip_entry(
    entry: &mut impl Read,
    ova: &Path,
    t: gunzip::Target<'_>,
) -> Result<(String, String, Vec<u8>), OvaError> {
    let mut r = HashingReader {
        inner: entry,
        sha1: Hasher::new(Algorithm::Sha1),
        sha256: Hasher::new(Algorithm::Sha256),
    };
    let done = gunzip::gunzip(&mut r, t).map_err(|source| OvaError::Gunzip {
        ova: ova.to_owned(),
        source,
    })?;
    // Bytes after the last gzip member are part of the entry's digest too.
    io::copy(&mut r, &mut io::sink()).map_err(|source| OvaError::Archive {
        ova: ova.to_owned(),
        source,
    })?;
    Ok((r.sha1.finish_hex(), r.sha256.finish_hex(), done.head))
}

/// Stream one entry to `target` (or nowhere), at most `cap` bytes; returns its digests and
/// first bytes.
pub(super) fn copy_entry(
    entry: &mut impl Read,
    ova: &Path,
    name: &str,
    target: Option<&Path>,
    cap: u64,
) -> Result<(String, String, Vec<u8>), CopyError> {
    let write_err = |file: &Path| {
        let file = file.to_owned();
        move |source| {
            CopyError::Ova(OvaError::Write {
                file,
                entry: name.to_owned(),
                source,
            })
        }
    };
    let file = match target {
        Some(t) => {
            if let Some(parent) = t.parent() {
                std::fs::create_dir_all(parent).map_err(write_err(t))?;
            }
            Some(File::create_new(t).map_err(write_err(t))?)
        }
        None => None,
    };
    let shown = target.unwrap_or(Path::new(name));
    let mut tee = Tee::new(file);
    // A read error here is a truncated archive; a write error is the destination's fault.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).map_err(|source| {
            CopyError::Ova(OvaError::Archive {
                ova: ova.to_owned(),
                source,
            })
        })?;
        if n == 0 {
            break;
        }
        if tee.written.saturating_add(n as u64) > cap {
            return Err(CopyError::TooLarge);
        }
        tee.write(&buf[..n]).map_err(write_err(shown))?;
    }
    tee.finish().map_err(write_err(shown))
}
