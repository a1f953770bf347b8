//! The bridge between the Kubernetes protobuf messages (k8s-pb, prost) and their JSON twins
//! (k8s-openapi, serde), field by field, for the metadata types every kind shares.
//!
//! Owns the mapping rules (which empty protobuf values mean "absent" in JSON, how times and
//! `FieldsV1` travel). Never touches the wire format itself: prost encodes and decodes, serde
//! writes the JSON.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as js;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;

/// A protobuf value that does not fit its JSON form.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A `Time` or `MicroTime` outside what a timestamp can hold.
    #[error("timestamp of {seconds} s and {nanos} ns is out of range")]
    Time {
        /// Seconds since the epoch, as sent.
        seconds: i64,
        /// Nanoseconds, as sent.
        nanos: i32,
    },
    /// A time the JSON form requires is absent.
    #[error("a required time is missing")]
    MissingTime,
    /// `managedFields[].fieldsV1.raw` must hold JSON.
    #[error("managedFields fieldsV1 is not JSON")]
    FieldsV1(#[source] serde_json::Error),
}

/// A k8s-pb message with a k8s-openapi twin that serializes to the Kubernetes JSON form.
pub trait Bridge: Sized {
    /// The k8s-openapi type.
    type Json;
    /// The JSON twin of this message.
    fn to_json(self) -> Result<Self::Json, BridgeError>;
    /// The message for a JSON value.
    fn from_json(j: Self::Json) -> Self;
}

/// Field conversion modes: each has `to` (protobuf to JSON) and `from` (back).
///
/// Go writes optional protobuf strings and numbers even when empty; its JSON leaves out the
/// empty ones (`omitempty`), so `s` and `n` turn "" and 0 into absent. Pointer fields (`p`)
/// keep an explicit empty value. Lists and maps have no "absent" in protobuf: empty is absent.
pub mod mode {
    use super::{Bridge, BridgeError, js, pb};
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    type R<T> = Result<T, BridgeError>;

    /// A string with `omitempty`.
    pub mod s {
        use super::R;
        pub fn to(v: Option<String>) -> R<Option<String>> {
            Ok(v.filter(|s| !s.is_empty()))
        }
        pub fn from(v: Option<String>) -> Option<String> {
            v
        }
    }

    /// A number with `omitempty`.
    pub mod n {
        use super::R;
        pub fn to<T: Default + PartialEq>(v: Option<T>) -> R<Option<T>> {
            Ok(v.filter(|n| *n != T::default()))
        }
        pub fn from<T>(v: Option<T>) -> Option<T> {
            v
        }
    }

    /// A pointer field: present means present, even when empty.
    pub mod p {
        use super::R;
        pub fn to<T>(v: Option<T>) -> R<Option<T>> {
            Ok(v)
        }
        pub fn from<T>(v: Option<T>) -> Option<T> {
            v
        }
    }

    /// A required scalar.
    pub mod req {
        use super::R;
        pub fn to<T: Default>(v: Option<T>) -> R<T> {
            Ok(v.unwrap_or_default())
        }
        pub fn from<T>(v: T) -> Option<T> {
            Some(v)
        }
    }

    /// An optional list of scalars.
    pub mod list {
        use super::R;
        pub fn to<T>(v: Vec<T>) -> R<Option<Vec<T>>> {
            Ok((!v.is_empty()).then_some(v))
        }
        pub fn from<T>(v: Option<Vec<T>>) -> Vec<T> {
            v.unwrap_or_default()
        }
    }

    /// A required list of scalars.
    pub mod vec {
        use super::R;
        pub fn to<T>(v: Vec<T>) -> R<Vec<T>> {
            Ok(v)
        }
        pub fn from<T>(v: Vec<T>) -> Vec<T> {
            v
        }
    }

    /// An optional map of strings.
    pub mod map {
        use super::{BTreeMap, R};
        pub fn to(v: BTreeMap<String, String>) -> R<Option<BTreeMap<String, String>>> {
            Ok((!v.is_empty()).then_some(v))
        }
        pub fn from(v: Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
            v.unwrap_or_default()
        }
    }

