//! The protobuf form of a Swagger 2.0 document that kubectl reads from `/openapi/v2`
//! (package `openapi.v2` of google/gnostic), declared as prost messages, and the conversion
//! from the JSON document.
//!
//! Only the messages and fields this server fills are declared; field numbers follow the
//! gnostic schema so Go's decoder reads them. prost does the wire encoding. Vendor extensions
//! (`x-kubernetes-*`) and literal values travel as YAML text in `Any.yaml`, as gnostic does (JSON
//! is YAML).

use serde_json::{Map, Value};

/// gnostic `openapi.v2.Document` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

/// gnostic `openapi.v2.Info` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// gnostic `openapi.v2.Paths` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

/// gnostic `openapi.v2.NamedPathItem` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

/// gnostic `openapi.v2.PathItem` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
}

/// gnostic `openapi.v2.Operation` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// gnostic `openapi.v2.ParametersItem` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

/// gnostic `openapi.v2.Parameter` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    #[prost(oneof = "ParameterKind", tags = "1, 2")]
    pub oneof: Option<ParameterKind>,
}

/// gnostic `openapi.v2.Parameter` (its oneof).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterKind {
    #[prost(message, boxed, tag = "1")]
    Body(Box<BodyParameter>),
    #[prost(message, tag = "2")]
    NonBody(NonBodyParameter),
}

/// gnostic `openapi.v2.BodyParameter` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

/// gnostic `openapi.v2.NonBodyParameter` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "NonBodyKind", tags = "3, 4")]
    pub oneof: Option<NonBodyKind>,
}

/// gnostic `openapi.v2.NonBodyParameter` (its oneof).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum NonBodyKind {
    #[prost(message, tag = "3")]
    Query(QueryParameter),
    #[prost(message, tag = "4")]
    Path(PathParameter),
}

/// gnostic `openapi.v2.QueryParameterSubSchema` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryParameter {
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

/// gnostic `openapi.v2.PathParameterSubSchema` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

/// gnostic `openapi.v2.Responses` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponse>,
}

/// gnostic `openapi.v2.NamedResponseValue` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponse {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// gnostic `openapi.v2.ResponseValue` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

/// gnostic `openapi.v2.Response` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// gnostic `openapi.v2.SchemaItem` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

/// gnostic `openapi.v2.Definitions` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// gnostic `openapi.v2.NamedSchema` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// gnostic `openapi.v2.Schema` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<AdditionalProperties>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// gnostic `openapi.v2.AdditionalPropertiesItem` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalProperties {
    #[prost(oneof = "AdditionalKind", tags = "1, 2")]
    pub oneof: Option<AdditionalKind>,
}

/// gnostic `openapi.v2.AdditionalPropertiesItem` (its oneof).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdditionalKind {
    #[prost(message, boxed, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

/// gnostic `openapi.v2.TypeItem` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// gnostic `openapi.v2.ItemsItem` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// gnostic `openapi.v2.Properties` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// gnostic `openapi.v2.Any` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// gnostic `openapi.v2.NamedAny` (the fields filled here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

fn any(v: &Value) -> Any {
    Any {
        yaml: v.to_string(),
    }
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn extensions(v: &Value) -> Vec<NamedAny> {
    let Some(m) = v.as_object() else {
        return vec![];
    };
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny {
            name: k.clone(),
            value: Some(any(v)),
        })
        .collect()
}

fn named_schemas(m: Option<&Map<String, Value>>) -> Vec<NamedSchema> {
    m.into_iter()
        .flatten()
        .map(|(k, v)| NamedSchema {
            name: k.clone(),
            value: Some(schema(v)),
        })
        .collect()
}

