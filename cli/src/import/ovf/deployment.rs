//! The DeploymentOptionSection: the configurations an OVF offers (an appliance's "tiny",
//! "small", "large" sizes) and which one an import uses.
//!
//! DSP0243 §9.8: one `Configuration` may carry `ovf:default="true"`, else the first is the
//! default; an `Item` (or a property `Value`) with `ovf:configuration="a b"` applies only
//! to those configurations, one without applies to all.

use super::{OVF, OVF_ATTR, OvfError};
use crate::import::xml::Element;

/// The configuration chosen among those offered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentChoice {
    /// The configuration used.
    pub chosen: String,
    /// The OVF's default configuration.
    pub default: String,
    /// Every configuration, in descriptor order.
    pub options: Vec<String>,
}

/// The configuration to use: `requested` (which must exist), else the OVF's default; `None`
/// when the OVF offers no choice and none was requested.
pub(super) fn choose(
    root: &Element,
    requested: Option<&str>,
) -> Result<Option<DeploymentChoice>, OvfError> {
    let configs: Vec<&Element> = root
        .child(OVF, "DeploymentOptionSection")
        .map(|s| s.children_named(OVF, "Configuration").collect())
        .unwrap_or_default();
    let options: Vec<String> = configs
        .iter()
        .filter_map(|c| c.attr(OVF_ATTR, "id"))
        .map(str::to_owned)
        .collect();
    let default = configs
        .iter()
        .find(|c| {
            c.attr(OVF_ATTR, "default")
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("true"))
        })
        .and_then(|c| c.attr(OVF_ATTR, "id"))
        .or_else(|| options.first().map(String::as_str))
        .map(str::to_owned);
    let chosen = match requested {
        Some(r) if options.iter().any(|o| o == r) => r.to_owned(),
        Some(r) => {
            return Err(OvfError::UnknownDeploymentOption {
                requested: r.to_owned(),
                valid: options,
            });
        }
        None => match &default {
            Some(d) => d.clone(),
            None => return Ok(None),
        },
    };
    Ok(Some(DeploymentChoice {
        chosen,
        default: default.unwrap_or_default(),
        options,
    }))
}

/// Whether an element (an Item, a property Value) applies to the chosen configuration.
pub(super) fn applies(el: &Element, chosen: Option<&str>) -> bool {
    match (el.attr(OVF_ATTR, "configuration"), chosen) {
        (None, _) => true,
        (Some(list), Some(c)) => list.split_whitespace().any(|x| x == c),
        // A configuration-specific element in an OVF without a DeploymentOptionSection
        // belongs to no configuration that can be chosen.
        (Some(_), None) => false,
    }
}
