//! Images downloaded over HTTP(S), once per host, into a cache keyed by their sha256.
//!
//! A download streams into a temporary file while hashing; only a file whose hash matches
//! is renamed into the cache, so the cache never holds a partial or wrong image. Two VMs
//! asking for the same image share one download. [`ImageCache::poll`] runs the download in
//! the background and reports its progress, so a reconcile never waits for it.

use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

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
        )
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
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    jobs: Arc<Mutex<HashMap<String, Job>>>,
    /// (url, expected sha256) → actual sha256 of downloads that did not match: not tried
    /// again until the spec names another URL or digest (or the agent restarts).
    mismatches: Arc<Mutex<HashMap<(String, String), String>>>,
}

fn check_digest(sha256: &str) -> Result<String, DownloadError> {
    let sha = sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(DownloadError::BadDigest(sha256.to_owned()));
    }
    Ok(sha)
}

impl ImageCache {
    /// A cache under `state_dir` with the default download policy.
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
            locks: Arc::default(),
            jobs: Arc::default(),
            mismatches: Arc::default(),
        }
    }

    fn lock_for(&self, sha: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(sha.to_owned()).or_default().clone()
    }

    /// The image's state without waiting: ready, or downloading in the background (started
    /// by the first call). A finished download's error is returned once; the next call
    /// starts a new attempt.
    pub async fn poll(&self, url: &str, sha256: &str) -> Result<ImageState, DownloadError> {
        let sha = check_digest(sha256)?;
        let key = (url.to_owned(), sha.clone());
        if let Some(actual) = self
            .mismatches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Err(DownloadError::Checksum {
                expected: sha,
                actual: actual.clone(),
            });
        }
        let target = layout::cached_image(&self.state_dir, &sha);
        let finished = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            match jobs.get(&sha) {
                Some(job) if !job.task.is_finished() => {
                    let total = job.progress.total.load(Ordering::Relaxed);
                    return Ok(ImageState::Downloading {
                        received: job.progress.received.load(Ordering::Relaxed),
                        total: (total > 0).then_some(total),
                    });
                }
                Some(_) => jobs.remove(&sha),
                None => None,
            }
        };
        if let Some(job) = finished {
            return match job.task.await {
                Ok(Err(DownloadError::Checksum { expected, actual })) => {
                    tracing::warn!(
                        url,
                        expected,
                        actual,
                        "downloaded image does not match its sha256"
                    );
                    self.mismatches
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, actual.clone());
                    Err(DownloadError::Checksum { expected, actual })
                }
                Ok(r) => r.map(ImageState::Ready),
                Err(e) => Err(DownloadError::Http(format!(
                    "the download task failed: {e}"
                ))),
            };
        }
        if tokio::fs::try_exists(&target).await? {
            return Ok(ImageState::Ready(target));
        }
        let progress = Arc::new(Progress::default());
        let (cache, url_owned, sha_owned, p) =
            (self.clone(), url.to_owned(), sha.clone(), progress.clone());
        let task = tokio::spawn(async move { cache.ensure_with(&url_owned, &sha_owned, &p).await });
        tracing::info!(url, sha256 = sha, "image download started");
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha, Job { progress, task });
        Ok(ImageState::Downloading {
            received: 0,
            total: None,
        })
    }

    /// Path of the cached image, downloading and verifying it first when needed.
    pub async fn ensure(&self, url: &str, sha256: &str) -> Result<PathBuf, DownloadError> {
        self.ensure_with(url, sha256, &Progress::default()).await
    }

    async fn ensure_with(
        &self,
        url: &str,
        sha256: &str,
        progress: &Progress,
    ) -> Result<PathBuf, DownloadError> {
        let sha = check_digest(sha256)?;
        let target = layout::cached_image(&self.state_dir, &sha);
        if tokio::fs::try_exists(&target).await? {
            return Ok(target);
        }
        let lock = self.lock_for(&sha);
        let _guard = lock.lock().await;
        if tokio::fs::try_exists(&target).await? {
            return Ok(target);
        }
        let dir = target
            .parent()
            .ok_or_else(|| DownloadError::Http("no cache directory".into()))?;
        tokio::fs::create_dir_all(dir).await?;
        // Dropped (and deleted) on every early return: no partial file is left behind.
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)?;
        let actual = self.download_into(url, tmp.path(), progress).await?;
        if actual != sha {
            return Err(DownloadError::Checksum {
                expected: sha,
                actual,
            });
        }
        tmp.persist(&target)
            .map_err(|e| DownloadError::Io(e.error))?;
        Ok(target)
    }

    async fn download_into(
        &self,
        url: &str,
        path: &Path,
        progress: &Progress,
    ) -> Result<String, DownloadError> {
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
        progress.total.store(total.unwrap_or(0), Ordering::Relaxed);
        let mut file = tokio::fs::File::create(path).await?;
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
        Ok(hex::encode(hasher.finalize()))
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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(super) async fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/img",
            axum::routing::get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/img"), hits)
    }

    /// A cache whose policy allows the test's loopback servers (denied by default).
    pub(super) fn loopback_cache(dir: &Path) -> ImageCache {
        ImageCache::with_policy(
            dir,
            FetchPolicy {
                allowed: vec!["127.0.0.1/32".parse().unwrap()],
                ..Default::default()
            },
        )
    }

    pub(super) fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    pub(super) fn cache_entries(dir: &Path) -> Vec<String> {
        match std::fs::read_dir(dir.join(layout::CACHE_DIR)) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }

    #[tokio::test]
    async fn an_image_is_downloaded_once_and_verified() {
        let body = b"image bytes".repeat(10_000);
        let (url, hits) = serve(body.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = loopback_cache(dir.path());
        let digest = sha(&body);
        let (a, b) = tokio::join!(cache.ensure(&url, &digest), cache.ensure(&url, &digest));
        assert_eq!(a.unwrap(), b.unwrap());
        let p = cache
            .ensure(&url, &sha(&body).to_uppercase())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "one download for three requests"
        );
    }

    #[tokio::test]
    async fn a_bad_checksum_fails_clearly_and_leaves_no_partial_file() {
        let (url, _) = serve(b"tampered".to_vec()).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = loopback_cache(dir.path());
        let expected = sha(b"original");
        let err = cache.ensure(&url, &expected).await.unwrap_err();
        assert!(err.is_permanent());
        assert!(err.to_string().contains(&expected), "{err}");
        assert!(
            !err.to_string().contains(&sha(b"tampered")),
            "the digest received is never echoed: {err}"
        );
        assert!(
            cache_entries(dir.path()).is_empty(),
            "{:?}",
            cache_entries(dir.path())
        );
    }

    #[tokio::test]
    async fn a_background_download_reports_progress_and_a_mismatch_is_not_retried() {
        let body = vec![7u8; 1 << 20];
        let (url, hits) = serve(body.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = loopback_cache(dir.path());
        let good = sha(&body);
        let first = cache.poll(&url, &good).await.unwrap();
        assert!(matches!(first, ImageState::Downloading { .. }), "{first:?}");
        let path = loop {
            match cache.poll(&url, &good).await.unwrap() {
                ImageState::Ready(p) => break p,
                ImageState::Downloading { .. } => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
            }
        };
        assert_eq!(std::fs::read(&path).unwrap(), body);

        let bad = sha(b"other");
        let err = loop {
            match cache.poll(&url, &bad).await {
                Err(e) => break e,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        assert!(err.is_permanent(), "{err}");
        let before = hits.load(Ordering::SeqCst);
        assert!(cache.poll(&url, &bad).await.unwrap_err().is_permanent());
        assert_eq!(hits.load(Ordering::SeqCst), before, "not downloaded again");
        assert_eq!(before, 2);
    }

    #[tokio::test]
    async fn a_server_error_is_transient_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = loopback_cache(dir.path());
        let (url, _) = serve(vec![]).await;
        let err = cache
            .ensure(&url.replace("/img", "/missing"), &sha(b"x"))
            .await
            .unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert!(cache_entries(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_malformed_digest_is_refused_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let err = loopback_cache(dir.path())
            .ensure("http://127.0.0.1:1/x", "../../etc")
            .await
            .unwrap_err();
        assert!(matches!(err, DownloadError::BadDigest(_)));
    }
}
