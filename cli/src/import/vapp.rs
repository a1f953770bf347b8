//! vApp properties (an OVF's ProductSection) as cloud-init data, with
//! `--vapp-properties-as-cloud-init`.
//!
//! vSphere hands vApp properties to the guest as an OVF environment document (DSP0243 §11,
//! read with `vmtoolsd --cmd "info-get guestinfo.ovfEnv"` or from an ISO). Ironvisor's
//! guests get a cloud-init NoCloud seed instead, so the mapping (also in docs/migration.md)
//! is:
//! - a property named `user-data` (cloud-init's own OVF convention, base64 or plain) is the
//!   user data as is; the other properties are then only listed;
//! - otherwise a `#cloud-config` document: a `hostname` property (any key with a
//!   `hostname` segment, e.g. `guestinfo.hostname`) becomes the VM's `spec.hostname` when it
//!   is a DNS label, else `fqdn`; a `public-keys` (or `ssh…key…`) property becomes
//!   `ssh_authorized_keys`; and every property with a value is written to
//!   `/var/lib/ironvisor/ovf-env.xml` as an OVF environment document, for first-boot scripts
//!   that read the environment to be pointed at;
//! - a password property is never written into a manifest: it is listed, and belongs in a
//!   Secret referenced by `cloudInit.userDataSecretRef`.
//!
//! Pure: nothing here reads or writes files.

use base64::Engine;
use ironvisor_crds::vm::CloudInit;
use serde::Serialize;

use super::manifest::Built;
use super::ovf::VappProperty;

/// Where the OVF environment document is written in the guest.
pub const OVF_ENV_PATH: &str = "/var/lib/ironvisor/ovf-env.xml";

/// The cloud-init data made from the properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VappCloudInit {
    /// The user data.
    pub user_data: String,
    /// The guest's host name, for `spec.hostname`.
    pub hostname: Option<String>,
    /// One line per property carried over, saying where to.
    pub carried: Vec<String>,
    /// Properties not carried over, each with why.
    pub left_out: Vec<String>,
}

#[derive(Serialize)]
struct CloudConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    fqdn: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh_authorized_keys: Vec<String>,
    write_files: Vec<WriteFile>,
}

#[derive(Serialize)]
struct WriteFile {
    path: &'static str,
    permissions: &'static str,
    content: String,
}

fn segments(key: &str) -> impl Iterator<Item = String> + '_ {
    key.split(['.', '_']).map(str::to_ascii_lowercase)
}

fn is_hostname(key: &str) -> bool {
    segments(key).any(|s| s == "hostname")
}

fn is_public_keys(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "public-keys" || (k.contains("ssh") && k.contains("key"))
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The `user-data` property's text: base64-decoded when it is base64 of UTF-8.
fn user_data_text(value: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| value.to_owned())
}

/// Properties that are secrets, or have no value, listed with why.
fn unusable(props: &[VappProperty]) -> Vec<String> {
    props
        .iter()
        .filter_map(|p| {
            if p.password {
                Some(format!(
                    "{}: a secret, never written into a manifest (put it in a Secret and \
                     reference it with cloudInit.userDataSecretRef)",
                    p.key
                ))
            } else if p.value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                Some(format!(
                    "{}: no value (set one with --vapp-property)",
                    p.key
                ))
            } else {
                None
            }
        })
        .collect()
}

/// The cloud-init data for `props`; `None` when no property has a value to carry.
pub fn cloud_init(props: &[VappProperty]) -> Option<VappCloudInit> {
    // An empty value (`ovf:value=""`, the usual default of an optional property) carries
    // nothing.
    let usable: Vec<(&str, &str)> = props
        .iter()
        .filter(|p| !p.password)
        .filter_map(|p| Some((p.key.as_str(), p.value.as_deref()?)))
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    if usable.is_empty() {
        return None;
    }
    let mut out = VappCloudInit {
        left_out: unusable(props),
        ..VappCloudInit::default()
    };
    let hostname = usable.iter().find(|(k, _)| is_hostname(k));
    let mut fqdn = None;
    if let Some((key, value)) = hostname {
        let v = value.trim().to_ascii_lowercase();
        if dns_label(&v) {
            out.carried.push(format!("{key} → spec.hostname"));
            out.hostname = Some(v);
        } else if !v.is_empty() {
            out.carried.push(format!("{key} → cloud-config fqdn"));
            fqdn = Some(v);
        }
    }
    if let Some((key, value)) = usable.iter().find(|(k, _)| *k == "user-data") {
        out.user_data = user_data_text(value);
        out.carried.push(format!("{key} → the user data, as is"));
        for (k, _) in usable.iter().filter(|(k, _)| *k != "user-data") {
            if hostname.is_none_or(|(h, _)| h != k) {
                out.left_out.push(format!(
                    "{k}: the OVF's own user-data is used as is; add it there"
                ));
            }
        }
        return Some(out);
    }
    let mut ssh_authorized_keys = Vec::new();
    for (key, value) in usable.iter().filter(|(k, _)| is_public_keys(k)) {
        ssh_authorized_keys.extend(
            value
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
        out.carried
            .push(format!("{key} → cloud-config ssh_authorized_keys"));
    }
    out.carried
        .push(format!("every property with a value → {OVF_ENV_PATH}"));
    let config = CloudConfig {
        fqdn,
        ssh_authorized_keys,
        write_files: vec![WriteFile {
            path: OVF_ENV_PATH,
            permissions: "0600",
            content: ovf_environment(&usable),
        }],
    };
    // Rendering plain strings and lists cannot fail; an empty document would still be
    // valid cloud-config.
    let yaml = serde_saphyr::to_string(&config).unwrap_or_default();
    out.user_data = format!("#cloud-config\n{yaml}");
    Some(out)
}

/// An OVF environment document (DSP0243 §11) with the properties' values.
pub fn ovf_environment(props: &[(&str, &str)]) -> String {
    use quick_xml::escape::escape;
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Environment \
         xmlns=\"http://schemas.dmtf.org/ovf/environment/1\" \
         xmlns:oe=\"http://schemas.dmtf.org/ovf/environment/1\">\n  <PropertySection>\n",
    );
    for (k, v) in props {
        s.push_str(&format!(
            "    <Property oe:key=\"{}\" oe:value=\"{}\"/>\n",
            escape(*k),
            escape(*v)
        ));
    }
    s.push_str("  </PropertySection>\n</Environment>\n");
    s
}

