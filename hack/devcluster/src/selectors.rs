//! Label and field selectors: parsing the query strings and matching objects.
//!
//! Pure functions; never touches storage.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReq {
    /// `k=v`, `k==v`, `k in (a,b)`.
    In(String, Vec<String>),
    /// `k!=v`, `k notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelReq>);

/// A malformed selector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

fn split_top(s: &str) -> Vec<String> {
    // Commas inside parentheses belong to set values.
    let mut out = vec![];
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn set_values(rest: &str) -> Option<Vec<String>> {
    let rest = rest.trim();
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    /// Parses `app=x,tier!=db,env in (a,b),!legacy`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = vec![];
        for part in split_top(s) {
            let err = || SelectorError(part.clone());
            let req = if let Some(k) = part.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some(idx) = part.find(" notin ") {
                LabelReq::NotIn(
                    part[..idx].trim().into(),
                    set_values(&part[idx + 7..]).ok_or_else(err)?,
                )
            } else if let Some(idx) = part.find(" in ") {
                LabelReq::In(
                    part[..idx].trim().into(),
                    set_values(&part[idx + 4..]).ok_or_else(err)?,
                )
            } else {
                LabelReq::Exists(part.trim().to_string())
            };
            let key = match &req {
                LabelReq::In(k, _)
                | LabelReq::NotIn(k, _)
                | LabelReq::Exists(k)
                | LabelReq::NotExists(k) => k,
            };
            if !valid_key(key) {
                return Err(err());
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// A selector from its JSON form (`matchLabels`, `matchExpressions` with `In`, `NotIn`,
    /// `Exists`, `DoesNotExist`); an empty selector matches everything. An unknown operator
    /// matches nothing, as the apiserver refuses such a selector.
    pub fn from_json(v: &Value) -> Self {
        let mut reqs = vec![];
        if let Some(m) = v["matchLabels"].as_object() {
            for (k, val) in m {
                reqs.push(LabelReq::In(
                    k.clone(),
                    vec![val.as_str().unwrap_or_default().into()],
                ));
            }
        }
        for e in v["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = e["values"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            reqs.push(match e["operator"].as_str().unwrap_or_default() {
                "In" => LabelReq::In(key, values),
                "NotIn" => LabelReq::NotIn(key, values),
                "Exists" => LabelReq::Exists(key),
                "DoesNotExist" => LabelReq::NotExists(key),
                _ => LabelReq::In(key, vec![]),
            });
        }
        Self(reqs)
    }

    /// Whether the labels (a JSON object or null) satisfy every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `(path, value, equal)` triples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, String, bool)>);

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=y`; `allowed` lists the selectable paths
    /// (without the leading dot).
    pub fn parse(s: &str, allowed: &[String]) -> Result<Self, SelectorError> {
        let mut out = vec![];
        for part in split_top(s) {
            let (k, v, eq) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, true)
            } else {
                return Err(SelectorError(part.clone()));
            };
            let k = k.trim();
            if !allowed.iter().any(|a| a == k) {
                return Err(SelectorError(format!("field label not supported: {k}")));
            }
            out.push((k.to_string(), v.trim().to_string(), eq));
        }
        Ok(Self(out))
    }

    /// Whether the object satisfies every requirement (missing fields compare as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, want, eq)| {
            let got = path.split('.').try_fold(obj, |v, seg| v.get(seg));
            let got = match got {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_support_every_operator() {
        let l = json!({"app": "web", "env": "prod"});
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("env in (dev, prod)", true),
            ("env notin (prod)", false),
            ("app", true),
            ("!app", false),
            ("!missing,app=web", true),
            ("missing!=x", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors_accept_only_selectable_fields() {
        let allowed = vec!["metadata.name".to_string(), "spec.nodeName".to_string()];
        let f = FieldSelector::parse("metadata.name=a,spec.nodeName!=n1", &allowed).unwrap();
        assert!(f.matches(&json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n2"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}})));
        assert!(FieldSelector::parse("spec.other=x", &allowed).is_err());
    }
}
