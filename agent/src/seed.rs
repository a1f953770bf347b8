//! The cloud-init NoCloud seed: an ISO 9660 image labelled CIDATA holding `user-data`,
//! `meta-data` (instance-id = the VM's uid) and `network-config`.
//!
//! The content is a pure function ([`SeedContent::new`]); writing the image runs
//! `genisoimage` (installed by hack/install-deps.sh) into a temporary file in the VM's own
//! directory and renames it into place, so a guest never sees a half-written seed. The image
//! is rebuilt only when its content changes (a hash is kept beside it).

use crate::domain_xml::NicPlan;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Volume label cloud-init looks for.
pub const VOLUME_LABEL: &str = "CIDATA";

/// Why the seed could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A file could not be written.
    #[error("cannot write the seed files")]
    Io(#[from] std::io::Error),
    /// genisoimage failed.
    #[error("genisoimage failed: {0}")]
    Tool(String),
}

/// The three files of a NoCloud seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedContent {
    /// `user-data`.
    pub user_data: String,
    /// `meta-data`.
    pub meta_data: String,
    /// `network-config`.
    pub network_config: String,
    /// `vendor-data`, when the VM is a clone ([`SeedContent::for_clone`]).
    pub vendor_data: Option<String>,
}

/// Vendor data for a clone: its disk carries its source's machine-id, so cloud-init clears
/// it once per instance (the instance-id is the clone's own uid) and systemd makes a new
/// one. Vendor data runs unless the user data turns it off (`vendor_data: {enabled: false}`).
pub const CLONE_VENDOR_DATA: &str = "#cloud-config\n\
bootcmd:\n\
  - [cloud-init-per, instance, ironvisor-machine-id, sh, -c, \
\"rm -f /etc/machine-id /var/lib/dbus/machine-id && systemd-machine-id-setup\"]\n";