/// A Swagger 2.0 JSON schema as a message.
pub fn schema(v: &Value) -> Schema {
    let types = match &v["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => vec![],
    };
    let items = match &v["items"] {
        Value::Array(xs) => xs.iter().map(schema).collect(),
        Value::Object(_) => vec![schema(&v["items"])],
        _ => vec![],
    };
    let additional = match &v["additionalProperties"] {
        Value::Bool(b) => Some(AdditionalKind::Boolean(*b)),
        o @ Value::Object(_) => Some(AdditionalKind::Schema(Box::new(schema(o)))),
        _ => None,
    };
    let f = |k: &str| v[k].as_f64().unwrap_or_default();
    let i = |k: &str| v[k].as_i64().unwrap_or_default();
    let b = |k: &str| v[k].as_bool().unwrap_or_default();
    Schema {
        r#ref: text(v, "$ref"),
        format: text(v, "format"),
        title: text(v, "title"),
        description: text(v, "description"),
        default: v.get("default").map(any),
        multiple_of: f("multipleOf"),
        maximum: f("maximum"),
        exclusive_maximum: b("exclusiveMaximum"),
        minimum: f("minimum"),
        exclusive_minimum: b("exclusiveMinimum"),
        max_length: i("maxLength"),
        min_length: i("minLength"),
        pattern: text(v, "pattern"),
        max_items: i("maxItems"),
        min_items: i("minItems"),
        unique_items: b("uniqueItems"),
        max_properties: i("maxProperties"),
        min_properties: i("minProperties"),
        required: v["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(String::from))
            .collect(),
        r#enum: v["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .map(any)
            .collect(),
        additional_properties: additional.map(|k| AdditionalProperties { oneof: Some(k) }),
        r#type: (!types.is_empty()).then_some(TypeItem { value: types }),
        items: (!items.is_empty()).then_some(ItemsItem { schema: items }),
        all_of: v["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .map(schema)
            .collect(),
        properties: v["properties"].as_object().map(|m| Properties {
            additional_properties: named_schemas(Some(m)),
        }),
        read_only: b("readOnly"),
        vendor_extension: extensions(v),
    }
}

fn parameter(p: &Value) -> ParametersItem {
    let kind = match p["in"].as_str() {
        Some("body") => ParameterKind::Body(Box::new(BodyParameter {
            name: text(p, "name"),
            r#in: "body".into(),
            required: p["required"].as_bool().unwrap_or_default(),
            schema: Some(schema(&p["schema"])),
        })),
        Some("path") => ParameterKind::NonBody(NonBodyParameter {
            oneof: Some(NonBodyKind::Path(PathParameter {
                required: true,
                r#in: "path".into(),
                name: text(p, "name"),
                r#type: text(p, "type"),
                unique_items: p["uniqueItems"].as_bool().unwrap_or_default(),
            })),
        }),
        _ => ParameterKind::NonBody(NonBodyParameter {
            oneof: Some(NonBodyKind::Query(QueryParameter {
                r#in: "query".into(),
                description: text(p, "description"),
                name: text(p, "name"),
                r#type: text(p, "type"),
                unique_items: p["uniqueItems"].as_bool().unwrap_or_default(),
            })),
        }),
    };
    ParametersItem {
        parameter: Some(Parameter { oneof: Some(kind) }),
    }
}

fn operation(op: &Value) -> Option<Operation> {
    let op = op.as_object().map(|_| op)?;
    let strings = |k: &str| -> Vec<String> {
        op[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let responses = op["responses"].as_object().map(|rs| Responses {
        response_code: rs
            .iter()
            .map(|(code, r)| NamedResponse {
                name: code.clone(),
                value: Some(ResponseValue {
                    response: Some(Response {
                        description: text(r, "description"),
                        schema: r.get("schema").map(|s| SchemaItem {
                            schema: Some(schema(s)),
                        }),
                    }),
                }),
            })
            .collect(),
    });
    Some(Operation {
        description: text(op, "description"),
        operation_id: text(op, "operationId"),
        produces: strings("produces"),
        consumes: strings("consumes"),
        parameters: op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(parameter)
            .collect(),
        responses,
        vendor_extension: extensions(op),
    })
}

/// A Swagger 2.0 JSON document as a message.
pub fn document(doc: &Value) -> Document {
    let paths = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(p, item)| NamedPathItem {
            name: p.clone(),
            value: Some(PathItem {
                get: operation(&item["get"]),
                put: operation(&item["put"]),
                post: operation(&item["post"]),
                delete: operation(&item["delete"]),
                patch: operation(&item["patch"]),
            }),
        });
    Document {
        swagger: text(doc, "swagger"),
        info: Some(Info {
            title: text(&doc["info"], "title"),
            version: text(&doc["info"], "version"),
        }),
        paths: Some(Paths {
            path: paths.collect(),
        }),
        definitions: Some(Definitions {
            additional_properties: named_schemas(doc["definitions"].as_object()),
        }),
    }
}
