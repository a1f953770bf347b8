//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) for the built-in kinds in
//! [`kinds`]: request bodies become the JSON objects the rest of the server stores, and
//! single-object responses are encoded when the client prefers protobuf.
//!
//! The envelope is the 4-byte magic `k8s\0` and a `runtime.Unknown` message (type metadata,
//! the object's own message in `raw`, `contentEncoding`, `contentType`). The messages are
//! k8s-pb's prost types; the JSON forms are k8s-openapi's. Custom resources have no protobuf
//! form (as in the apiserver), so a protobuf body for them is 415.

mod auth_kinds;
mod bridge;
mod kinds;

use bridge::Bridge;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta_pb;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::Value;

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The first bytes of every Kubernetes protobuf body.
const MAGIC: &[u8; 4] = b"k8s\0";

/// A protobuf body that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with the magic bytes.
    #[error("the body does not start with the Kubernetes protobuf magic bytes \"k8s\\0\"")]
    NoMagic,
    /// The envelope after the magic is not a `runtime.Unknown` message.
    #[error("the protobuf envelope (runtime.Unknown) is malformed")]
    Envelope(#[source] prost::DecodeError),
    /// The envelope names no apiVersion or kind.
    #[error("the protobuf envelope has no apiVersion and kind")]
    NoTypeMeta,
    /// The envelope's object is compressed or otherwise encoded.
    #[error("the protobuf envelope's contentEncoding {0:?} is not supported (send it unencoded)")]
    ContentEncoding(String),
    /// A kind with no protobuf form here.
    #[error(
        "{kind} ({api_version}) is not accepted as protobuf here; send it as application/json (protobuf is accepted for {accepted})"
    )]
    UnsupportedKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
        /// The kinds that are accepted.
        accepted: String,
    },
    /// The object inside the envelope.
    #[error(transparent)]
    Object(#[from] kinds::CodecError),
}

impl ProtoError {
    /// Whether the body is well-formed but of a kind not spoken in protobuf (415, not 400).
    pub fn is_unsupported_kind(&self) -> bool {
        matches!(self, Self::UnsupportedKind { .. })
    }
}

/// Whether a `Content-Type` is Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    media_type(content_type) == MEDIA_TYPE
}

fn media_type(s: &str) -> &str {
    s.split(';').next().unwrap_or_default().trim()
}

/// Decodes a protobuf request body into the JSON object it stands for: a built-in object
/// for create and update, or `DeleteOptions` (under any apiVersion, as client-go sends it).
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::NoMagic)?;
    let unknown = Unknown::decode(rest).map_err(ProtoError::Envelope)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let (api_version, kind) = (
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
    );
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtoError::NoTypeMeta);
    }
    let enc = unknown.content_encoding.unwrap_or_default();
    if !enc.is_empty() {
        return Err(ProtoError::ContentEncoding(enc));
    }
    let raw = unknown.raw.unwrap_or_default();
    if kind == "DeleteOptions" {
        return decode_delete_options(&raw);
    }
    let codec = kinds::find(&api_version, &kind).ok_or_else(|| ProtoError::UnsupportedKind {
        accepted: accepted_kinds(),
        api_version,
        kind,
    })?;
    Ok((codec.decode)(&raw)?)
}

fn decode_delete_options(raw: &[u8]) -> Result<Value, ProtoError> {
    let kind = "DeleteOptions";
    let opts = meta_pb::DeleteOptions::decode(raw)
        .map_err(|source| kinds::CodecError::Decode { kind, source })?;
    let json = opts
        .to_json()
        .map_err(|source| kinds::CodecError::Bridge { kind, source })?;
    serde_json::to_value(json)
        .map_err(|source| ProtoError::Object(kinds::CodecError::Typed { kind, source }))
}

fn accepted_kinds() -> String {
    kinds::codecs()
        .iter()
        .map(|c| c.kind)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encodes a JSON object as a protobuf body, or `None` when its kind has no protobuf form.
pub fn encode(obj: &Value) -> Option<Result<Vec<u8>, ProtoError>> {
    let api_version = obj["apiVersion"].as_str()?;
    let kind = obj["kind"].as_str()?;
    let codec = kinds::find(api_version, kind)?;
    Some(
        (codec.encode)(obj)
            .map(|raw| {
                let unknown = Unknown {
                    type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                        api_version: Some(api_version.to_string()),
                        kind: Some(kind.to_string()),
                    }),
                    raw: Some(raw),
                    content_encoding: Some(String::new()),
                    content_type: Some(String::new()),
                };
                let mut out = MAGIC.to_vec();
                out.extend(unknown.encode_to_vec());
                out
            })
            .map_err(ProtoError::from),
    )
}

/// Whether an `Accept` header prefers protobuf to JSON for a plain object, as the apiserver
/// negotiates: the highest `q` wins, ties go to the earlier entry; entries asking for another
/// shape (`as=Table`, `stream=watch`) or another type do not count.
pub fn prefers_protobuf(accept: &str) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let ty = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut q = 1.0_f32;
        let mut plain = true;
        for p in parts {
            match p.split_once('=') {
                Some(("q", v)) => q = v.trim().parse().unwrap_or(0.0),
                Some(_) => plain = false,
                None => {}
            }
        }
        let proto = match ty.as_str() {
            MEDIA_TYPE => true,
            "application/json" | "application/*" | "*/*" => false,
            _ => continue,
        };
        if plain && q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, proto));
        }
    }
    best.is_some_and(|(_, proto)| proto)
}

#[cfg(test)]
mod tests;
