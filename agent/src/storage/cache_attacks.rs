//! Downloads a hostile tenant aims at the host: redirects and names that lead to loopback or
//! link-local addresses, and images without end. Each is refused with a clear, permanent
//! error and leaves nothing in the cache.

use super::tests::{cache_entries, loopback_cache, serve, sha};
use super::*;

/// A server on 127.0.0.1 (allowed by the test policy) that redirects to `to`.
async fn redirector(to: String) -> String {
    let app = axum::Router::new().route(
        "/img",
        axum::routing::get(move || {
            let to = to.clone();
            async move { axum::response::Redirect::temporary(&to) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/img")
}

/// A server on 127.0.0.2: loopback too, but not in the test policy's allowed range.
async fn secret_server() -> String {
    let app = axum::Router::new().route("/secret", axum::routing::get(|| async { "secret" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/secret")
}

#[tokio::test]
async fn a_redirect_to_a_loopback_address_is_refused_and_nothing_is_kept() {
    let secret = secret_server().await;
    let url = redirector(secret.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let err = loopback_cache(dir.path())
        .ensure(&url, &sha(b"secret"), ImageUse::BootFile)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Refused(_)), "{err}");
    assert!(err.is_permanent());
    assert!(err.to_string().contains("127.0.0.2"), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert!(cache_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn a_redirect_to_the_metadata_address_is_refused_before_connecting() {
    let url = redirector("http://169.254.169.254/latest/meta-data/".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let err = loopback_cache(dir.path())
        .ensure(&url, &sha(b"x"), ImageUse::BootFile)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("link-local"), "{err}");
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_after_resolution() {
    let dir = tempfile::tempdir().unwrap();
    // The default policy: localhost resolves to 127.0.0.1 or ::1, both loopback.
    let err = ImageCache::new(dir.path())
        .ensure("http://localhost:1/img", &sha(b"x"), ImageUse::BootFile)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Refused(_)), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn a_file_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = ImageCache::new(dir.path())
        .ensure("file:///etc/shadow", &sha(b"x"), ImageUse::BootFile)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only http and https"), "{err}");
}

#[tokio::test]
async fn an_image_over_the_size_cap_is_cut_off_and_nothing_is_kept() {
    let body = vec![1u8; 64 << 10];
    let (url, _) = serve(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::with_policy(
        dir.path(),
        FetchPolicy {
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
            max_bytes: 16 << 10,
            ..Default::default()
        },
    );
    let err = cache
        .ensure(&url, &sha(&body), ImageUse::BootFile)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::TooLarge { limit } if limit == 16 << 10),
        "{err}"
    );
    assert!(err.is_permanent());
    assert!(
        cache_entries(dir.path())
            .iter()
            .all(|e| !e.starts_with(".partial"))
    );
}
