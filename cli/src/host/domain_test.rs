//! The domain test and the capability probe: real libvirt calls through `virsh`, timed.
//!
//! The test domain is tiny and diskless (32 MiB, one vCPU, no devices of its own: its BIOS
//! finds nothing to boot and idles), named `ironvisor-hostcheck-<random>`, and removed again
//! whatever happened, so a host check leaves nothing behind.

use std::io::Write as _;

use super::facts::{DomainRun, ProbeFacts, Step, VirtType};
use super::virsh::{self, VirshError};

/// Prefix of every test domain's name.
pub const NAME_PREFIX: &str = "ironvisor-hostcheck-";

/// A fresh test domain name: the prefix and 8 random hex digits.
pub fn unique_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{NAME_PREFIX}{}", &id[..8])
}

/// The test domain's XML for this machine's architecture.
pub fn domain_xml(name: &str, virt_type: VirtType, arch: &str) -> String {
    let machine = if arch == "aarch64" {
        " machine='virt'"
    } else {
        ""
    };
    format!(
        "<domain type='{ty}'>\n  <name>{name}</name>\n  <memory unit='MiB'>32</memory>\n  \
         <vcpu>1</vcpu>\n  <os>\n    <type arch='{arch}'{machine}>hvm</type>\n  </os>\n  \
         <devices>\n    <memballoon model='none'/>\n  </devices>\n</domain>\n",
        ty = virt_type.as_str()
    )
}

/// One `virsh` step: its time, or libvirt's message.
async fn step(uri: &str, args: &[&str]) -> Step {
    virsh::run(uri, args)
        .await
        .map(|a| a.elapsed)
        .map_err(|e| e.to_string())
}

/// Define the test domain from a temporary file; libvirt's message on failure.
async fn define(uri: &str, name: &str, virt_type: VirtType) -> Step {
    let xml = domain_xml(name, virt_type, std::env::consts::ARCH);
    let mut file = tempfile::Builder::new()
        .prefix(name)
        .suffix(".xml")
        .tempfile()
        .map_err(|e| format!("cannot write the domain XML: {e}"))?;
    file.write_all(xml.as_bytes())
        .map_err(|e| format!("cannot write the domain XML: {e}"))?;
    let path = file.path().to_string_lossy().into_owned();
    step(uri, &["define", &path]).await
}

/// Define, start, destroy, then remove the domain `name` (see [`cleanup`]).
pub async fn run(uri: &str, name: &str, virt_type: VirtType) -> DomainRun {
    let define = define(uri, name, virt_type).await;
    let mut start = None;
    let mut destroy = None;
    if define.is_ok() {
        let started = step(uri, &["start", name]).await;
        if started.is_ok() {
            destroy = Some(step(uri, &["destroy", name]).await);
        }
        start = Some(started);
    }
    DomainRun {
        name: name.to_owned(),
        virt_type,
        define,
        start,
        destroy,
        cleanup: cleanup(uri, name).await,
    }
}

/// libvirt says there is no such domain.
fn is_gone(e: &VirshError) -> bool {
    matches!(e, VirshError::Failed(m) if m.contains("failed to get domain")
        || m.contains("Domain not found"))
}

/// Stop and undefine `name` whatever state it is in, then make sure it is gone. Run after
/// every attempt, a failed define included (a define cut off by the timeout may still land).
pub async fn cleanup(uri: &str, name: &str) -> Result<(), String> {
    // Either may fail because the domain is not running or does not exist: that is fine.
    let _ = virsh::run(uri, &["destroy", name]).await;
    let undefine = virsh::run(uri, &["undefine", name]).await;
    match virsh::run(uri, &["domstate", name]).await {
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(format!("cannot tell whether it is gone: {e}")),
        Ok(state) => Err(format!(
            "still defined ({}) after undefine: {}",
            state.stdout.trim(),
            undefine
                .err()
                .map_or_else(|| "no error".to_owned(), |e| e.to_string())
        )),
    }
}

/// Two timed calls of `virsh <command>`.
async fn probe_with(uri: &str, command: &str) -> Result<ProbeFacts, VirshError> {
    let first = virsh::run(uri, &[command]).await?.elapsed;
    let second = virsh::run(uri, &[command]).await?.elapsed;
    Ok(ProbeFacts::Timed {
        command: command.to_owned(),
        first,
        second,
    })
}

/// Time the capability probe twice: `domcapabilities`, else `capabilities` (a driver without
/// a default emulator cannot answer the former).
pub async fn probe(uri: &str) -> ProbeFacts {
    match probe_with(uri, "domcapabilities").await {
        Ok(p) => p,
        Err(first) => probe_with(uri, "capabilities")
            .await
            .unwrap_or_else(|_| ProbeFacts::Failed(first.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_the_prefix() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert!(a.starts_with(NAME_PREFIX));
        assert_eq!(a.len(), NAME_PREFIX.len() + 8);
    }

    #[test]
    fn the_domain_is_tiny_diskless_and_of_the_type_asked() {
        let xml = domain_xml("ironvisor-hostcheck-0", VirtType::Kvm, "x86_64");
        assert!(xml.starts_with("<domain type='kvm'>"));
        assert!(xml.contains("<memory unit='MiB'>32</memory>"));
        assert!(xml.contains("<type arch='x86_64'>hvm</type>"));
        assert!(!xml.contains("<disk"));
        let arm = domain_xml("n", VirtType::Qemu, "aarch64");
        assert!(arm.contains("<type arch='aarch64' machine='virt'>hvm</type>"));
    }
}
