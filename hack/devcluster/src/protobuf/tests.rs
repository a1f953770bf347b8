//! Decoding real kubectl 1.32 bodies, round trips, malformed input, Accept negotiation.

use super::*;
use pretty_assertions::assert_eq;
use proptest::prelude::*;
use serde_json::json;

// Bodies kubectl 1.32.4 sent, captured from the wire.
const NAMESPACE: &[u8] = b"k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x19\n\x11\n\x01x\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00\"\x00";
const SECRET: &[u8] = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x1d\n\x11\n\x01s\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01k\x12\x01v\x1a\x00\x1a\x00\"\x00";
const CONFIGMAP: &[u8] = b"k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1b\n\x11\n\x01c\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01k\x12\x01v\x1a\x00\"\x00";
const ROLEBINDING: &[u8] = b"k8s\x00\n+\n\x1crbac.authorization.k8s.io/v1\x12\x0bRoleBinding\x12b\n\x12\n\x02rb\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12&\n\x04User\x12\x19rbac.authorization.k8s.io\x1a\x01u\"\x00\x1a$\n\x19rbac.authorization.k8s.io\x12\x04Role\x1a\x01r\x1a\x00\"\x00";
const TOKEN_REQUEST: &[u8] = b"k8s\x00\n(\n\x18authentication.k8s.io/v1\x12\x0cTokenRequest\x12\x1a\n\x10\n\x00\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x04\n\x00\x12\x00\x1a\x00\"\x00";

#[test]
fn kubectl_create_namespace_decodes_to_the_json_kubectl_would_have_sent() {
    assert_eq!(
        decode(NAMESPACE).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"},
            "spec": {}, "status": {}})
    );
}

#[test]
fn kubectl_create_secret_generic_decodes_with_data_in_base64() {
    assert_eq!(
        decode(SECRET).unwrap(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "dg=="}})
    );
}

#[test]
fn kubectl_create_configmap_decodes_with_its_data() {
    assert_eq!(
        decode(CONFIGMAP).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"k": "v"}})
    );
}

#[test]
fn kubectl_create_rolebinding_decodes_subjects_and_role_ref() {
    assert_eq!(
        decode(ROLEBINDING).unwrap(),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rb"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "u"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}})
    );
}

#[test]
fn kubectl_create_token_decodes_without_its_empty_status() {
    assert_eq!(
        decode(TOKEN_REQUEST).unwrap(),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {}, "spec": {"audiences": []}})
    );
}

#[test]
fn a_kind_without_a_protobuf_form_is_unsupported_and_names_the_alternative() {
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
        }),
        raw: Some(b"\n\x03\n\x01d".to_vec()),
        ..Default::default()
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    let e = decode(&body).unwrap_err();
    assert!(e.is_unsupported_kind());
    let msg = e.to_string();
    assert!(msg.contains("Deployment"), "{msg}");
    assert!(msg.contains("application/json"), "{msg}");
}

#[test]
fn a_body_without_the_magic_is_rejected() {
    assert!(matches!(
        decode(b"{\"kind\":\"Namespace\"}"),
        Err(ProtoError::NoMagic)
    ));
    assert!(matches!(decode(b""), Err(ProtoError::NoMagic)));
}

#[test]
fn a_truncated_body_is_an_error_naming_the_part_that_broke() {
    // Cut inside the envelope's type metadata, then inside the object's metadata.
    let e = decode(&SECRET[..10]).unwrap_err();
    assert!(matches!(e, ProtoError::Envelope(_)), "{e}");
    let e = decode(&SECRET[..SECRET.len() - 8]).unwrap_err();
    assert!(
        e.to_string().contains("envelope"),
        "raw is length-delimited, so a short body breaks the envelope: {e}"
    );
    // A well-formed envelope holding a truncated Secret message.
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
        }),
        raw: Some(b"\n\x11\n\x01s".to_vec()),
        ..Default::default()
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    let e = decode(&body).unwrap_err();
    assert_eq!(e.to_string(), "the Secret message is malformed");
}

