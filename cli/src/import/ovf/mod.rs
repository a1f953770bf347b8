//! OVF descriptors (DMTF DSP0243 1.x and 2.x, as vSphere, ovftool, VirtualBox and appliance
//! builders write them) into a [`SourceVm`].
//!
//! Reads the References (with `ovf:compression`), the DiskSection (disks with a file, and
//! new empty disks without one), the DeploymentOptionSection (one configuration is chosen;
//! items and property values of other configurations are ignored), the ProductSection
//! properties (`${key}` references in capacities resolve through them, and they are kept for
//! the report and cloud-init), and the single VirtualSystem's VirtualHardwareSection: CIM
//! resource items (`Item`, and OVF 2.x `StorageItem`/`EthernetPortItem`), VMware's
//! `vmw:Config` extensions and `vmw:BootOrderSection`. Names are matched by namespace URI,
//! never by prefix. Pure: the caller reads the file.

mod deployment;
mod disks;
mod items;
mod properties;
mod system;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use deployment::DeploymentChoice;
pub use disks::units;
pub use properties::VappProperty;

use super::model::SourceVm;
use super::xml::{self, Element, XmlError};

/// OVF envelope namespaces (1.x and 2.x).
const OVF: &[&str] = &[
    "http://schemas.dmtf.org/ovf/envelope/1",
    "http://schemas.dmtf.org/ovf/envelope/2",
];
/// OVF attributes appear qualified (`ovf:href`) or, in some exporters, unqualified.
const OVF_ATTR: &[&str] = &[
    "http://schemas.dmtf.org/ovf/envelope/1",
    "http://schemas.dmtf.org/ovf/envelope/2",
    "",
];
/// CIM settings data namespaces used inside hardware items: `rasd` for `Item`, and OVF
/// 2.x's `epasd` (`EthernetPortItem`) and `sasd` (`StorageItem`). VirtualBox writes the
/// 2.x ones with a `.xsd` suffix.
const RASD: &[&str] = &[
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData.xsd",
];
const VSSD: &[&str] =
    &["http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"];
const VMW: &[&str] = &["http://www.vmware.com/schema/ovf"];

/// Why an OVF descriptor could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OvfError {
    /// Not XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root is not an OVF Envelope.
    #[error("the root element is not an OVF Envelope")]
    NotOvf,
    /// No VirtualSystem, or several side by side.
    #[error("expected exactly one VirtualSystem, found {0}")]
    VirtualSystems(usize),
    /// A VirtualSystemCollection (a vApp): several VMs in one OVF.
    #[error(
        "the OVF is a VirtualSystemCollection (a vApp) of {0} virtual system(s); ivctl imports \
         one VM per OVF: export each VM of the vApp on its own (vSphere: Export OVF Template \
         on the VM, or ovftool vi://…/vm-name) and import each"
    )]
    Collection(usize),
    /// A required element is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// An element whose value does not parse.
    #[error("{what} {value:?} is not valid")]
    BadValue {
        /// What it is.
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// A reference to an id that is not defined.
    #[error("{what} refers to {id:?}, which is not defined")]
    Dangling {
        /// What refers.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// `--deployment-option` names no configuration of the DeploymentOptionSection.
    #[error("deployment option {requested:?} is not in the OVF; {}", valid_options(.valid))]
    UnknownDeploymentOption {
        /// What was asked for.
        requested: String,
        /// The configurations the OVF offers.
        valid: Vec<String>,
    },
    /// A `${key}` reference to a property that is undefined or has no value.
    #[error(
        "{what} is {reference:?}, but no ProductSection property {key:?} gives it a value; \
         pass --vapp-property {key}=VALUE"
    )]
    Unresolved {
        /// What holds the reference.
        what: &'static str,
        /// The reference as written.
        reference: String,
        /// The property key.
        key: String,
    },
    /// A file compressed with something other than gzip.
    #[error(
        "file {href:?} is compressed with {compression:?}; only gzip is defined by OVF: \
         decompress it and remove ovf:compression from the descriptor"
    )]
    Compression {
        /// The file.
        href: String,
        /// The declared compression.
        compression: String,
    },
}

