//! The built-in kinds spoken in protobuf: their field bridges and the table of codecs.
//!
//! Covers what kubectl's generators create (`kubectl create namespace|secret|configmap|
//! serviceaccount|role|clusterrole|rolebinding|clusterrolebinding`), and what client-go
//! programs write on their own: Leases (leader election) and Events (event recorders, both
//! APIs). Pure.

use super::bridge::{Bridge, BridgeError, bridge};
use k8s_openapi::api::coordination::v1 as coord_js;
use k8s_openapi::api::core::v1 as core_js;
use k8s_openapi::api::events::v1 as events_js;
use k8s_openapi::api::rbac::v1 as rbac_js;
use k8s_pb::api::coordination::v1 as coord_pb;
use k8s_pb::api::core::v1 as core_pb;
use k8s_pb::api::events::v1 as events_pb;
use k8s_pb::api::rbac::v1 as rbac_pb;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

bridge!(core_pb::Namespace => core_js::Namespace {
    metadata => metadata: msg_req,
    spec => spec: msg,
    status => status: msg,
});

bridge!(core_pb::NamespaceSpec => core_js::NamespaceSpec {
    finalizers => finalizers: list,
});

bridge!(core_pb::NamespaceStatus => core_js::NamespaceStatus {
    conditions => conditions: msgs,
    phase => phase: s,
});

bridge!(core_pb::NamespaceCondition => core_js::NamespaceCondition {
    last_transition_time => last_transition_time: time,
    message => message: s,
    reason => reason: s,
    status => status: req,
    r#type => type_: req,
});

bridge!(core_pb::ConfigMap => core_js::ConfigMap {
    binary_data => binary_data: bytes,
    data => data: map,
    immutable => immutable: p,
    metadata => metadata: msg_req,
});

bridge!(core_pb::Secret => core_js::Secret {
    data => data: bytes,
    immutable => immutable: p,
    metadata => metadata: msg_req,
    string_data => string_data: map,
    r#type => type_: s,
});

bridge!(core_pb::ServiceAccount => core_js::ServiceAccount {
    automount_service_account_token => automount_service_account_token: p,
    image_pull_secrets => image_pull_secrets: msgs,
    metadata => metadata: msg_req,
    secrets => secrets: msgs,
});

bridge!(core_pb::ObjectReference => core_js::ObjectReference {
    api_version => api_version: s,
    field_path => field_path: s,
    kind => kind: s,
    name => name: s,
    namespace => namespace: s,
    resource_version => resource_version: s,
    uid => uid: s,
});

bridge!(core_pb::LocalObjectReference => core_js::LocalObjectReference {
    name => name: req,
});

bridge!(rbac_pb::Role => rbac_js::Role {
    metadata => metadata: msg_req,
    rules => rules: msgs,
});

bridge!(rbac_pb::ClusterRole => rbac_js::ClusterRole {
    aggregation_rule => aggregation_rule: msg,
    metadata => metadata: msg_req,
    rules => rules: msgs,
});

bridge!(rbac_pb::AggregationRule => rbac_js::AggregationRule {
    cluster_role_selectors => cluster_role_selectors: msgs,
});

bridge!(rbac_pb::PolicyRule => rbac_js::PolicyRule {
    api_groups => api_groups: list,
    non_resource_ur_ls => non_resource_urls: list,
    resource_names => resource_names: list,
    resources => resources: list,
    verbs => verbs: vec,
});

bridge!(rbac_pb::RoleBinding => rbac_js::RoleBinding {
    metadata => metadata: msg_req,
    role_ref => role_ref: msg_req,
    subjects => subjects: msgs,
});

bridge!(rbac_pb::ClusterRoleBinding => rbac_js::ClusterRoleBinding {
    metadata => metadata: msg_req,
    role_ref => role_ref: msg_req,
    subjects => subjects: msgs,
});

bridge!(rbac_pb::RoleRef => rbac_js::RoleRef {
    api_group => api_group: req,
    kind => kind: req,
    name => name: req,
});

bridge!(rbac_pb::Subject => rbac_js::Subject {
    api_group => api_group: s,
    kind => kind: req,
    name => name: req,
    namespace => namespace: s,
});

bridge!(coord_pb::Lease => coord_js::Lease {
    metadata => metadata: msg_req,
    spec => spec: msg,
});

bridge!(coord_pb::LeaseSpec => coord_js::LeaseSpec {
    acquire_time => acquire_time: mtime,
    holder_identity => holder_identity: p,
    lease_duration_seconds => lease_duration_seconds: p,
    lease_transitions => lease_transitions: p,
    preferred_holder => preferred_holder: p,
    renew_time => renew_time: mtime,
    strategy => strategy: p,
});

bridge!(core_pb::Event => core_js::Event {
    action => action: s,
    count => count: n,
    event_time => event_time: mtime,
    first_timestamp => first_timestamp: time,
    involved_object => involved_object: msg_req,
    last_timestamp => last_timestamp: time,
    message => message: s,
    metadata => metadata: msg_req,
    reason => reason: s,
    related => related: msg,
    reporting_component => reporting_component: s,
    reporting_instance => reporting_instance: s,
    series => series: msg,
    source => source: msg,
    r#type => type_: s,
});

bridge!(core_pb::EventSource => core_js::EventSource {
    component => component: s,
    host => host: s,
});

bridge!(core_pb::EventSeries => core_js::EventSeries {
    count => count: n,
    last_observed_time => last_observed_time: mtime,
});

