//! A VM with a vTPM, as a Windows 11 VM on vSphere 8 has one (EFI, secure boot,
//! `vtpm.present`): the import carries it over as `spec.tpm`, says so, and warns that what
//! was sealed to it stays behind; with `--no-tpm` it is listed as dropped with the reason.

use std::path::Path;

use crate::fixtures::*;
use crate::schema::validated;
use ironvisor_crds::vm::{Firmware, TpmVersion};
use ivctl::import::advisor::Severity;

fn win11_vmx(dir: &Path) -> std::path::PathBuf {
    let raw = raw_disk(dir, "c.raw", 1, 7);
    vmdk_from_raw(
        &raw,
        &dir.join("win11.vmdk"),
        "monolithicSparse",
        "lsilogic",
    );
    let vmx = r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "20"
displayName = "win11"
guestOS = "windows11-64"
firmware = "efi"
uefi.secureBoot.enabled = "TRUE"
vtpm.present = "TRUE"
numvcpus = "2"
memsize = "4096"
nvme0.present = "TRUE"
nvme0:0.present = "TRUE"
nvme0:0.fileName = "win11.vmdk"
"#;
    std::fs::write(dir.join("win11.vmx"), vmx).unwrap();
    dir.join("win11.vmx")
}

#[test]
fn a_vtpm_is_carried_over_as_spec_tpm_with_a_warning_that_its_secrets_stay_behind() {
    let dir = tempfile::tempdir().unwrap();
    let vmx = win11_vmx(dir.path());
    let out = dir.path().join("out");
    let report = import(&request(&vmx, &out)).unwrap();
    let vm = validated(&out.join("win11/win11.yaml"));
    assert_eq!(vm.spec.tpm.map(|t| t.version), Some(TpmVersion::V2_0));
    assert_eq!(vm.spec.firmware, Some(Firmware::Uefi));
    assert!(
        report
            .mappings
            .iter()
            .any(|m| m == "vtpm: virtual TPM → spec.tpm (TPM 2.0, new and empty; swtpm)"),
        "{:?}",
        report.mappings
    );
    let f = report
        .findings
        .iter()
        .find(|f| f.id == "vtpm")
        .expect("the vtpm warning");
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.title.contains("carried over"), "{}", f.title);
    assert!(f.remedy.contains("BitLocker"), "{}", f.remedy);
    assert!(f.manual_step);
    assert!(!report.findings.iter().any(|f| f.id == "vtpm-dropped"));
}

#[test]
fn with_no_tpm_the_vtpm_is_listed_as_dropped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let vmx = win11_vmx(dir.path());
    let out = dir.path().join("out");
    let mut req = request(&vmx, &out);
    req.mapping.no_tpm = Some("--no-tpm".into());
    let report = import(&req).unwrap();
    let vm = validated(&out.join("win11/win11.yaml"));
    assert_eq!(vm.spec.tpm, None);
    assert!(
        report
            .mappings
            .iter()
            .any(|m| m == "vtpm: virtual TPM → dropped (--no-tpm)"),
        "{:?}",
        report.mappings
    );
    let f = report
        .findings
        .iter()
        .find(|f| f.id == "vtpm-dropped")
        .expect("the dropped warning");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.detail, "vtpm (--no-tpm)");
    assert!(!report.findings.iter().any(|f| f.id == "vtpm"));
}