fn valid_options(valid: &[String]) -> String {
    if valid.is_empty() {
        "it has no DeploymentOptionSection: leave --deployment-option out".into()
    } else {
        format!("valid options: {}", valid.join(", "))
    }
}

/// How a referenced file is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// As is.
    #[default]
    None,
    /// gzip (`ovf:compression="gzip"`): the href names the compressed file.
    Gzip,
}

/// A file the OVF references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfFile {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`, relative to the descriptor.
    pub href: String,
    /// Declared size in bytes (of the compressed file, when compressed).
    pub size: Option<u64>,
    /// `ovf:compression`.
    pub compression: Compression,
}

/// Choices the OVF leaves to whoever deploys it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// The DeploymentOptionSection configuration (`--deployment-option`); the OVF's
    /// default (else its first) when `None`.
    pub deployment_option: Option<String>,
    /// Property values given by the user (`--vapp-property KEY=VALUE`), by full key
    /// (`class.key.instance`) or plain key; they override the descriptor's defaults.
    pub properties: BTreeMap<String, String>,
}

/// What an OVF descriptor says.
#[derive(Clone, Debug, PartialEq)]
pub struct OvfPackage {
    /// Every referenced file.
    pub files: Vec<OvfFile>,
    /// The VM.
    pub vm: SourceVm,
    /// The deployment configuration used, when the OVF offers several.
    pub deployment: Option<DeploymentChoice>,
    /// The vApp properties (ProductSection), values as chosen.
    pub properties: Vec<VappProperty>,
}

impl OvfPackage {
    /// The file an href names, if referenced.
    pub fn file(&self, href: &str) -> Option<&OvfFile> {
        self.files.iter().find(|f| f.href == href)
    }
}

/// Parse an OVF descriptor's text with the OVF's own defaults.
pub fn parse(text: &str) -> Result<OvfPackage, OvfError> {
    parse_with(text, &ParseOptions::default())
}

/// Parse an OVF descriptor's text with the deployer's choices.
pub fn parse_with(text: &str, opts: &ParseOptions) -> Result<OvfPackage, OvfError> {
    let root = xml::parse(text)?;
    if !root.is(OVF, "Envelope") {
        return Err(OvfError::NotOvf);
    }
    let files = disks::read_references(&root)?;
    if let Some(c) = root.child(OVF, "VirtualSystemCollection") {
        return Err(OvfError::Collection(
            c.children_named(OVF, "VirtualSystem").count(),
        ));
    }
    let systems: Vec<&Element> = root.children_named(OVF, "VirtualSystem").collect();
    if systems.len() != 1 {
        return Err(OvfError::VirtualSystems(systems.len()));
    }
    let system = systems[0];
    let deployment = deployment::choose(&root, opts.deployment_option.as_deref())?;
    let config = deployment.as_ref().map(|d| d.chosen.as_str());
    let properties = properties::read(&root, system, config, &opts.properties)?;
    let disks = disks::read_disk_section(&root, &files, &properties)?;
    let vm = system::read_system(system, &disks, &files, config)?;
    Ok(OvfPackage {
        files,
        vm,
        deployment,
        properties,
    })
}

/// `vmw:Config` key/values of an element (VirtualHardwareSection or an Item).
fn vmw_config(el: &Element) -> BTreeMap<String, String> {
    el.children
        .iter()
        .filter(|c| c.is(VMW, "Config") || c.is(VMW, "ExtraConfig"))
        .filter_map(|c| {
            Some((
                c.attr(VMW, "key")?.to_ascii_lowercase(),
                c.attr(VMW, "value")?.to_owned(),
            ))
        })
        .collect()
}
