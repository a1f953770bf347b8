//! The seed copy: how cloud-init data that a VM takes from Secrets reaches its agent.
//!
//! Agents never read a tenant's Secrets. When a VM references Secrets for its cloud-init
//! data (`cloudInit.userDataSecretRef`, `cloudInit.networkDataSecretRef`) and is placed, the
//! operator copies exactly the referenced values into one Secret of type [`SECRET_TYPE`]
//! named [`secret_name`]`(<vm uid>)` in [`NAMESPACE`], and the agent reads only that one, by
//! name. The namespace holds seed copies and nothing else, because the agents' `get` on
//! Secrets there cannot be narrowed further by RBAC (the names are not known in advance, and
//! one service account serves every host). So each value is sealed (an anonymous
//! X25519/XSalsa20-Poly1305 box) to the public key the placed host's agent publishes in its
//! Hypervisor's `status.seedKey`: any agent may fetch any copy, only the VM's own host can
//! open it. This module is the contract both sides share: names, keys, labels and the
//! annotations that say which Secret each value came from (so an agent never builds a seed
//! from a copy made for an older spec) and which key it is sealed to. While a live
//! migration moves the VM, a second copy ([`incoming_secret_name`]) holds the same values
//! sealed to the target host's key. Pure: no client.

use crate::vm::CloudInit;

/// The namespace of the seed copies, and of nothing else (`manifests/namespace.yaml`).
pub const NAMESPACE: &str = "ironvisor-seeds";

/// Name prefix of a seed copy; the rest is the VM's uid.
pub const SECRET_PREFIX: &str = "ironvisor-seed-";

/// `type` of every seed copy.
pub const SECRET_TYPE: &str = "ironvisor.io/seed";

/// Label on a seed copy: the VM's uid (also in its name; the label lets the operator list
/// every copy).
pub const VM_UID_LABEL: &str = "ironvisor.io/vm-uid";

/// Label on a seed copy: the VM's namespace.
pub const VM_NAMESPACE_LABEL: &str = "ironvisor.io/vm-namespace";

/// Annotation on a seed copy: the VM's name (an annotation, since a VM name may be longer
/// than a label value may be).
pub const VM_NAME_ANNOTATION: &str = "ironvisor.io/vm-name";

/// Annotation on a seed copy: the public seed key (base64) its values are sealed to, as the
/// placed host's Hypervisor published it. An agent whose key differs waits for a copy sealed
/// to its own.
pub const SEALED_FOR_ANNOTATION: &str = "ironvisor.io/sealed-for";

/// Annotation on a seed copy: the version of each source Secret sealed into it
/// (`userData=<uid>@<resourceVersion>,…`), so the operator seals again only when a source
/// changes (a sealed value differs at every sealing and cannot be compared).
pub const SEALED_FROM_ANNOTATION: &str = "ironvisor.io/sealed-from";

/// The name of the seed copy of the VM with this uid.
pub fn secret_name(vm_uid: &str) -> String {
    format!("{SECRET_PREFIX}{vm_uid}")
}

/// Suffix of the incoming copy's name (after the VM's uid).
pub const INCOMING_SUFFIX: &str = "-incoming";

/// The name of the incoming copy of the VM with this uid: while a live migration moves the
/// VM, the same values sealed to the target host's key, so the target's agent builds the
/// seed before the guest arrives (the placed host's copy stays sealed to the source's key
/// until the VM is placed on the target).
pub fn incoming_secret_name(vm_uid: &str) -> String {
    format!("{SECRET_PREFIX}{vm_uid}{INCOMING_SUFFIX}")
}

/// A cloud-init value that may come from a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// `user-data`, from `cloudInit.userDataSecretRef`.
    UserData,
    /// `network-config`, from `cloudInit.networkDataSecretRef`.
    NetworkData,
}

impl Field {
    /// Both fields.
    pub const ALL: [Field; 2] = [Field::UserData, Field::NetworkData];

    /// The key of the value in the seed copy.
    pub fn copy_key(self) -> &'static str {
        match self {
            Field::UserData => "userData",
            Field::NetworkData => "networkData",
        }
    }

    /// The keys looked up in the referenced Secret, in order (the first is the documented
    /// one).
    pub fn source_keys(self) -> [&'static str; 2] {
        match self {
            Field::UserData => ["userdata", "userData"],
            Field::NetworkData => ["networkdata", "networkData"],
        }
    }

    /// The spec field that names the Secret, for messages.
    pub fn spec_field(self) -> &'static str {
        match self {
            Field::UserData => "cloudInit.userDataSecretRef",
            Field::NetworkData => "cloudInit.networkDataSecretRef",
        }
    }

    /// Annotation on the seed copy naming the Secret this value was copied from.
    pub fn source_annotation(self) -> &'static str {
        match self {
            Field::UserData => "ironvisor.io/user-data-secret",
            Field::NetworkData => "ironvisor.io/network-data-secret",
        }
    }

    /// The Secret (in the VM's namespace) this field is taken from, when the spec says so.
    /// An inline value wins: the CRD refuses both at once, and the agent uses the inline one.
    pub fn secret_ref(self, ci: &CloudInit) -> Option<&str> {
        match self {
            Field::UserData if ci.user_data.is_none() => {
                ci.user_data_secret_ref.as_ref().map(|r| r.name.as_str())
            }
            Field::NetworkData if ci.network_data.is_none() => {
                ci.network_data_secret_ref.as_ref().map(|r| r.name.as_str())
            }
            _ => None,
        }
    }
}

/// The fields of `ci` that come from Secrets, with the Secret's name.
pub fn references(ci: Option<&CloudInit>) -> Vec<(Field, &str)> {
    let Some(ci) = ci else {
        return vec![];
    };
    Field::ALL
        .iter()
        .filter_map(|f| f.secret_ref(ci).map(|name| (*f, name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::LocalObjectReference;

    fn r(name: &str) -> Option<LocalObjectReference> {
        Some(LocalObjectReference { name: name.into() })
    }

    #[test]
    fn only_secret_references_without_an_inline_value_need_a_copy() {
        assert!(references(None).is_empty());
        let inline = CloudInit {
            user_data: Some("#cloud-config\n".into()),
            ..Default::default()
        };
        assert!(references(Some(&inline)).is_empty());
        let both = CloudInit {
            user_data_secret_ref: r("u"),
            network_data_secret_ref: r("n"),
            ..Default::default()
        };
        assert_eq!(
            references(Some(&both)),
            vec![(Field::UserData, "u"), (Field::NetworkData, "n")]
        );
    }

    #[test]
    fn a_copy_is_named_after_the_vm_uid() {
        assert_eq!(secret_name("1234-abcd"), "ironvisor-seed-1234-abcd");
        assert_eq!(
            incoming_secret_name("1234-abcd"),
            "ironvisor-seed-1234-abcd-incoming"
        );
    }
}
