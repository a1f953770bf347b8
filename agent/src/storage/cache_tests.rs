//! The cache on real HTTP servers on loopback.

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
    let (a, b) = tokio::join!(
        cache.ensure(&url, &digest, ImageUse::BootFile),
        cache.ensure(&url, &digest, ImageUse::BootFile)
    );
    assert_eq!(a.unwrap(), b.unwrap());
    let p = cache
        .ensure(&url, &sha(&body).to_uppercase(), ImageUse::BootFile)
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
    let err = cache
        .ensure(&url, &expected, ImageUse::BootFile)
        .await
        .unwrap_err();
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
    let first = cache.poll(&url, &good, ImageUse::BootFile).await.unwrap();
    assert!(matches!(first, ImageState::Downloading { .. }), "{first:?}");
    let path = loop {
        match cache.poll(&url, &good, ImageUse::BootFile).await.unwrap() {
            ImageState::Ready(p) => break p,
            ImageState::Downloading { .. } => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert_eq!(std::fs::read(&path).unwrap(), body);

    let bad = sha(b"other");
    let err = loop {
        match cache.poll(&url, &bad, ImageUse::BootFile).await {
            Err(e) => break e,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(err.is_permanent(), "{err}");
    let before = hits.load(Ordering::SeqCst);
    assert!(
        cache
            .poll(&url, &bad, ImageUse::BootFile)
            .await
            .unwrap_err()
            .is_permanent()
    );
    assert_eq!(hits.load(Ordering::SeqCst), before, "not downloaded again");
    assert_eq!(before, 2);
}

#[tokio::test]
async fn a_server_error_is_transient_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = loopback_cache(dir.path());
    let (url, _) = serve(vec![]).await;
    let err = cache
        .ensure(
            &url.replace("/img", "/missing"),
            &sha(b"x"),
            ImageUse::BootFile,
        )
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(cache_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn a_malformed_digest_is_refused_before_any_download() {
    let dir = tempfile::tempdir().unwrap();
    let err = loopback_cache(dir.path())
        .ensure("http://127.0.0.1:1/x", "../../etc", ImageUse::BootFile)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::BadDigest(_)));
}

/// A qcow2 made by qemu-img with `-o opts` (may be empty), of 1 MiB.
fn qcow2_bytes(opts: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    crate::storage::qcow2_header::tests::made(dir.path(), "x.qcow2", opts);
    std::fs::read(dir.path().join("x.qcow2")).unwrap()
}

#[tokio::test]
async fn a_disk_image_is_kept_only_as_the_agents_own_qcow2() {
    let body = vec![9u8; 2 << 20];
    let (url, _) = serve(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = loopback_cache(dir.path());
    let p = cache
        .ensure(&url, &sha(&body), ImageUse::Disk(None))
        .await
        .unwrap();
    assert_eq!(
        cache_entries(dir.path()),
        vec![format!("{}.qcow2", sha(&body))]
    );
    let header = std::fs::read(&p).unwrap();
    let h = crate::storage::qcow2_header::parse(&header).unwrap();
    assert_eq!(h.size, 2 << 20);
}

#[tokio::test]
async fn a_qcow2_download_with_a_backing_file_is_refused_once_and_not_fetched_again() {
    let body = qcow2_bytes("backing_file=/etc/hostname,backing_fmt=raw");
    let (url, hits) = serve(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = loopback_cache(dir.path());
    let digest = sha(&body);
    let err = loop {
        match cache.poll(&url, &digest, ImageUse::Disk(None)).await {
            Err(e) => break e,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(matches!(err, DownloadError::Format(_)), "{err}");
    assert!(err.is_permanent());
    assert!(err.to_string().contains("/etc/hostname"), "{err}");
    let again = cache
        .poll(&url, &digest, ImageUse::Disk(None))
        .await
        .unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(hits.load(Ordering::SeqCst), 1, "not downloaded again");
    assert!(
        cache_entries(dir.path()).is_empty(),
        "{:?}",
        cache_entries(dir.path())
    );
}

#[tokio::test]
async fn a_full_cache_collects_unwanted_images_and_refuses_when_all_are_wanted() {
    let (a, b) = (vec![1u8; 2 << 20], vec![2u8; 2 << 20]);
    let (url_a, _) = serve(a.clone()).await;
    let (url_b, _) = serve(b.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = loopback_cache(dir.path()).with_max_bytes(3 << 20);
    let pa = cache
        .ensure(&url_a, &sha(&a), ImageUse::BootFile)
        .await
        .unwrap();
    // A VM names image a: b does not fit, and nothing may go.
    cache.want("vm-a", &[(&sha(&a), ImageUse::BootFile)]);
    let err = cache
        .ensure(&url_b, &sha(&b), ImageUse::BootFile)
        .await
        .unwrap_err();
    let DownloadError::CacheFull(full) = &err else {
        panic!("{err}")
    };
    assert_eq!(full.max, 3 << 20);
    assert!(!err.is_permanent());
    assert!(err.to_string().contains("--image-cache-max-bytes"), "{err}");
    assert!(pa.exists());
    assert_eq!(cache_entries(dir.path()), vec![format!("{}.img", sha(&a))]);
    // The VM is gone: a is collected to make room for b.
    cache.release("vm-a");
    let pb = cache
        .ensure(&url_b, &sha(&b), ImageUse::BootFile)
        .await
        .unwrap();
    assert!(pb.exists() && !pa.exists());
}
