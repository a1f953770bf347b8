//! Kubernetes protobuf over raw HTTP: bodies as client-go sends them, malformed bodies, and
//! the representation of answers by `Accept`.

use ironvisor_devcluster::DevCluster;
use k8s_pb::api::core::v1 as core_pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta_pb;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use pretty_assertions::assert_eq;
use prost::Message;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PB: &str = "application/vnd.kubernetes.protobuf";
const CM: &str = "/api/v1/namespaces/default/configmaps";

struct Reply {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ct: &str,
    accept: &str,
    body: &[u8],
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ct}\r\nAccept: {accept}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = vec![];
    s.read_to_end(&mut out).await.unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&out[..split]).to_lowercase();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    Reply {
        code: head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0),
        content_type,
        body: out[split + 4..].to_vec(),
    }
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn config_map(name: &str) -> Vec<u8> {
    let cm = core_pb::ConfigMap {
        metadata: Some(meta_pb::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        }),
        data: [("k".to_string(), "v".to_string())].into(),
        binary_data: [("b".to_string(), vec![0, 159, 146, 150])].into(),
        ..Default::default()
    };
    envelope("v1", "ConfigMap", cm.encode_to_vec())
}

fn decode_config_map(body: &[u8]) -> core_pb::ConfigMap {
    let rest = body.strip_prefix(b"k8s\0").expect("protobuf magic");
    let u = Unknown::decode(rest).expect("envelope");
    let tm = u.type_meta.expect("type meta");
    assert_eq!(
        (tm.api_version.as_deref(), tm.kind.as_deref()),
        (Some("v1"), Some("ConfigMap"))
    );
    core_pb::ConfigMap::decode(u.raw.unwrap_or_default().as_slice()).expect("config map")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_create_answers_in_protobuf_when_asked_first_and_in_json_otherwise() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let a = c.addr();
    let r = send(
        a,
        "POST",
        CM,
        PB,
        &format!("{PB},application/json"),
        &config_map("one"),
    )
    .await;
    assert_eq!((r.code, r.content_type.as_str()), (201, PB));
    let cm = decode_config_map(&r.body);
    let meta = cm.metadata.expect("metadata");
    assert_eq!(meta.name.as_deref(), Some("one"));
    assert!(meta.uid.is_some_and(|u| !u.is_empty()));
    assert!(
        meta.creation_timestamp
            .and_then(|t| t.seconds)
            .is_some_and(|s| s > 0)
    );
    assert_eq!(cm.binary_data["b"], vec![0, 159, 146, 150]);

    let r = send(a, "POST", CM, PB, "application/json", &config_map("two")).await;
    assert_eq!((r.code, r.content_type.as_str()), (201, "application/json"));
    assert_eq!(r.json()["binaryData"]["b"], "AJ+Slg==");

    let r = send(a, "GET", &format!("{CM}/two"), "", PB, b"").await;
    assert_eq!(r.content_type, PB);
    assert_eq!(decode_config_map(&r.body).data["k"], "v");
    let r = send(a, "GET", CM, "", &format!("{PB}, */*"), b"").await;
    assert_eq!(
        (
            r.code,
            r.content_type.as_str(),
            r.json()["items"].as_array().map(Vec::len)
        ),
        (200, "application/json", Some(2)),
        "lists stay JSON; client-go decodes by Content-Type"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_update_replaces_the_object() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let a = c.addr();
    let r = send(a, "POST", CM, PB, "application/json", &config_map("u")).await;
    let rv = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let cm = core_pb::ConfigMap {
        metadata: Some(meta_pb::ObjectMeta {
            name: Some("u".into()),
            resource_version: Some(rv),
            ..Default::default()
        }),
        data: [("k".to_string(), "changed".to_string())].into(),
        ..Default::default()
    };
    let body = envelope("v1", "ConfigMap", cm.encode_to_vec());
    let r = send(a, "PUT", &format!("{CM}/u"), PB, "application/json", &body).await;
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"], serde_json::json!({"k": "changed"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_protobuf_body_is_a_400_that_says_what_broke() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let a = c.addr();
    let full = config_map("t");
    for (body, says) in [
        (
            &full[..full.len() - 5],
            "the protobuf envelope (runtime.Unknown) is malformed",
        ),
        (&b"not protobuf"[..], "magic bytes"),
        (
            &envelope("v1", "ConfigMap", vec![0x0a, 0x20, 0x0a])[..],
            "the ConfigMap message is malformed",
        ),
    ] {
        let r = send(a, "POST", CM, PB, "application/json", body).await;
        let status = r.json();
        assert_eq!(
            (r.code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "{status}"
        );
        let msg = status["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("the protobuf body could not be decoded: ") && msg.contains(says),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_body_of_a_kind_without_a_protobuf_form_is_415() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let body = envelope("coordination.k8s.io/v1", "LeaseCandidate", vec![]);
    let r = send(c.addr(), "POST", CM, PB, "application/json", &body).await;
    assert_eq!(r.code, 415);
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("LeaseCandidate") && msg.contains("send it as application/json"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_delete_options_body_is_honoured_and_a_protobuf_patch_is_415() {
    let c = DevCluster::start_ephemeral().await.unwrap();
    let a = c.addr();
    let r = send(a, "POST", CM, PB, "application/json", &config_map("d")).await;
    assert_eq!(r.code, 201);
    let r = send(
        a,
        "PATCH",
        &format!("{CM}/d"),
        PB,
        "application/json",
        &config_map("d"),
    )
    .await;
    assert_eq!(r.code, 415);
    let stale = meta_pb::DeleteOptions {
        preconditions: Some(meta_pb::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let body = envelope("v1", "DeleteOptions", stale.encode_to_vec());
    let r = send(
        a,
        "DELETE",
        &format!("{CM}/d"),
        PB,
        "application/json",
        &body,
    )
    .await;
    assert_eq!(
        r.code,
        409,
        "a precondition in a protobuf body is checked: {:?}",
        r.json()
    );
    let ok = meta_pb::DeleteOptions {
        propagation_policy: Some("Background".into()),
        ..Default::default()
    };
    let body = envelope("v1", "DeleteOptions", ok.encode_to_vec());
    let r = send(
        a,
        "DELETE",
        &format!("{CM}/d"),
        PB,
        "application/json",
        &body,
    )
    .await;
    assert_eq!(r.code, 200);
    let r = send(a, "GET", &format!("{CM}/d"), "", "application/json", b"").await;
    assert_eq!(r.code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_event_from_a_go_recorder_shows_in_both_event_apis() {
    use k8s_pb::api::core::v1::ObjectReference;
    use k8s_pb::api::events::v1 as events_pb;
    let c = DevCluster::start_ephemeral().await.unwrap();
    let a = c.addr();
    let ev = events_pb::Event {
        metadata: Some(meta_pb::ObjectMeta {
            name: Some("vm.1".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        event_time: Some(meta_pb::MicroTime {
            seconds: Some(1_795_000_000),
            nanos: Some(0),
        }),
        reporting_controller: Some("example.io/controller".into()),
        reporting_instance: Some("controller-0".into()),
        action: Some("Reconcile".into()),
        reason: Some("Synced".into()),
        note: Some("all good".into()),
        r#type: Some("Normal".into()),
        regarding: Some(ObjectReference {
            kind: Some("ConfigMap".into()),
            name: Some("c".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let body = envelope("events.k8s.io/v1", "Event", ev.encode_to_vec());
    let path = "/apis/events.k8s.io/v1/namespaces/default/events";
    let r = send(a, "POST", path, PB, "application/json", &body).await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = send(
        a,
        "GET",
        "/api/v1/namespaces/default/events",
        "",
        "application/json",
        b"",
    )
    .await;
    let item = &r.json()["items"][0];
    assert_eq!(
        (
            item["involvedObject"]["name"].as_str(),
            item["message"].as_str(),
            item["reason"].as_str()
        ),
        (Some("c"), Some("all good"), Some("Synced"))
    );
}