impl SeedContent {
    /// Build the seed files. `meta-data` and the generated `network-config` are JSON (a
    /// subset of YAML), so no value can break their syntax. Without network data, every
    /// interface gets DHCPv4, matched by its MAC address.
    pub fn new(
        uid: &str,
        hostname: &str,
        user_data: Option<&str>,
        network_data: Option<&str>,
        nics: &[NicPlan],
    ) -> Self {
        let meta = serde_json::json!({ "instance-id": uid, "local-hostname": hostname });
        let network_config = match network_data {
            Some(n) => n.to_owned(),
            None => {
                let ethernets: serde_json::Map<String, serde_json::Value> = nics
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        (
                            format!("eth{i}"),
                            serde_json::json!({"match": {"macaddress": n.mac}, "dhcp4": true}),
                        )
                    })
                    .collect();
                serde_json::json!({"version": 2, "ethernets": ethernets}).to_string()
            }
        };
        Self {
            user_data: user_data.unwrap_or("#cloud-config\n{}\n").to_owned(),
            meta_data: format!("{meta}\n"),
            network_config: format!("{}\n", network_config.trim_end()),
            vendor_data: None,
        }
    }

    /// The seed of a clone (when `is_clone`): the same, plus vendor data that gives the
    /// guest a new machine-id ([`CLONE_VENDOR_DATA`]).
    pub fn for_clone(mut self, is_clone: bool) -> Self {
        self.vendor_data = is_clone.then(|| CLONE_VENDOR_DATA.to_owned());
        self
    }

    /// Hash of the content, to know whether an existing seed is current.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.user_data, &self.meta_data, &self.network_config] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        // Only a clone's digest covers vendor data: every other seed keeps its digest.
        if let Some(v) = &self.vendor_data {
            h.update(b"vendor-data");
            h.update((v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

fn digest_file(seed: &Path) -> PathBuf {
    seed.with_extension("iso.sha256")
}

/// Write the seed image at `seed` unless an image with the same content is already there.
/// Returns whether it wrote a new one.
pub async fn write_seed(seed: &Path, content: &SeedContent) -> Result<bool, SeedError> {
    let digest = content.digest();
    let digest_path = digest_file(seed);
    if seed.exists()
        && tokio::fs::read_to_string(&digest_path)
            .await
            .is_ok_and(|d| d.trim() == digest)
    {
        return Ok(false);
    }
    let dir = seed
        .parent()
        .ok_or_else(|| SeedError::Tool("the seed has no directory".into()))?;
    let staging = tempfile::Builder::new().prefix(".seed-").tempdir_in(dir)?;
    for (name, body) in [
        ("user-data", &content.user_data),
        ("meta-data", &content.meta_data),
        ("network-config", &content.network_config),
    ] {
        tokio::fs::write(staging.path().join(name), body).await?;
    }
    let tmp_iso = staging.path().join("seed.iso");
    let mut cmd = tokio::process::Command::new("genisoimage");
    cmd.arg("-quiet")
        .arg("-output")
        .arg(&tmp_iso)
        .args(["-volid", VOLUME_LABEL, "-joliet", "-rock"])
        .arg(staging.path().join("user-data"))
        .arg(staging.path().join("meta-data"))
        .arg(staging.path().join("network-config"));
    if let Some(v) = &content.vendor_data {
        tokio::fs::write(staging.path().join("vendor-data"), v).await?;
        cmd.arg(staging.path().join("vendor-data"));
    }
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(SeedError::Tool(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    tokio::fs::rename(&tmp_iso, seed).await?;
    tokio::fs::write(&digest_path, format!("{digest}\n")).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain_xml::NicAttachment;
    use ironvisor_crds::vm::NicModel;

    fn nic(mac: &str) -> NicPlan {
        NicPlan {
            name: "n".into(),
            model: NicModel::Virtio,
            mac: mac.into(),
            attachment: NicAttachment::User(vec![]),
        }
    }

    #[test]
    fn only_a_clone_seed_carries_vendor_data_and_a_plain_seed_keeps_its_digest() {
        let plain = SeedContent::new("u", "h", None, None, &[]);
        assert_eq!(plain.vendor_data, None);
        let clone = plain.clone().for_clone(true);
        assert_eq!(plain.clone().for_clone(false), plain);
        assert_ne!(plain.digest(), clone.digest());
        let v = clone.vendor_data.unwrap();
        assert!(v.starts_with("#cloud-config\n"), "{v}");
        assert!(v.contains("cloud-init-per, instance") && v.contains("systemd-machine-id-setup"));
    }

    #[test]
    fn meta_data_carries_the_uid_as_instance_id_and_the_hostname() {
        let c = SeedContent::new("uid-1", "web", None, None, &[]);
        let v: serde_json::Value = serde_json::from_str(&c.meta_data).unwrap();
        assert_eq!(v["instance-id"], "uid-1");
        assert_eq!(v["local-hostname"], "web");
    }

    #[test]
    fn hostile_values_cannot_break_meta_data() {
        let c = SeedContent::new("u\"\nx: y", "h", None, None, &[]);
        let v: serde_json::Value = serde_json::from_str(&c.meta_data).unwrap();
        assert_eq!(v["instance-id"], "u\"\nx: y");
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn without_network_data_every_interface_gets_dhcp_by_mac() {
        let c = SeedContent::new(
            "u",
            "h",
            None,
            None,
            &[nic("52:54:00:00:00:01"), nic("52:54:00:00:00:02")],
        );
        let v: serde_json::Value = serde_json::from_str(&c.network_config).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(
            v["ethernets"]["eth1"]["match"]["macaddress"],
            "52:54:00:00:00:02"
        );
        assert_eq!(v["ethernets"]["eth0"]["dhcp4"], true);
    }

    #[test]
    fn user_and_network_data_are_passed_through() {
        let c = SeedContent::new(
            "u",
            "h",
            Some("#!/bin/sh\necho hi\n"),
            Some("version: 1\n"),
            &[],
        );
        assert_eq!(c.user_data, "#!/bin/sh\necho hi\n");
        assert_eq!(c.network_config, "version: 1\n");
    }

    #[test]
    fn the_digest_changes_with_any_file() {
        let a = SeedContent::new("u", "h", Some("a"), None, &[]);
        let b = SeedContent::new("u", "h", Some("b"), None, &[]);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
    }

    #[tokio::test]
    async fn the_seed_image_is_an_iso_labelled_cidata_and_is_written_once_per_content() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.iso");
        let c = SeedContent::new(
            "uid-9",
            "web",
            Some("#cloud-config\nruncmd: [echo, marker]\n"),
            None,
            &[],
        );
        assert!(write_seed(&seed, &c).await.unwrap());
        let bytes = std::fs::read(&seed).unwrap();
        // The primary volume descriptor sits at sector 16: type 1, "CD001", label at +40.
        let pvd = &bytes[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(std::str::from_utf8(&pvd[40..46]).unwrap(), VOLUME_LABEL);
        let user_data = "runcmd: [echo, marker]";
        assert!(
            bytes
                .windows(user_data.len())
                .any(|w| w == user_data.as_bytes())
        );
        assert!(
            !write_seed(&seed, &c).await.unwrap(),
            "same content is not rewritten"
        );
        let c2 = SeedContent::new("uid-9", "web", Some("other"), None, &[]);
        assert!(write_seed(&seed, &c2).await.unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".seed-"))
            .collect();
        assert!(leftovers.is_empty(), "no staging directory is left behind");
    }
}