    /// An optional map of bytes (base64 strings in JSON).
    pub mod bytes {
        use super::{BTreeMap, R};
        use k8s_openapi::ByteString;
        pub fn to(v: BTreeMap<String, Vec<u8>>) -> R<Option<BTreeMap<String, ByteString>>> {
            Ok((!v.is_empty()).then(|| v.into_iter().map(|(k, b)| (k, ByteString(b))).collect()))
        }
        pub fn from(v: Option<BTreeMap<String, ByteString>>) -> BTreeMap<String, Vec<u8>> {
            v.unwrap_or_default()
                .into_iter()
                .map(|(k, b)| (k, b.0))
                .collect()
        }
    }

    /// An optional message.
    pub mod msg {
        use super::{Bridge, R};
        pub fn to<P: Bridge>(v: Option<P>) -> R<Option<P::Json>> {
            v.map(P::to_json).transpose()
        }
        pub fn from<P: Bridge>(v: Option<P::Json>) -> Option<P> {
            v.map(P::from_json)
        }
    }

    /// A message k8s-openapi requires (absent becomes the empty message).
    pub mod msg_req {
        use super::{Bridge, R};
        pub fn to<P: Bridge + Default>(v: Option<P>) -> R<P::Json> {
            v.unwrap_or_default().to_json()
        }
        pub fn from<P: Bridge>(v: P::Json) -> Option<P> {
            Some(P::from_json(v))
        }
    }

    /// An optional list of messages.
    pub mod msgs {
        use super::{Bridge, R};
        pub fn to<P: Bridge>(v: Vec<P>) -> R<Option<Vec<P::Json>>> {
            if v.is_empty() {
                return Ok(None);
            }
            v.into_iter().map(P::to_json).collect::<R<_>>().map(Some)
        }
        pub fn from<P: Bridge>(v: Option<Vec<P::Json>>) -> Vec<P> {
            v.unwrap_or_default()
                .into_iter()
                .map(P::from_json)
                .collect()
        }
    }
    /// A list of messages k8s-openapi requires.
    pub mod vec_msgs {
        use super::{Bridge, R};
        pub fn to<P: Bridge>(v: Vec<P>) -> R<Vec<P::Json>> {
            v.into_iter().map(Bridge::to_json).collect()
        }
        pub fn from<P: Bridge>(v: Vec<P::Json>) -> Vec<P> {
            v.into_iter().map(P::from_json).collect()
        }
    }

    fn timestamp(seconds: Option<i64>, nanos: Option<i32>) -> R<Option<Timestamp>> {
        // Go writes the zero time as an empty message; it is `null` in JSON.
        if seconds.is_none() && nanos.is_none() {
            return Ok(None);
        }
        let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
        Timestamp::new(s, n)
            .map(Some)
            .map_err(|_| BridgeError::Time {
                seconds: s,
                nanos: n,
            })
    }

    /// A `Time` (seconds precision in JSON).
    pub mod time {
        use super::{R, js, pb, timestamp};
        pub fn to(v: Option<pb::Time>) -> R<Option<js::Time>> {
            let Some(t) = v else { return Ok(None) };
            Ok(timestamp(t.seconds, t.nanos)?.map(js::Time))
        }
        pub fn from(v: Option<js::Time>) -> Option<pb::Time> {
            v.map(|t| pb::Time {
                seconds: Some(t.0.as_second()),
                nanos: Some(t.0.subsec_nanosecond()),
            })
        }
    }

    /// A `Time` k8s-openapi requires.
    pub mod time_req {
        use super::{BridgeError, R, js, pb, time};
        pub fn to(v: Option<pb::Time>) -> R<js::Time> {
            time::to(v)?.ok_or(BridgeError::MissingTime)
        }
        pub fn from(v: js::Time) -> Option<pb::Time> {
            time::from(Some(v))
        }
    }

    /// `userInfo.extra` of the authorization API (`map<string, ExtraValue>`).
    pub mod extra_authz {
        use super::R;
        use k8s_pb::api::authorization::v1::ExtraValue;
        use std::collections::BTreeMap;
        pub fn to(v: BTreeMap<String, ExtraValue>) -> R<Option<BTreeMap<String, Vec<String>>>> {
            Ok((!v.is_empty()).then(|| v.into_iter().map(|(k, e)| (k, e.items)).collect()))
        }
        pub fn from(v: Option<BTreeMap<String, Vec<String>>>) -> BTreeMap<String, ExtraValue> {
            v.unwrap_or_default()
                .into_iter()
                .map(|(k, items)| (k, ExtraValue { items }))
                .collect()
        }
    }

