//! The VM's virtual TPM (`spec.tpm`), modelled on KubeVirt's `spec.domain.devices.tpm`:
//! presence asks for the device; the state is always kept with the VM (Ironvisor's domains
//! are persistent, so KubeVirt's `persistent` switch has no counterpart here).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A virtual TPM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tpm {
    /// TPM version the guest sees. Only "2.0" (a CRB TPM, what Windows 11 and systemd's
    /// measured boot expect); TPM 1.2 is obsolete and not offered.
    #[serde(default)]
    pub version: TpmVersion,
}

/// A TPM specification version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TpmVersion {
    /// TPM 2.0.
    #[default]
    #[serde(rename = "2.0")]
    V2_0,
}

impl TpmVersion {
    /// The version as libvirt spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TpmVersion::V2_0 => "2.0",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_object_asks_for_a_tpm_2_0_and_other_versions_are_refused() {
        let t: Tpm = serde_json::from_str("{}").unwrap();
        assert_eq!(t.version, TpmVersion::V2_0);
        let t: Tpm = serde_json::from_str(r#"{"version":"2.0"}"#).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"version":"2.0"}"#);
        assert!(serde_json::from_str::<Tpm>(r#"{"version":"1.2"}"#).is_err());
    }
}
