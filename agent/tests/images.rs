//! Images over HTTP through the whole agent (in-process, devcluster, `test:///default`), from
//! a loopback server: while an image downloads the VM says so in its `ImagesReady`
//! condition, then it runs; a bad checksum fails the VM with a clear reason and leaves no
//! partial file in the cache.

mod common;

use common::cluster::Cluster;
use ironvisor_crds::common::{Condition, condition_type, find_condition};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use sha2::{Digest, Sha256};
use std::time::Duration;

const URI: &str = "test:///default";
const NS: &str = "it-images";
const CHUNK: usize = 256 << 10;
const CHUNKS: usize = 12;

/// Serve CHUNKS zero-filled chunks, one every 100 ms, at /slow.img.
async fn slow_server() -> String {
    let app = axum::Router::new().route(
        "/slow.img",
        axum::routing::get(|| async {
            let stream = futures::stream::unfold(0usize, |i| async move {
                if i == CHUNKS {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(vec![0u8; CHUNK]), i + 1))
            });
            (
                [(
                    axum::http::header::CONTENT_LENGTH,
                    (CHUNK * CHUNKS).to_string(),
                )],
                axum::body::Body::from_stream(stream),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}/slow.img")
}

fn spec(url: &str, sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "memory": {"size": "64Mi"},
        "disks": [{"name": "root", "source": {"http": {"url": url, "sha256": sha256}}}],
        "terminationGracePeriodSeconds": 0,
    })
}

fn images(v: &VirtualMachine) -> Option<Condition> {
    find_condition(&v.status.as_ref()?.conditions, condition_type::IMAGES_READY).cloned()
}

fn cache_entries(c: &Cluster) -> Vec<String> {
    std::fs::read_dir(c.state_dir.join("images"))
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_download_shows_in_images_ready_then_the_vm_runs() {
    let node = "node-images";
    let c = Cluster::start(node, URI, |_| {}).await;
    let url = slow_server().await;
    let sha = hex::encode(Sha256::digest(vec![0u8; CHUNK * CHUNKS]));
    c.place(NS, "web", node, spec(&url, &sha)).await;
    let v = c
        .wait_vm(NS, "web", "ImagesReady=False Downloading", |v| {
            images(v).is_some_and(|i| i.status == "False" && i.reason == "Downloading")
        })
        .await;
    let msg = images(&v).expect("condition").message;
    assert!(msg.contains("root") && msg.contains("MiB"), "{msg}");
    assert_ne!(
        v.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Running),
        "not started before its image"
    );
    let v = c
        .wait_vm(NS, "web", "Running with its image", |v| {
            v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await;
    let i = images(&v).expect("condition");
    assert_eq!(
        (i.status.as_str(), i.reason.as_str()),
        ("True", "Available")
    );
    let uid = v.metadata.uid.clone().expect("uid");
    assert!(c.vm_dir(&uid).join("disk-root.qcow2").exists());
    assert_eq!(cache_entries(&c), vec![format!("{sha}.img")]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checksum_fails_the_vm_and_leaves_no_partial_file() {
    let node = "node-badsum";
    let c = Cluster::start(node, URI, |_| {}).await;
    let url = slow_server().await;
    let wrong = hex::encode(Sha256::digest(b"something else"));
    c.place(NS, "bad", node, spec(&url, &wrong)).await;
    let v = c
        .wait_vm(NS, "bad", "Failed", |v| {
            v.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed)
        })
        .await;
    let i = images(&v).expect("condition");
    assert_eq!(
        (i.status.as_str(), i.reason.as_str()),
        ("False", "ChecksumMismatch")
    );
    assert!(i.message.contains(&wrong), "{}", i.message);
    let ready = find_condition(&v.status.as_ref().expect("status").conditions, "Ready")
        .expect("Ready")
        .clone();
    assert_eq!(ready.reason, "ImageChecksumMismatch");
    assert!(cache_entries(&c).is_empty(), "{:?}", cache_entries(&c));
    c.stop().await;
}
