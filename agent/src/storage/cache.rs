//! Images downloaded over HTTP(S), once per host, into a cache keyed by their sha256.
//!
//! A download streams into a temporary file while hashing; only a file whose hash matches
//! goes on, so the cache never holds a partial or wrong image. A disk's image is then
//! converted into a standalone qcow2 the agent made ([`super::convert`]) and only that is
//! kept; a kernel or initrd is kept as downloaded. Two VMs asking for the same image share
//! one download. [`ImageCache::poll`] runs the download in the background and reports its
//! progress, so a reconcile never waits for it. The cache stays under its size limit by
//! removing images no VM uses ([`super::cache_gc`]); when nothing can go, the image waits.

use futures::StreamExt;
use ironvisor_crds::vm::ImageFormat;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

use super::cache_gc::{self, CacheFull, GcError};
use super::convert::{self, ConvertError};
use super::fetch_policy::{FetchPolicy, Refused};
use super::layout;

/// Why an image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request failed or the server answered with an error.
    #[error("download failed: {0}")]
    Http(String),
    /// The image's hash is not the one the spec names. Permanent until the spec changes.
    /// The digest received is logged for the admin, never shown in the VM's status: echoing
    /// it would make the status an oracle for what a URL serves.
    #[error("checksum mismatch: the image does not have sha256 {expected}")]
    Checksum {
        /// From the spec.
        expected: String,
        /// Of the bytes received (for the agent's log only).
        actual: String,
    },
    /// The URL or an address it leads to is not allowed. Permanent until the spec changes.
    #[error("download refused: {0}")]
    Refused(#[from] Refused),
    /// The image is larger than the agent allows.
    #[error("the image is larger than the agent's limit of {limit} bytes (--image-max-bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The sha256 in the spec is malformed.
    #[error("sha256 {0:?} is not 64 hexadecimal digits")]
    BadDigest(String),
    /// The image may not become a disk (its format, a backing or data file). Permanent:
    /// the same bytes are always refused.
    #[error("{0}")]
    Format(String),
    /// Converting the image failed (a tool or file error); retried.
    #[error("converting the image failed: {0}")]
    Convert(String),
    /// The cache is full of images in use; retried as VMs release images.
    #[error(transparent)]
    CacheFull(#[from] CacheFull),
    /// Local file error.
    #[error("cannot write the image cache")]
    Io(#[from] std::io::Error),
}

impl DownloadError {
    /// Whether retrying cannot help (the VM fails with this reason until its spec changes).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DownloadError::Checksum { .. }
                | DownloadError::BadDigest(_)
                | DownloadError::Refused(_)
                | DownloadError::TooLarge { .. }
                | DownloadError::Format(_)
        )
    }
}

impl From<ConvertError> for DownloadError {
    fn from(e: ConvertError) -> Self {
        let message = crate::reconcile::failure::chain(&e);
        if e.is_refusal() {
            DownloadError::Format(message)
        } else {
            DownloadError::Convert(message)
        }
    }
}

impl From<GcError> for DownloadError {
    fn from(e: GcError) -> Self {
        match e {
            GcError::Full(f) => DownloadError::CacheFull(f),
            GcError::Io(io) => DownloadError::Io(io),
        }
    }
}

/// What a cached file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageUse {
    /// A disk's base image: converted into a standalone qcow2 the agent made, opened as the
    /// declared format (`None`: as its header reads).
    Disk(Option<ImageFormat>),
    /// A kernel or initrd: kept as downloaded (QEMU loads it as a file, never as a disk).
    BootFile,
}

impl ImageUse {
    /// The cache entry for the image with this (checked) sha256.
    pub fn entry(self, state_dir: &Path, sha: &str) -> PathBuf {
        match self {
            ImageUse::Disk(f) => layout::cached_disk_image(state_dir, sha, f.map(|f| f.as_str())),
            ImageUse::BootFile => layout::cached_image(state_dir, sha),
        }
    }
}

/// Bytes received so far by a download, and its announced size (0: unknown).
#[derive(Debug, Default)]
pub struct Progress {
    received: AtomicU64,
    total: AtomicU64,
}

/// Where an image stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// Verified and in the cache.
    Ready(PathBuf),
    /// Being downloaded.
    Downloading {
        /// Bytes so far.
        received: u64,
        /// Announced size, when the server sent one.
        total: Option<u64>,
    },
}

struct Job {
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<Result<PathBuf, DownloadError>>,
}

/// The host's image cache.
#[derive(Clone)]
pub struct ImageCache {
    state_dir: PathBuf,
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
    /// Most bytes the cache may hold on disk (`--image-cache-max-bytes`).
    max_cache_bytes: u64,
    /// Per cache entry: one download or conversion at a time.
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
    /// One collection at a time.
    gc: Arc<tokio::sync::Mutex<()>>,
    jobs: Arc<Mutex<HashMap<PathBuf, Job>>>,
    /// (url, expected sha256) → actual sha256 of downloads that did not match: not tried
    /// again until the spec names another URL or digest (or the agent restarts).
    mismatches: Arc<Mutex<HashMap<(String, String), String>>>,
    /// Cache entry → why its bytes may not become a disk: not downloaded again.
    refused: Arc<Mutex<HashMap<PathBuf, String>>>,
    /// VM directory name (its uid) → the entries its spec names: kept by collection even
    /// before the VM's disk is made on them (and boot files, which no disk references).
    wanted: Arc<Mutex<HashMap<String, HashSet<PathBuf>>>>,
}

