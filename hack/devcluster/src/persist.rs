//! Optional on-disk persistence: an append-only log of checksummed records.
//!
//! Each committed change appends one line `<checksum> <json>\n`. On start the log is replayed up
//! to the first torn or corrupt line (a `kill -9` mid-write leaves at most one), then rewritten
//! compactly to a temporary file, fsynced and renamed over the old one, so the state directory
//! is readable after a crash at any instant. This module never interprets objects.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

const LOG: &str = "state.log";

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The data directory could not be read or written.
    #[error("data directory {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One replayed record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An object was written (full object, including its resourceVersion).
    Put {
        /// Storage key of its resource.
        key: String,
        /// The object.
        object: Value,
    },
    /// An object was removed at `rv`.
    Delete {
        /// Storage key of its resource.
        key: String,
        /// Namespace ("" if cluster scoped).
        namespace: String,
        /// Name.
        name: String,
        /// The resourceVersion of the deletion.
        rv: u64,
    },
}

/// The open log.
#[derive(Debug)]
pub struct Log {
    file: File,
    dir: PathBuf,
}

fn checksum(payload: &str) -> String {
    hex::encode(&Sha256::digest(payload.as_bytes())[..8])
}

fn encode(r: &Record) -> String {
    let v = match r {
        Record::Put { key, object } => json!({ "k": key, "o": object }),
        Record::Delete {
            key,
            namespace,
            name,
            rv,
        } => {
            json!({ "k": key, "ns": namespace, "n": name, "rv": rv })
        }
    };
    let payload = v.to_string();
    format!("{} {payload}\n", checksum(&payload))
}

fn decode(line: &str) -> Option<Record> {
    let (sum, payload) = line.split_once(' ')?;
    if checksum(payload) != sum {
        return None;
    }
    let v: Value = serde_json::from_str(payload).ok()?;
    let key = v["k"].as_str()?.to_string();
    if v.get("o").is_some() {
        return Some(Record::Put {
            key,
            object: v["o"].clone(),
        });
    }
    Some(Record::Delete {
        key,
        namespace: v["ns"].as_str()?.to_string(),
        name: v["n"].as_str()?.to_string(),
        rv: v["rv"].as_u64()?,
    })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every intact record of the log in `dir` (stopping at the first damaged line).
pub fn replay(dir: &Path) -> Result<Vec<Record>, PersistError> {
    let path = dir.join(LOG);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut out = vec![];
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        match decode(&line) {
            Some(r) => out.push(r),
            None => break,
        }
    }
    Ok(out)
}

impl Log {
    /// Atomically replaces the log in `dir` by `records` (temp file, fsync, rename, fsync dir)
    /// and opens it for appending.
    pub fn rewrite(dir: &Path, records: &[Record]) -> Result<Self, PersistError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(format!("{LOG}.tmp"));
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut buf = String::new();
            for r in records {
                buf.push_str(&encode(r));
            }
            f.write_all(buf.as_bytes()).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        let path = dir.join(LOG);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Self {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// Appends one record. A process kill after `write` returns keeps it (the page cache
    /// survives the process); a torn write is detected by the checksum on replay.
    pub fn append(&mut self, r: &Record) -> Result<(), PersistError> {
        let dir = self.dir.clone();
        self.file
            .write_all(encode(r).as_bytes())
            .map_err(io_err(&dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_stops_at_a_torn_tail_and_keeps_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::rewrite(dir.path(), &[]).unwrap();
        let put = Record::Put {
            key: "a.b".into(),
            object: json!({"metadata": {"name": "x"}}),
        };
        log.append(&put).unwrap();
        log.append(&Record::Delete {
            key: "a.b".into(),
            namespace: "".into(),
            name: "x".into(),
            rv: 3,
        })
        .unwrap();
        drop(log);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap();
        f.write_all(b"0123 {\"k\":\"a.b\",\"o\":{\"meta").unwrap();
        let r = replay(dir.path()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], put);
    }
}