    /// `userInfo.extra` of the authentication API (`map<string, ExtraValue>`).
    pub mod extra_authn {
        use super::R;
        use k8s_pb::api::authentication::v1::ExtraValue;
        use std::collections::BTreeMap;
        pub fn to(v: BTreeMap<String, ExtraValue>) -> R<Option<BTreeMap<String, Vec<String>>>> {
            Ok((!v.is_empty()).then(|| v.into_iter().map(|(k, e)| (k, e.items)).collect()))
        }
        pub fn from(v: Option<BTreeMap<String, Vec<String>>>) -> BTreeMap<String, ExtraValue> {
            v.unwrap_or_default()
                .into_iter()
                .map(|(k, items)| (k, ExtraValue { items }))
                .collect()
        }
    }

    /// A `MicroTime` k8s-openapi requires.
    pub mod mtime_req {
        use super::{BridgeError, R, js, mtime, pb};
        pub fn to(v: Option<pb::MicroTime>) -> R<js::MicroTime> {
            mtime::to(v)?.ok_or(BridgeError::MissingTime)
        }
        pub fn from(v: js::MicroTime) -> Option<pb::MicroTime> {
            mtime::from(Some(v))
        }
    }

    /// A `MicroTime`.
    pub mod mtime {
        use super::{R, js, pb, timestamp};
        pub fn to(v: Option<pb::MicroTime>) -> R<Option<js::MicroTime>> {
            let Some(t) = v else { return Ok(None) };
            Ok(timestamp(t.seconds, t.nanos)?.map(js::MicroTime))
        }
        pub fn from(v: Option<js::MicroTime>) -> Option<pb::MicroTime> {
            v.map(|t| pb::MicroTime {
                seconds: Some(t.0.as_second()),
                nanos: Some(t.0.subsec_nanosecond()),
            })
        }
    }
}

/// Implements [`Bridge`] from a field list `pb_field => json_field: mode`. Every field of the
/// JSON type must be listed (the struct literal fails to compile otherwise); protobuf fields
/// not listed stay at their defaults.
macro_rules! bridge {
    ($pb:ty => $js:path { $($pf:ident => $jf:ident : $mode:ident),* $(,)? }) => {
        impl $crate::protobuf::bridge::Bridge for $pb {
            type Json = $js;
            fn to_json(self) -> Result<$js, $crate::protobuf::bridge::BridgeError> {
                type J = $js;
                Ok(J { $($jf: $crate::protobuf::bridge::mode::$mode::to(self.$pf)?),* })
            }
            #[allow(clippy::needless_update)]
            fn from_json(j: $js) -> Self {
                Self {
                    $($pf: $crate::protobuf::bridge::mode::$mode::from(j.$jf),)*
                    ..Default::default()
                }
            }
        }
    };
}
pub(crate) use bridge;

use js::{
    DeleteOptions, LabelSelector, LabelSelectorRequirement, ManagedFieldsEntry, ObjectMeta,
    OwnerReference, Preconditions,
};

bridge!(pb::ObjectMeta => ObjectMeta {
    annotations => annotations: map,
    creation_timestamp => creation_timestamp: time,
    deletion_grace_period_seconds => deletion_grace_period_seconds: p,
    deletion_timestamp => deletion_timestamp: time,
    finalizers => finalizers: list,
    generate_name => generate_name: s,
    generation => generation: n,
    labels => labels: map,
    managed_fields => managed_fields: msgs,
    name => name: s,
    namespace => namespace: s,
    owner_references => owner_references: msgs,
    resource_version => resource_version: s,
    self_link => self_link: s,
    uid => uid: s,
});

bridge!(pb::OwnerReference => OwnerReference {
    api_version => api_version: req,
    block_owner_deletion => block_owner_deletion: p,
    controller => controller: p,
    kind => kind: req,
    name => name: req,
    uid => uid: req,
});