fn check_digest(sha256: &str) -> Result<String, DownloadError> {
    let sha = sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(DownloadError::BadDigest(sha256.to_owned()));
    }
    Ok(sha)
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mark an entry used now (collection removes the least recently used first).
fn touch(path: &Path) {
    let r = std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = r {
        tracing::debug!(image = %path.display(), error = %e, "cannot mark the image used");
    }
}

impl ImageCache {
    /// A cache under `state_dir` with the default download policy and size limit.
    pub fn new(state_dir: &Path) -> Self {
        Self::with_policy(state_dir, FetchPolicy::default())
    }

    /// A cache under `state_dir` whose downloads follow `policy`.
    pub fn with_policy(state_dir: &Path, policy: FetchPolicy) -> Self {
        let policy = Arc::new(policy);
        Self {
            state_dir: state_dir.to_owned(),
            client: policy.client(),
            policy,
            max_cache_bytes: cache_gc::DEFAULT_CACHE_MAX_BYTES,
            locks: Arc::default(),
            gc: Arc::default(),
            jobs: Arc::default(),
            mismatches: Arc::default(),
            refused: Arc::default(),
            wanted: Arc::default(),
        }
    }

    /// The same cache limited to `max` bytes on disk.
    pub fn with_max_bytes(mut self, max: u64) -> Self {
        self.max_cache_bytes = max;
        self
    }

    fn lock_for(&self, entry: &Path) -> Arc<tokio::sync::Mutex<()>> {
        locked(&self.locks)
            .entry(entry.to_owned())
            .or_default()
            .clone()
    }

    /// Record the images (url, sha256, use) the VM with this uid names; they stay in the
    /// cache while it exists. Malformed digests are left out (they fail on their own).
    pub fn want(&self, uid: &str, images: &[(&str, ImageUse)]) {
        let entries = images
            .iter()
            .filter_map(|(sha, u)| Some(u.entry(&self.state_dir, &check_digest(sha).ok()?)))
            .collect();
        locked(&self.wanted).insert(uid.to_owned(), entries);
    }

    /// The VM with this uid is gone: its images may be collected (unless a disk uses them).
    pub fn release(&self, uid: &str) {
        locked(&self.wanted).remove(uid);
    }

    /// Collect unused images until `need` more bytes fit, keeping `also`.
    async fn make_room(&self, need: u64, also: &Path) -> Result<(), DownloadError> {
        let _one = self.gc.lock().await;
        let mut keep: HashSet<PathBuf> = locked(&self.wanted).values().flatten().cloned().collect();
        keep.insert(also.to_owned());
        cache_gc::make_room(&self.state_dir, need, self.max_cache_bytes, &keep).await?;
        Ok(())
    }

    /// A new entry is in place: collect what must go for it to fit, or take it out again.
    async fn settle(&self, entry: &Path) -> Result<(), DownloadError> {
        match self.make_room(0, entry).await {
            Err(DownloadError::CacheFull(full)) => {
                let bytes = tokio::fs::metadata(entry)
                    .await
                    .map(|m| std::os::unix::fs::MetadataExt::blocks(&m).saturating_mul(512))
                    .unwrap_or(0);
                tokio::fs::remove_file(entry).await?;
                Err(DownloadError::CacheFull(CacheFull {
                    used: full.used.saturating_sub(bytes),
                    need: bytes,
                    max: full.max,
                }))
            }
            other => other,
        }
    }

    /// The image's state without waiting: ready, or downloading in the background (started
    /// by the first call). A finished download's error is returned once; the next call
    /// starts a new attempt.
    pub async fn poll(
        &self,
        url: &str,
        sha256: &str,
        use_: ImageUse,
    ) -> Result<ImageState, DownloadError> {
        let sha = check_digest(sha256)?;
        let key = (url.to_owned(), sha.clone());
        if let Some(actual) = locked(&self.mismatches).get(&key) {
            return Err(DownloadError::Checksum {
                expected: sha,
                actual: actual.clone(),
            });
        }
        let target = use_.entry(&self.state_dir, &sha);
        if let Some(why) = locked(&self.refused).get(&target) {
            return Err(DownloadError::Format(why.clone()));
        }
        let finished = {
            let mut jobs = locked(&self.jobs);
            match jobs.get(&target) {
                Some(job) if !job.task.is_finished() => {
                    let total = job.progress.total.load(Ordering::Relaxed);
                    return Ok(ImageState::Downloading {
                        received: job.progress.received.load(Ordering::Relaxed),
                        total: (total > 0).then_some(total),
                    });
                }
                Some(_) => jobs.remove(&target),
                None => None,
            }
        };
        if let Some(job) = finished {
            return match job.task.await {
                Ok(r) => self.remember(url, key, &target, r).map(ImageState::Ready),
                Err(e) => Err(DownloadError::Http(format!(
                    "the download task failed: {e}"
                ))),
            };
        }
        if tokio::fs::try_exists(&target).await? {
            touch(&target);
            return Ok(ImageState::Ready(target));
        }
        let progress = Arc::new(Progress::default());
        let (cache, url_owned, sha_owned, p) =
            (self.clone(), url.to_owned(), sha.clone(), progress.clone());
        let task =
            tokio::spawn(async move { cache.ensure_with(&url_owned, &sha_owned, use_, &p).await });
        tracing::info!(url, sha256 = sha, ?use_, "image download started");
        locked(&self.jobs).insert(target, Job { progress, task });
        Ok(ImageState::Downloading {
            received: 0,
            total: None,
        })
    }