#[test]
fn a_compressed_envelope_is_refused_with_its_encoding() {
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
        }),
        content_encoding: Some("gzip".into()),
        ..Default::default()
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    assert!(matches!(decode(&body), Err(ProtoError::ContentEncoding(e)) if e == "gzip"));
}

#[test]
fn stored_objects_survive_encoding_and_decoding() {
    let objects = [
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default", "uid": "u", "resourceVersion": "3",
                "creationTimestamp": "2026-11-30T01:02:03Z",
                "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                    "time": "2026-11-30T01:02:03Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}, "f:k": {}}, "f:type": {}}}]},
            "data": {"k": "dg=="}, "type": "Opaque"}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x",
                "labels": {"kubernetes.io/metadata.name": "x"}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cr"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]},
                {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}],
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l", "namespace": "default"},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 15,
                "renewTime": "2026-11-30T01:02:03.123456Z"}}),
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2026-11-30T01:02:03.000001Z", "reportingController": "c",
            "reportingInstance": "c-1", "action": "Start", "reason": "Started", "type": "Normal",
            "regarding": {"kind": "VirtualMachine", "name": "vm", "namespace": "default"},
            "series": {"count": 2, "lastObservedTime": "2026-11-30T01:02:04.000000Z"}}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e2", "namespace": "default"},
            "involvedObject": {"kind": "Secret", "name": "s"}, "reason": "R", "message": "m",
            "source": {"component": "c"}, "count": 3, "type": "Warning",
            "firstTimestamp": "2026-11-30T01:02:03Z", "lastTimestamp": "2026-11-30T01:02:05Z"}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
            "secrets": [{"name": "t"}], "imagePullSecrets": [{"name": "p"}],
            "automountServiceAccountToken": false}),
    ];
    for obj in objects {
        let bytes = encode(&obj).expect("kind spoken").expect("encodes");
        assert_eq!(decode(&bytes).unwrap(), obj);
    }
}

#[test]
fn a_custom_resource_has_no_protobuf_form() {
    assert!(
        encode(&json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine"})).is_none()
    );
}

#[test]
fn delete_options_decode_under_any_api_version() {
    let opts = meta_pb::DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        ..Default::default()
    };
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("rbac.authorization.k8s.io/v1".into()),
            kind: Some("DeleteOptions".into()),
        }),
        raw: Some(opts.encode_to_vec()),
        ..Default::default()
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    assert_eq!(
        decode(&body).unwrap(),
        json!({"propagationPolicy": "Foreground"})
    );
}

#[test]
fn accept_negotiation_follows_order_and_quality() {
    // kubectl's typed clients, and kube-apiserver's answer to them.
    assert!(prefers_protobuf(
        "application/vnd.kubernetes.protobuf,application/json"
    ));
    assert!(prefers_protobuf("application/vnd.kubernetes.protobuf, */*"));
    assert!(!prefers_protobuf(
        "application/json, application/vnd.kubernetes.protobuf"
    ));
    assert!(!prefers_protobuf(
        "application/json;q=0.5, application/vnd.kubernetes.protobuf;q=0.4"
    ));
    assert!(prefers_protobuf(
        "application/json;q=0.5, application/vnd.kubernetes.protobuf"
    ));
    assert!(!prefers_protobuf(""));
    assert!(!prefers_protobuf("application/json, */*"));
    assert!(!prefers_protobuf(
        "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
    ));
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=binary"
    ));
    assert!(!is_protobuf("application/json"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut body = MAGIC.to_vec();
        body.extend(tail);
        let _ = decode(&body);
    }

    #[test]
    fn every_prefix_and_single_byte_flip_of_real_bodies_decodes_or_errs(cut in 0usize..120, at in 0usize..120, byte in any::<u8>()) {
        for real in [NAMESPACE, SECRET, CONFIGMAP, ROLEBINDING] {
            let _ = decode(&real[..cut.min(real.len())]);
            let mut flipped = real.to_vec();
            let i = at % flipped.len();
            flipped[i] = byte;
            let _ = decode(&flipped);
        }
    }
}
