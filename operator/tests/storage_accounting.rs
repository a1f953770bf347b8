//! The storage rule at admission, against the devcluster: every disk counts its declared
//! size (the largest it can grow to) in the tenant's storage quota, an image disk without a
//! size is not scheduled (its image is only seen by a host, after admission), and a disk
//! from an image is counted like a blank one of the same size.

mod common;

use common::{Env, Operator, eventually, fast_config};
use serde_json::json;

const NS: &str = "media";

fn image_disk(size: Option<&str>) -> serde_json::Value {
    let mut d = json!({"name": "root", "source": {"http": {
        "url": "https://images.example.com/debian.qcow2",
        "sha256": "0".repeat(64)}}});
    if let Some(s) = size {
        d["size"] = s.into();
    }
    json!({"disks": [d]})
}

async fn merge(env: &Env, name: &str, patch: serde_json::Value) {
    env.vms(NS)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .expect("VM patched");
}

async fn scheduled(env: &Env, name: &str) -> Option<(String, String, String)> {
    env.condition(NS, name, "Scheduled").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_disks_count_their_declared_size_and_one_without_a_size_is_not_scheduled() {
    let env = Env::start().await;
    env.tenant("media", &[NS], None).await;
    env.quota(
        "media-storage",
        "media",
        json!({"storage": "10Gi", "vcpus": 2}),
    )
    .await;
    env.host("h1", 16, "64Gi", json!({})).await;
    let beat = env.keep_alive(&["h1"]);
    let op = Operator::start(env.client.clone(), fast_config("op-storage"));

    env.vm(NS, "nosize", 1, "1Gi", image_disk(None)).await;
    eventually(
        "an image disk without a size is refused, naming the disk",
        || async {
            scheduled(&env, "nosize").await.is_some_and(|(s, r, m)| {
                s == "False" && r == "InvalidSpec" && m.contains("disk \"root\" has no size")
            })
        },
    )
    .await;
    assert_eq!(env.node_of(NS, "nosize").await, None);

    env.vm(NS, "sized", 1, "1Gi", image_disk(Some("6Gi"))).await;
    eventually("an image disk with a size is admitted", || async {
        scheduled(&env, "sized")
            .await
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let admitted = env.vms(NS).get("sized").await.expect("sized").status;
    let storage = admitted.and_then(|s| s.admitted).map(|a| a.storage.0);
    assert_eq!(
        storage.as_deref(),
        Some("6Gi"),
        "counted at its declared size"
    );

    // 6Gi more would make 12Gi of 10Gi, whatever the disk's source.
    let blank = json!({"disks": [{"name": "data", "size": "6Gi", "source": {"blank": {}}}]});
    env.vm(NS, "over", 1, "1Gi", blank).await;
    eventually("a second disk over the storage quota waits", || async {
        scheduled(&env, "over").await.is_some_and(|(s, r, m)| {
            s == "False"
                && r == "QuotaExceeded"
                && m.contains("requested: storage=6Gi, used: storage=6Gi, limited: storage=10Gi")
        })
    })
    .await;

    env.vms(NS)
        .delete("over", &kube::api::DeleteParams::default())
        .await
        .expect("over deleted");

    // An admitted VM whose spec drops its disk's size keeps counting what it was admitted
    // at: one vCPU of two, so a VM of two waits.
    merge(&env, "sized", json!({"spec": image_disk(None)})).await;
    let two = json!({"disks": [{"name": "d", "size": "1Gi", "source": {"blank": {}}}]});
    env.vm(NS, "two", 2, "1Gi", two).await;
    eventually("the admitted VM still counts its vCPU", || async {
        scheduled(&env, "two").await.is_some_and(|(s, r, m)| {
            s == "False" && r == "QuotaExceeded" && m.contains("used: vcpus=1")
        })
    })
    .await;

    // The size-less VM declares one: counted and admitted within what is left.
    merge(&env, "nosize", json!({"spec": image_disk(Some("4Gi"))})).await;
    eventually("with a size it is admitted", || async {
        scheduled(&env, "nosize")
            .await
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    op.stop().await;
    beat.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_may_declare_its_image_format_and_a_kernel_may_not() {
    use kube::api::PostParams;
    let env = Env::start().await;
    env.namespace(NS).await;
    let http = json!({"url": "https://images.example.com/debian.raw",
                      "sha256": "0".repeat(64), "format": "raw"});
    let disk = json!({"disks": [{"name": "root", "size": "1Gi", "source": {"http": http}}]});
    env.vms(NS)
        .create(
            &PostParams::default(),
            &common::vm_object(NS, "declared", 1, "1Gi", disk),
        )
        .await
        .expect("a disk with a declared format is valid");
    let stored = env.vms(NS).get("declared").await.unwrap();
    let format = stored.spec.disks[0].source.http.as_ref().unwrap().format;
    assert_eq!(format, Some(ironvisor_crds::vm::ImageFormat::Raw));

    let kernel = json!({"kernelBoot": {"kernel": {"http": http}}});
    let err = env
        .vms(NS)
        .create(
            &PostParams::default(),
            &common::vm_object(NS, "kernel", 1, "1Gi", kernel),
        )
        .await
        .expect_err("a kernel with a format is refused");
    assert!(
        err.to_string()
            .contains("a kernel or initrd is loaded as a file"),
        "{err}"
    );
}
