//! A source vTPM (VMX `vtpm.present`, an OVF item of subtype `vmware.vtpm`) becomes
//! `spec.tpm`: a new, empty TPM 2.0 that swtpm emulates on the host. The vTPM's contents are
//! never in an export (vSphere encrypts them with the VM's key), so what was sealed to it
//! stays behind; the advisor says so (`vtpm` rule). Only when told (`--no-tpm`) is the TPM
//! left out, and then it is listed as dropped with the reason. Pure.

use ironvisor_crds::hypervisor::Hypervisor;
use ironvisor_crds::vm::Tpm;

use super::model::{DeviceKind, SourceVm};

/// What happens to the source's vTPM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmMapping {
    /// `spec.tpm` of the manifest.
    pub spec: Option<Tpm>,
    /// Labels of the source's vTPM devices (empty: the source has none).
    pub sources: Vec<String>,
    /// Why they are not carried over, when they are not.
    pub dropped: Option<String>,
}

impl TpmMapping {
    /// The mapping note for the report, when the source has a vTPM.
    pub fn note(&self) -> Option<String> {
        let first = self.sources.first()?;
        Some(match &self.dropped {
            None => format!("{first}: virtual TPM → spec.tpm (TPM 2.0, new and empty; swtpm)"),
            Some(why) => format!("{first}: virtual TPM → dropped ({why})"),
        })
    }

    /// The vTPMs carried over (advisor fact `vtpm_carried`).
    pub fn carried(&self) -> Vec<String> {
        if self.dropped.is_none() {
            self.sources.clone()
        } else {
            Vec::new()
        }
    }

    /// The vTPMs dropped, each with the reason (advisor fact `vtpm_dropped`).
    pub fn dropped_items(&self) -> Vec<String> {
        match &self.dropped {
            Some(why) => self
                .sources
                .iter()
                .map(|s| format!("{s} ({why})"))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Decide. `no_tpm` is the reason to leave the TPM out (`--no-tpm`), `None` to carry it.
pub fn map(src: &SourceVm, no_tpm: Option<&str>) -> TpmMapping {
    let sources: Vec<String> = src
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Vtpm)
        .map(|d| d.label.clone())
        .collect();
    let dropped = (!sources.is_empty())
        .then(|| no_tpm.map(str::to_owned))
        .flatten();
    TpmMapping {
        spec: (!sources.is_empty() && dropped.is_none()).then(Tpm::default),
        sources,
        dropped,
    }
}

/// Why a vTPM cannot be carried to these hosts: some are known and none reports a TPM
/// emulator (`status.tpm`). No hosts known (offline, cluster unreachable): `None`, carry.
pub fn cluster_reason(hosts: &[Hypervisor]) -> Option<String> {
    let with_tpm = hosts
        .iter()
        .filter(|h| h.status.as_ref().and_then(|s| s.tpm) == Some(true))
        .count();
    (!hosts.is_empty() && with_tpm == 0).then(|| {
        format!(
            "none of the {} target hosts reports a TPM emulator (Hypervisor status.tpm); \
             install swtpm and swtpm-tools there, then import again",
            hosts.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::model::OtherDevice;

    fn vm(devices: &[(DeviceKind, &str)]) -> SourceVm {
        SourceVm {
            devices: devices
                .iter()
                .map(|(kind, label)| OtherDevice {
                    kind: *kind,
                    label: (*label).into(),
                })
                .collect(),
            ..SourceVm::default()
        }
    }

    #[test]
    fn a_vtpm_is_carried_over_as_a_new_tpm_2_0() {
        let m = map(&vm(&[(DeviceKind::Vtpm, "vtpm")]), None);
        assert_eq!(m.spec, Some(Tpm::default()));
        assert_eq!(m.carried(), vec!["vtpm".to_owned()]);
        assert!(m.dropped_items().is_empty());
        let note = m.note().unwrap();
        assert!(note.contains("spec.tpm"), "{note}");
    }

    #[test]
    fn with_no_tpm_the_vtpm_is_dropped_and_listed_with_the_reason() {
        let m = map(&vm(&[(DeviceKind::Vtpm, "Virtual TPM")]), Some("--no-tpm"));
        assert_eq!(m.spec, None);
        assert!(m.carried().is_empty());
        assert_eq!(m.dropped_items(), vec!["Virtual TPM (--no-tpm)".to_owned()]);
        assert_eq!(
            m.note().unwrap(),
            "Virtual TPM: virtual TPM → dropped (--no-tpm)"
        );
    }

    #[test]
    fn only_a_cluster_whose_known_hosts_all_lack_swtpm_drops_the_tpm() {
        let host = |tpm: Option<bool>| {
            let mut h = Hypervisor::new("h", Default::default());
            h.status = Some(ironvisor_crds::hypervisor::HypervisorStatus {
                tpm,
                ..Default::default()
            });
            h
        };
        assert_eq!(cluster_reason(&[]), None, "hosts unknown: carry");
        assert_eq!(cluster_reason(&[host(Some(false)), host(Some(true))]), None);
        let why = cluster_reason(&[host(Some(false)), host(None)]).unwrap();
        assert!(why.starts_with("none of the 2 target hosts"), "{why}");
        let m = map(&vm(&[(DeviceKind::Vtpm, "vtpm")]), Some(&why));
        assert_eq!(m.spec, None);
        assert!(m.note().unwrap().contains("none of the 2 target hosts"));
    }

    #[test]
    fn a_vm_without_a_vtpm_gets_no_tpm_and_no_note_whatever_the_flag() {
        for flag in [None, Some("--no-tpm")] {
            let m = map(&vm(&[(DeviceKind::Sound, "sound")]), flag);
            assert_eq!(m.spec, None);
            assert_eq!(m.note(), None);
            assert!(m.carried().is_empty() && m.dropped_items().is_empty());
        }
    }
}
