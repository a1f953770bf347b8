//! Images over HTTP through the whole agent (in-process, devcluster, `test:///default`), from
//! a loopback server: while an image downloads the VM says so in its `ImagesReady`
//! condition, then it runs on the standalone qcow2 the agent converted it into; a bad
//! checksum fails the VM with a clear reason and leaves no partial file in the cache; an
//! image larger than its disk's declared size fails the VM naming both sizes; a full cache
//! makes a VM wait (ImageCacheFull) until an image no VM uses can go.

mod common;

use common::cluster::Cluster;
use ironvisor_crds::common::{Condition, condition_type, find_condition};
use ironvisor_crds::vm::{Phase, VirtualMachine};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
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
    assert_eq!(
        cache_entries(&c),
        vec![format!("{sha}.qcow2")],
        "only the converted image"
    );
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

/// Serve `body` at /<name>.img; returns the URL and the body's sha256.
async fn serve(name: &str, body: Vec<u8>) -> (String, String) {
    let sha = hex::encode(Sha256::digest(&body));
    let app = axum::Router::new().route(
        &format!("/{name}.img"),
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}/{name}.img"), sha)
}

fn sized_spec(url: &str, sha256: &str, size: &str) -> serde_json::Value {
    let mut s = spec(url, sha256);
    s["disks"][0]["size"] = size.into();
    s
}

fn phase(v: &VirtualMachine) -> Option<Phase> {
    v.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_larger_than_its_disk_fails_the_vm_naming_both_sizes() {
    let node = "node-toolarge";
    let c = Cluster::start(node, URI, |_| {}).await;
    let (url, sha) = serve("big", vec![1u8; 3 << 20]).await;
    c.place(NS, "big", node, sized_spec(&url, &sha, "2Mi"))
        .await;
    let v = c
        .wait_vm(NS, "big", "Failed", |v| phase(v) == Some(Phase::Failed))
        .await;
    let ready = find_condition(&v.status.as_ref().expect("status").conditions, "Ready")
        .expect("Ready")
        .clone();
    assert_eq!(ready.reason, "ImageLargerThanDisk", "{}", ready.message);
    assert!(
        ready.message.contains("3145728") && ready.message.contains("2097152"),
        "{}",
        ready.message
    );
    let uid = v.metadata.uid.clone().expect("uid");
    assert!(!c.vm_dir(&uid).join("disk-root.qcow2").exists());
    let warned = common::cluster::wait_for("a Warning Event", || async {
        let events = Api::<Event>::namespaced(c.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .ok()?;
        events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Failed")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("larger than the disk"))
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("big")
        })
    })
    .await;
    assert_eq!(warned.type_.as_deref(), Some("Warning"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_makes_a_vm_wait_until_an_image_no_vm_uses_can_go() {
    let node = "node-cachefull";
    // Room for one 2 MiB image, not two.
    let c = Cluster::start(node, URI, |cfg| cfg.image_cache_max_bytes = 3 << 20).await;
    let (url_a, sha_a) = serve("a", vec![1u8; 2 << 20]).await;
    let (url_b, sha_b) = serve("b", vec![2u8; 2 << 20]).await;
    c.place(NS, "first", node, sized_spec(&url_a, &sha_a, "4Mi"))
        .await;
    c.wait_vm(NS, "first", "first runs", |v| {
        phase(v) == Some(Phase::Running)
    })
    .await;

    c.place(NS, "second", node, sized_spec(&url_b, &sha_b, "4Mi"))
        .await;
    let v = c
        .wait_vm(NS, "second", "ImagesReady=False ImageCacheFull", |v| {
            images(v).is_some_and(|i| i.status == "False" && i.reason == "ImageCacheFull")
        })
        .await;
    let msg = images(&v).expect("condition").message;
    assert!(msg.contains("--image-cache-max-bytes"), "{msg}");
    assert_ne!(phase(&v), Some(Phase::Failed), "waiting, not failed");
    assert_eq!(
        cache_entries(&c),
        vec![format!("{sha_a}.qcow2")],
        "in use: kept"
    );

    // The first VM goes: its image is no longer used and makes room.
    c.vms(NS)
        .delete("first", &DeleteParams::default())
        .await
        .expect("first deleted");
    c.wait_vm(NS, "second", "second runs", |v| {
        phase(v) == Some(Phase::Running)
    })
    .await;
    assert_eq!(
        cache_entries(&c),
        vec![format!("{sha_b}.qcow2")],
        "a collected"
    );
    c.stop().await;
}
