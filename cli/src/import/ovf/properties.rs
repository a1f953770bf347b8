//! ProductSection properties (vApp properties) and `${key}` references to them.
//!
//! DSP0243 §9.5: a property's full key is `class.key.instance` (class and instance when the
//! ProductSection names them); its value is `ovf:value`, overridden by a `Value` child whose
//! `ovf:configuration` names the chosen deployment option, overridden by the user's
//! `--vapp-property`. Password properties are kept but never shown or carried over.

use std::collections::BTreeMap;

use serde::Serialize;

use super::deployment::applies;
use super::{OVF, OVF_ATTR, OvfError};
use crate::import::xml::Element;

/// One vApp property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VappProperty {
    /// Full key (`class.key.instance`).
    pub key: String,
    /// `ovf:type` (`string`, `uint16`, `boolean`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The value as chosen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `ovf:password="true"`: the value is a secret.
    pub password: bool,
    /// Whether the deployer is meant to set it (`ovf:userConfigurable`).
    pub user_configurable: bool,
    /// Its label, for the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The properties of every ProductSection of the virtual system (and of the envelope),
/// with values for configuration `config` and the user's `overrides`.
pub(super) fn read(
    root: &Element,
    system: &Element,
    config: Option<&str>,
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<VappProperty>, OvfError> {
    let mut out: Vec<VappProperty> = Vec::new();
    let sections = root
        .children_named(OVF, "ProductSection")
        .chain(system.children_named(OVF, "ProductSection"));
    for section in sections {
        let class = section.attr(OVF_ATTR, "class").filter(|c| !c.is_empty());
        let instance = section.attr(OVF_ATTR, "instance").filter(|i| !i.is_empty());
        for p in section.children_named(OVF, "Property") {
            let key = p
                .attr(OVF_ATTR, "key")
                .ok_or(OvfError::Missing("Property ovf:key"))?;
            let full: String = [class, Some(key), instance]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(".");
            let configured = p
                .children_named(OVF, "Value")
                .filter(|v| v.attr(OVF_ATTR, "configuration").is_some() && applies(v, config))
                .find_map(|v| v.attr(OVF_ATTR, "value"));
            let value = overrides
                .get(&full)
                .or_else(|| overrides.get(key))
                .map(String::as_str)
                .or(configured)
                .or_else(|| p.attr(OVF_ATTR, "value"))
                .map(str::to_owned);
            let prop = VappProperty {
                key: full,
                kind: p.attr(OVF_ATTR, "type").unwrap_or("string").to_owned(),
                value,
                password: truthy(p.attr(OVF_ATTR, "password")),
                user_configurable: truthy(p.attr(OVF_ATTR, "userConfigurable")),
                label: p.child_text(OVF, "Label").map(str::to_owned),
            };
            match out.iter_mut().find(|q| q.key == prop.key) {
                Some(q) => *q = prop,
                None => out.push(prop),
            }
        }
    }
    Ok(out)
}

/// `text`, or the value of the property it references when it is `${key}`.
pub(super) fn resolve(
    text: &str,
    props: &[VappProperty],
    what: &'static str,
) -> Result<String, OvfError> {
    let t = text.trim();
    let Some(key) = t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
        return Ok(t.to_owned());
    };
    props
        .iter()
        .find(|p| p.key == key)
        .and_then(|p| p.value.clone())
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| OvfError::Unresolved {
            what,
            reference: t.to_owned(),
            key: key.to_owned(),
        })
}
