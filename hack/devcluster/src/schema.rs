//! Structural schema checks: pruning unknown fields, dropping nulls the schema does not allow,
//! and validating types, enums, bounds, lengths, patterns, required fields and list
//! uniqueness with the apiserver's error wording.
//!
//! Pure; knows nothing about CEL or storage.

use crate::error::Cause;
use serde_json::{Map, Value};

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(s: &Value, k: &str) -> bool {
    s.get(k).and_then(Value::as_bool) == Some(true)
}

/// Removes fields the schema does not declare (recording their paths in `unknown`) and null
/// values of non-nullable fields. `root` keeps `apiVersion`, `kind` and `metadata`.
pub fn prune(schema: &Value, v: &mut Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let meta_key =
                    (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                let child = props.and_then(|p| p.get(&k)).or(additional);
                match child {
                    Some(cs) => {
                        let drop_null =
                            m.get(&k).is_some_and(Value::is_null) && !flag(cs, "nullable");
                        if drop_null {
                            m.remove(&k);
                            continue;
                        }
                        let cpath =
                            if additional.is_some() && props.is_none_or(|p| !p.contains_key(&k)) {
                                format!("{path}[{k}]")
                            } else {
                                join(path, &k)
                            };
                        if let Some(cv) = m.get_mut(&k) {
                            prune(cs, cv, &cpath, false, unknown);
                        }
                    }
                    None if meta_key || preserve => {}
                    None => {
                        m.remove(&k);
                        unknown.push(join(path, &k));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune(is, it, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How a value is quoted in `Invalid value: ...` messages.
pub fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

fn invalid(errs: &mut Vec<Cause>, path: &str, v: &Value, what: String) {
    errs.push(Cause::new(
        "FieldValueInvalid",
        path,
        format!("Invalid value: {}: {what}", shown(v)),
    ));
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    }
}

/// Validates `v` against `schema`, appending causes.
pub fn validate(schema: &Value, v: &Value, path: &str, errs: &mut Vec<Cause>) {
    if v.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            let ty = schema["type"].as_str().unwrap_or_default();
            invalid(
                errs,
                path,
                v,
                format!("{path} in body must be of type {ty}: \"null\""),
            );
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            invalid(
                errs,
                path,
                v,
                format!(
                    "{path} in body must be of type int-or-string: {:?}",
                    type_name(v)
                ),
            );
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str)
        && !type_ok(ty, v)
    {
        invalid(
            errs,
            path,
            v,
            format!("{path} in body must be of type {ty}: {:?}", type_name(v)),
        );
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(shown).collect();
        errs.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                shown(v),
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Number(_) => check_number(schema, v, path, errs),
        Value::String(s) => check_string(schema, v, s, path, errs),
        Value::Array(items) => check_array(schema, items, path, errs),
        Value::Object(m) => check_object(schema, m, path, errs),
        _ => {}
    }
}

fn check_number(schema: &Value, v: &Value, path: &str, errs: &mut Vec<Cause>) {
    let x = num(v).unwrap_or(0.0);
    if let Some(min) = schema.get("minimum").and_then(num) {
        let excl = flag(schema, "exclusiveMinimum");
        if x < min || (excl && x == min) {
            let op = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            invalid(
                errs,
                path,
                v,
                format!(
                    "{path} in body should be {op} {}",
                    fmt_num(&schema["minimum"])
                ),
            );
        }
    }
    if let Some(max) = schema.get("maximum").and_then(num) {
        let excl = flag(schema, "exclusiveMaximum");
        if x > max || (excl && x == max) {
            let op = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            invalid(
                errs,
                path,
                v,
                format!(
                    "{path} in body should be {op} {}",
                    fmt_num(&schema["maximum"])
                ),
            );
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(num)
        && m != 0.0
        && (x / m).fract() != 0.0
    {
        invalid(
            errs,
            path,
            v,
            format!(
                "{path} in body should be a multiple of {}",
                fmt_num(&schema["multipleOf"])
            ),
        );
    }
}

fn check_string(schema: &Value, v: &Value, s: &str, path: &str, errs: &mut Vec<Cause>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errs.push(Cause::new(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        invalid(
            errs,
            path,
            v,
            format!("{path} in body should be at least {min} chars long"),
        );
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(s) => {
                invalid(errs, path, v, format!("{path} in body should match '{p}'"))
            }
            _ => {}
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errs: &mut Vec<Cause>) {
    let n = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        errs.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        invalid(
            errs,
            path,
            &Value::Array(items.to_vec()),
            format!("{path} in body should have at least {min} items"),
        );
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, it) in items.iter().enumerate() {
                if items[..i].contains(it) {
                    errs.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {}", it),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |it: &Value| -> Map<String, Value> {
                keys.iter()
                    .filter_map(|k| it.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect()
            };
            for (i, it) in items.iter().enumerate() {
                let k = key_of(it);
                if items[..i].iter().any(|o| key_of(o) == k) {
                    errs.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {}", Value::Object(k)),
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(is) = schema.get("items") {
        for (i, it) in items.iter().enumerate() {
            validate(is, it, &format!("{path}[{i}]"), errs);
        }
    }
}

fn check_object(schema: &Value, m: &Map<String, Value>, path: &str, errs: &mut Vec<Cause>) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                errs.push(Cause::new(
                    "FieldValueRequired",
                    join(path, r),
                    "Required value",
                ));
            }
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && m.len() as u64 > max
    {
        errs.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {}: must have at most {max} items", m.len()),
        ));
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, cv) in m {
        if let Some(cs) = props.and_then(|p| p.get(k)) {
            validate(cs, cv, &join(path, k), errs);
        } else if let Some(cs) = additional {
            validate(cs, cv, &format!("{path}[{k}]"), errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
            "n": {"type": "integer", "minimum": 1, "maximum": 8},
            "mode": {"type": "string", "enum": ["A", "B"]},
            "tags": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "size": {"x-kubernetes-int-or-string": true},
            "opt": {"type": "string", "nullable": true}}}}})
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        let mut e = vec![];
        validate(&schema(), &v, "", &mut e);
        e.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn structural_rules_report_the_field_and_the_apiserver_wording() {
        let e = errors(
            json!({"spec": {"name": "Abc", "n": 9, "mode": "C", "tags": ["a", "a", "b"], "size": true}}),
        );
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"spec.name"), "{e:?}");
        assert!(fields.contains(&"spec.n"));
        assert!(fields.contains(&"spec.mode"));
        assert!(fields.contains(&"spec.tags"));
        assert!(fields.contains(&"spec.tags[1]"));
        assert!(fields.contains(&"spec.size"));
        let n = e.iter().find(|(f, _)| f == "spec.n").unwrap();
        assert_eq!(
            n.1,
            "Invalid value: 9: spec.n in body should be less than or equal to 8"
        );
    }

    #[test]
    fn missing_required_fields_are_named() {
        assert_eq!(
            errors(json!({"spec": {}})),
            vec![("spec.name".to_string(), "Required value".to_string())]
        );
        assert!(errors(json!({"spec": {"name": "ab", "size": "1Gi", "opt": null}})).is_empty());
    }

    #[test]
    fn pruning_drops_unknown_fields_and_non_nullable_nulls() {
        let mut v = json!({"apiVersion": "x", "metadata": {}, "spec": {"name": "a", "bogus": 1, "n": null}, "extra": {}});
        let mut unknown = vec![];
        prune(&schema(), &mut v, "", true, &mut unknown);
        assert_eq!(
            v,
            json!({"apiVersion": "x", "metadata": {}, "spec": {"name": "a"}})
        );
        assert_eq!(unknown, vec!["extra".to_string(), "spec.bogus".to_string()]);
    }
}