bridge!(pb::ManagedFieldsEntry => ManagedFieldsEntry {
    api_version => api_version: s,
    fields_type => fields_type: s,
    fields_v1 => fields_v1: msg,
    manager => manager: s,
    operation => operation: s,
    subresource => subresource: s,
    time => time: time,
});

bridge!(pb::LabelSelector => LabelSelector {
    match_expressions => match_expressions: msgs,
    match_labels => match_labels: map,
});

bridge!(pb::LabelSelectorRequirement => LabelSelectorRequirement {
    key => key: req,
    operator => operator: req,
    values => values: list,
});

bridge!(pb::FieldSelectorRequirement => js::FieldSelectorRequirement {
    key => key: req,
    operator => operator: req,
    values => values: list,
});

bridge!(pb::Preconditions => Preconditions {
    resource_version => resource_version: p,
    uid => uid: p,
});

impl Bridge for pb::FieldsV1 {
    type Json = js::FieldsV1;
    fn to_json(self) -> Result<js::FieldsV1, BridgeError> {
        let raw = self.raw.unwrap_or_default();
        if raw.is_empty() {
            return Ok(js::FieldsV1(serde_json::json!({})));
        }
        serde_json::from_slice(&raw)
            .map(js::FieldsV1)
            .map_err(BridgeError::FieldsV1)
    }
    fn from_json(j: js::FieldsV1) -> Self {
        Self {
            raw: Some(j.0.to_string().into_bytes()),
        }
    }
}

impl Bridge for pb::DeleteOptions {
    type Json = DeleteOptions;
    fn to_json(self) -> Result<DeleteOptions, BridgeError> {
        Ok(DeleteOptions {
            dry_run: mode::list::to(self.dry_run)?,
            grace_period_seconds: self.grace_period_seconds,
            orphan_dependents: self.orphan_dependents,
            preconditions: mode::msg::to(self.preconditions)?,
            propagation_policy: self.propagation_policy,
            ignore_store_read_error_with_cluster_breaking_potential: self
                .ignore_store_read_error_with_cluster_breaking_potential,
            // Type metadata travels in the envelope.
            api_version: None,
            kind: None,
        })
    }
    fn from_json(j: DeleteOptions) -> Self {
        Self {
            dry_run: mode::list::from(j.dry_run),
            grace_period_seconds: j.grace_period_seconds,
            orphan_dependents: j.orphan_dependents,
            preconditions: mode::msg::from(j.preconditions),
            propagation_policy: j.propagation_policy,
            ignore_store_read_error_with_cluster_breaking_potential: j
                .ignore_store_read_error_with_cluster_breaking_potential,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn go_style_empty_strings_and_zero_times_are_absent_in_json() {
        // What kubectl's `create namespace x` sends: every optional string present but empty.
        let m = pb::ObjectMeta {
            name: Some("x".into()),
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            uid: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(pb::Time::default()),
            ..Default::default()
        };
        let j = serde_json::to_value(m.to_json().unwrap()).unwrap();
        assert_eq!(j, json!({"name": "x"}));
    }

    #[test]
    fn metadata_survives_a_round_trip_through_protobuf() {
        let j: ObjectMeta = serde_json::from_value(json!({
            "name": "a", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
            "creationTimestamp": "2026-11-30T01:02:03Z",
            "labels": {"k": "v"}, "finalizers": ["f"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-2", "controller": true}],
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-30T01:02:03Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}],
        }))
        .unwrap();
        let back = pb::ObjectMeta::from_json(j.clone()).to_json().unwrap();
        assert_eq!(back, j);
    }

    #[test]
    fn an_out_of_range_time_or_non_json_fields_is_an_error_not_a_panic() {
        let t = pb::Time {
            seconds: Some(i64::MAX),
            nanos: Some(0),
        };
        let m = pb::ObjectMeta {
            creation_timestamp: Some(t),
            ..Default::default()
        };
        assert!(matches!(m.to_json(), Err(BridgeError::Time { .. })));
        let f = pb::FieldsV1 {
            raw: Some(b"{not json".to_vec()),
        };
        assert!(matches!(f.to_json(), Err(BridgeError::FieldsV1(_))));
    }
}