/// Carry `props` into `built` as cloud-init data when `as_cloud_init`, noting each decision;
/// returns the properties left out, each with why (every one without the flag).
pub fn apply(built: &mut Built, props: &[VappProperty], as_cloud_init: bool) -> Vec<String> {
    if !as_cloud_init {
        return props
            .iter()
            .map(|p| {
                format!(
                    "{}: not carried over (--vapp-properties-as-cloud-init)",
                    p.key
                )
            })
            .collect();
    }
    let Some(ci) = cloud_init(props) else {
        return unusable(props);
    };
    let spec = &mut built.vm.spec;
    spec.cloud_init = Some(CloudInit {
        user_data: Some(ci.user_data),
        ..CloudInit::default()
    });
    if ci.hostname.is_some() {
        spec.hostname = ci.hostname;
    }
    built
        .notes
        .extend(ci.carried.iter().map(|c| format!("vApp property {c}")));
    ci.left_out
}

/// Properties listed when they are not carried over (no flag): every one, secrets without
/// their value.
pub fn listed(props: &[VappProperty]) -> Vec<VappProperty> {
    props
        .iter()
        .map(|p| VappProperty {
            value: if p.password { None } else { p.value.clone() },
            ..p.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(key: &str, value: Option<&str>, password: bool) -> VappProperty {
        VappProperty {
            key: key.into(),
            kind: "string".into(),
            value: value.map(str::to_owned),
            password,
            user_configurable: true,
            label: None,
        }
    }

    #[test]
    fn well_known_properties_map_and_all_go_to_the_ovf_environment() {
        let props = [
            prop("guestinfo.hostname", Some("Appliance-01"), false),
            prop("public-keys", Some("ssh-ed25519 AAAA a@b\n"), false),
            prop("guestinfo.dns", Some("10.0.0.53 & <x>"), false),
            prop("root.password", Some("s3cret"), true),
            prop("guestinfo.ntp", None, false),
        ];
        let ci = cloud_init(&props).unwrap();
        assert_eq!(ci.hostname.as_deref(), Some("appliance-01"));
        assert!(ci.user_data.starts_with("#cloud-config\n"));
        let doc: serde_json::Value =
            serde_saphyr::from_str(ci.user_data.trim_start_matches("#cloud-config\n")).unwrap();
        assert_eq!(doc["ssh_authorized_keys"][0], "ssh-ed25519 AAAA a@b");
        let env = doc["write_files"][0]["content"].as_str().unwrap();
        assert_eq!(doc["write_files"][0]["path"], OVF_ENV_PATH);
        assert!(env.contains(r#"oe:key="guestinfo.dns" oe:value="10.0.0.53 &amp; &lt;x&gt;""#));
        assert!(!ci.user_data.contains("s3cret"), "secrets never travel");
        assert!(
            ci.left_out
                .iter()
                .any(|l| l.starts_with("root.password: a secret"))
        );
        assert!(
            ci.left_out
                .iter()
                .any(|l| l.starts_with("guestinfo.ntp: no value"))
        );
    }

    #[test]
    fn an_fqdn_is_not_a_label_and_goes_to_cloud_config() {
        let ci = cloud_init(&[prop("vami.hostname.VM", Some("vc.example.com"), false)]).unwrap();
        assert_eq!(ci.hostname, None);
        assert!(
            ci.user_data.contains("fqdn: vc.example.com"),
            "{}",
            ci.user_data
        );
    }

    #[test]
    fn the_ovfs_own_user_data_is_used_as_is() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n");
        let props = [
            prop("user-data", Some(&encoded), false),
            prop("hostname", Some("box"), false),
            prop("seedfrom", Some("http://x/"), false),
        ];
        let ci = cloud_init(&props).unwrap();
        assert_eq!(ci.user_data, "#!/bin/sh\necho hi\n");
        assert_eq!(ci.hostname.as_deref(), Some("box"));
        assert!(ci.left_out.iter().any(|l| l.starts_with("seedfrom:")));
    }

    #[test]
    fn nothing_to_carry_is_no_cloud_init_and_listing_hides_secrets() {
        // As Cisco's ASAv OVF declares them (quoted in Apache CloudStack's OVFHelperTest):
        // optional properties with ovf:value="".
        let props = [
            prop("p", None, false),
            prop("pw", Some("x"), true),
            prop("user-data", Some(""), false),
            prop("va-ssh-public-key", Some(""), false),
        ];
        assert_eq!(cloud_init(&props), None);
        assert_eq!(listed(&props)[1].value, None);
    }
}
