//! gzip-compressed files of an OVF package (`ovf:compression="gzip"`), decompressed as a
//! stream with a cap on what is written.
//!
//! The href names the compressed file and the manifest's digest is of the compressed bytes;
//! what QEMU converts is the decompressed file, written beside the other staged files. The
//! cap counts decompressed bytes as they are produced, so a small file that inflates without
//! end (a gzip bomb) stops one buffer past the cap instead of filling the disk. Never reads
//! more than the caller's reader gives, never writes outside `dest`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// Why a compressed file could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    /// Not gzip, or cut short.
    #[error(
        "{file}: cannot decompress it although ovf:compression=\"gzip\" says it is gzip \
         (corrupt or truncated); export it again"
    )]
    Corrupt {
        /// The compressed file.
        file: PathBuf,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// It inflates past its cap.
    #[error("{file}: decompresses to more than {limit} bytes ({why}); refusing to write it")]
    TooLarge {
        /// The compressed file.
        file: PathBuf,
        /// The cap in bytes.
        limit: u64,
        /// Where the cap comes from.
        why: String,
    },
    /// Writing the decompressed file failed (a full disk, say).
    #[error("{file}: cannot write the decompressed file")]
    Write {
        /// The file being written.
        file: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A decompressed file: its size and first bytes.
#[derive(Clone, Debug, Default)]
pub struct Gunzipped {
    /// Decompressed bytes.
    pub bytes: u64,
    /// The first `head_len` of them.
    pub head: Vec<u8>,
}

/// What to decompress and where.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The compressed file's name, for messages.
    pub shown: &'a Path,
    /// Where the decompressed file is created (it must not exist), or nowhere (a dry run).
    pub dest: Option<&'a Path>,
    /// Most decompressed bytes allowed.
    pub cap: u64,
    /// Where the cap comes from.
    pub why: &'a str,
    /// Decompressed bytes kept in memory.
    pub head_len: usize,
}

/// Decompress the gzip stream `reader` (one or more members) to `t.dest`.
pub fn gunzip(reader: impl Read, t: Target<'_>) -> Result<Gunzipped, GunzipError> {
    let write_err = |source| GunzipError::Write {
        file: t.dest.unwrap_or(t.shown).to_owned(),
        source,
    };
    let mut out = match t.dest {
        Some(d) => {
            if let Some(parent) = d.parent() {
                std::fs::create_dir_all(parent).map_err(write_err)?;
            }
            Some(io::BufWriter::with_capacity(
                1 << 20,
                File::create_new(d).map_err(write_err)?,
            ))
        }
        None => None,
    };
    let mut decoder = MultiGzDecoder::new(reader);
    let mut done = Gunzipped::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = decoder
            .read(&mut buf)
            .map_err(|source| GunzipError::Corrupt {
                file: t.shown.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        done.bytes = done.bytes.saturating_add(n as u64);
        if done.bytes > t.cap {
            return Err(GunzipError::TooLarge {
                file: t.shown.to_owned(),
                limit: t.cap,
                why: t.why.to_owned(),
            });
        }
        let room = t.head_len.saturating_sub(done.head.len()).min(n);
        done.head.extend_from_slice(&buf[..room]);
        if let Some(o) = &mut out {
            o.write_all(&buf[..n]).map_err(write_err)?;
        }
    }
    if let Some(o) = out {
        o.into_inner()
            .map_err(|e| write_err(e.into_error()))?
            .sync_all()
            .map_err(write_err)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn target<'a>(dest: Option<&'a Path>, cap: u64) -> Target<'a> {
        Target {
            shown: Path::new("disk.vmdk"),
            dest,
            cap,
            why: "test cap",
            head_len: 4,
        }
    }

    #[test]
    fn a_stream_of_members_decompresses_into_the_file_with_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/disk.vmdk");
        let mut data = gz(b"hello ");
        data.extend(gz(b"world"));
        let done = gunzip(data.as_slice(), target(Some(&dest), 11)).unwrap();
        assert_eq!((done.bytes, done.head.as_slice()), (11, &b"hell"[..]));
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
    }

    #[test]
    fn a_bomb_stops_at_the_cap_and_names_it() {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(&vec![0u8; 8 << 20]).unwrap();
        let zeros = e.finish().unwrap();
        assert!(
            zeros.len() < 64 << 10,
            "compresses well: {} bytes",
            zeros.len()
        );
        let err = gunzip(zeros.as_slice(), target(None, 1 << 20)).unwrap_err();
        assert!(
            matches!(err, GunzipError::TooLarge { limit, .. } if limit == 1 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("test cap"), "{err}");
    }

    #[test]
    fn plain_or_truncated_data_is_corrupt_not_a_vmdk_error() {
        for data in [b"KDMV not gzip".to_vec(), gz(b"hello world")[..12].to_vec()] {
            let err = gunzip(data.as_slice(), target(None, 100)).unwrap_err();
            assert!(matches!(err, GunzipError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("ovf:compression"), "{err}");
        }
    }
}