bridge!(events_pb::Event => events_js::Event {
    action => action: s,
    deprecated_count => deprecated_count: n,
    deprecated_first_timestamp => deprecated_first_timestamp: time,
    deprecated_last_timestamp => deprecated_last_timestamp: time,
    deprecated_source => deprecated_source: msg,
    event_time => event_time: mtime,
    metadata => metadata: msg_req,
    note => note: s,
    reason => reason: s,
    regarding => regarding: msg,
    related => related: msg,
    reporting_controller => reporting_controller: s,
    reporting_instance => reporting_instance: s,
    series => series: msg,
    r#type => type_: s,
});

bridge!(events_pb::EventSeries => events_js::EventSeries {
    count => count: req,
    last_observed_time => last_observed_time: mtime_req,
});

/// Why a known kind could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The protobuf bytes are not a valid message of the kind.
    #[error("the {kind} message is malformed")]
    Decode {
        /// The kind named in the envelope.
        kind: &'static str,
        /// What prost found.
        #[source]
        source: prost::DecodeError,
    },
    /// The message decodes but a field does not fit its JSON form.
    #[error("the {kind} message has a field that does not fit its JSON form")]
    Bridge {
        /// The kind.
        kind: &'static str,
        /// Which field and why.
        #[source]
        source: BridgeError,
    },
    /// The stored object does not fit the kind's typed form (encoding a response).
    #[error("the stored {kind} does not fit its typed form")]
    Typed {
        /// The kind.
        kind: &'static str,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
}

/// Converts one kind between its protobuf bytes and its JSON object.
pub struct Codec {
    /// `apiVersion` in the envelope and the JSON object.
    pub api_version: &'static str,
    /// `kind` in the envelope and the JSON object.
    pub kind: &'static str,
    /// Protobuf message bytes to the JSON object.
    pub decode: fn(&[u8]) -> Result<Value, CodecError>,
    /// The JSON object to protobuf message bytes.
    pub encode: fn(&Value) -> Result<Vec<u8>, CodecError>,
}

fn decode_as<P>(raw: &[u8]) -> Result<Value, CodecError>
where
    P: Message + Default + Bridge + k8s_pb::Resource,
    P::Json: Serialize,
{
    decode_named::<P>(raw, P::KIND)
}

fn decode_named<P>(raw: &[u8], kind: &'static str) -> Result<Value, CodecError>
where
    P: Message + Default + Bridge,
    P::Json: Serialize,
{
    let msg = P::decode(raw).map_err(|source| CodecError::Decode { kind, source })?;
    let json = msg
        .to_json()
        .map_err(|source| CodecError::Bridge { kind, source })?;
    // k8s-openapi types always serialize (they write apiVersion and kind themselves).
    serde_json::to_value(json).map_err(|source| CodecError::Typed { kind, source })
}

fn encode_as<P>(obj: &Value) -> Result<Vec<u8>, CodecError>
where
    P: Message + Bridge + k8s_pb::Resource,
    P::Json: DeserializeOwned,
{
    encode_named::<P>(obj, P::KIND)
}

fn encode_named<P>(obj: &Value, kind: &'static str) -> Result<Vec<u8>, CodecError>
where
    P: Message + Bridge,
    P::Json: DeserializeOwned,
{
    let json: P::Json =
        serde_json::from_value(obj.clone()).map_err(|source| CodecError::Typed { kind, source })?;
    Ok(P::from_json(json).encode_to_vec())
}

fn codec<P>() -> Codec
where
    P: Message + Default + Bridge + k8s_pb::Resource,
    P::Json: Serialize + DeserializeOwned,
{
    Codec {
        api_version: P::API_VERSION,
        kind: P::KIND,
        decode: decode_as::<P>,
        encode: encode_as::<P>,
    }
}

/// Every kind spoken in protobuf.
pub fn codecs() -> Vec<Codec> {
    use k8s_pb::api::authentication::v1 as authn_pb;
    use k8s_pb::api::authorization::v1 as authz_pb;
    vec![
        codec::<core_pb::Namespace>(),
        codec::<core_pb::ConfigMap>(),
        codec::<core_pb::Secret>(),
        codec::<core_pb::ServiceAccount>(),
        codec::<rbac_pb::Role>(),
        codec::<rbac_pb::ClusterRole>(),
        codec::<rbac_pb::RoleBinding>(),
        codec::<rbac_pb::ClusterRoleBinding>(),
        codec::<coord_pb::Lease>(),
        codec::<core_pb::Event>(),
        codec::<events_pb::Event>(),
        codec::<authz_pb::SelfSubjectAccessReview>(),
        codec::<authz_pb::SubjectAccessReview>(),
        codec::<authz_pb::LocalSubjectAccessReview>(),
        codec::<authz_pb::SelfSubjectRulesReview>(),
        codec::<authn_pb::TokenReview>(),
        codec::<authn_pb::SelfSubjectReview>(),
        // A subresource's body: k8s-pb gives it no `Resource` identity.
        Codec {
            api_version: "authentication.k8s.io/v1",
            kind: "TokenRequest",
            decode: |raw| decode_named::<authn_pb::TokenRequest>(raw, "TokenRequest"),
            encode: |obj| encode_named::<authn_pb::TokenRequest>(obj, "TokenRequest"),
        },
    ]
}

/// The codec of `apiVersion`/`kind`, if that kind is spoken in protobuf.
pub fn find(api_version: &str, kind: &str) -> Option<Codec> {
    codecs()
        .into_iter()
        .find(|c| c.api_version == api_version && c.kind == kind)
}