    /// Keep a permanent verdict on these bytes, so they are not downloaded again.
    fn remember(
        &self,
        url: &str,
        key: (String, String),
        target: &Path,
        r: Result<PathBuf, DownloadError>,
    ) -> Result<PathBuf, DownloadError> {
        match &r {
            Err(DownloadError::Checksum { expected, actual }) => {
                tracing::warn!(
                    url,
                    expected,
                    actual,
                    "downloaded image does not match its sha256"
                );
                locked(&self.mismatches).insert(key, actual.clone());
            }
            Err(DownloadError::Format(why)) => {
                tracing::warn!(url, reason = why, "downloaded image refused");
                locked(&self.refused).insert(target.to_owned(), why.clone());
            }
            _ => {}
        }
        r
    }

    /// Path of the cache entry for this use, downloading (and converting) it first when
    /// needed.
    pub async fn ensure(
        &self,
        url: &str,
        sha256: &str,
        use_: ImageUse,
    ) -> Result<PathBuf, DownloadError> {
        self.ensure_with(url, sha256, use_, &Progress::default())
            .await
    }

    async fn ensure_with(
        &self,
        url: &str,
        sha256: &str,
        use_: ImageUse,
        progress: &Progress,
    ) -> Result<PathBuf, DownloadError> {
        let sha = check_digest(sha256)?;
        let target = use_.entry(&self.state_dir, &sha);
        if tokio::fs::try_exists(&target).await? {
            touch(&target);
            return Ok(target);
        }
        let lock = self.lock_for(&target);
        let _guard = lock.lock().await;
        if tokio::fs::try_exists(&target).await? {
            return Ok(target);
        }
        let dir = target
            .parent()
            .ok_or_else(|| DownloadError::Http("no cache directory".into()))?;
        tokio::fs::create_dir_all(dir).await?;
        let (tmp, actual) = self.download_into(url, dir, progress, &target).await?;
        if actual != sha {
            return Err(DownloadError::Checksum {
                expected: sha,
                actual,
            });
        }
        match use_ {
            ImageUse::BootFile => {
                tmp.persist(&target)
                    .map_err(|e| DownloadError::Io(e.error))?;
            }
            ImageUse::Disk(declared) => {
                convert::standalone(tmp.path(), &target, declared).await?;
                drop(tmp);
            }
        }
        self.settle(&target).await?;
        Ok(target)
    }

    /// Download into a new partial file in `dir`, made only once the cache has room for what
    /// the server announces; returns it (deleted when dropped: no partial file is left behind
    /// on any early return) and the digest of what was received.
    async fn download_into(
        &self,
        url: &str,
        dir: &Path,
        progress: &Progress,
        target: &Path,
    ) -> Result<(tempfile::NamedTempFile, String), DownloadError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| DownloadError::Http(format!("the image URL is malformed: {e}")))?;
        self.policy.check_url(&parsed)?;
        let resp = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(refused_or_http)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DownloadError::Http(format!("server answered {status}")));
        }
        let limit = self.policy.max_bytes;
        let total = resp.content_length();
        if total.is_some_and(|t| t > limit) {
            return Err(DownloadError::TooLarge { limit });
        }
        // Room for what the server announces, before a byte is written.
        self.make_room(total.unwrap_or(0), target).await?;
        progress.total.store(total.unwrap_or(0), Ordering::Relaxed);
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)?;
        let mut file = tokio::fs::File::create(tmp.path()).await?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut last_log = Instant::now();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(refused_or_http)?;
            received = received.saturating_add(chunk.len() as u64);
            if received > limit {
                return Err(DownloadError::TooLarge { limit });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            progress.received.store(received, Ordering::Relaxed);
            if last_log.elapsed() >= Duration::from_secs(2) {
                last_log = Instant::now();
                tracing::info!(url, received, total, "downloading image");
            }
        }
        file.sync_all().await?;
        tracing::info!(url, received, "image downloaded");
        Ok((tmp, hex::encode(hasher.finalize())))
    }
}

/// A request error: the policy's refusal when that is what stopped it (from the resolver or
/// the redirect policy, found in the error's sources), else the transport's message.
fn refused_or_http(e: reqwest::Error) -> DownloadError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return DownloadError::Refused(r.clone());
        }
        source = s.source();
    }
    DownloadError::Http(e.without_url().to_string())
}

#[cfg(test)]
#[path = "cache_attacks.rs"]
mod attacks;

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
