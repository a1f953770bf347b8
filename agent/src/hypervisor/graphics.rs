//! A running domain's VNC display as libvirt hands it out: `virDomainOpenGraphicsFD` makes a
//! socket pair, gives QEMU one end (QMP `add_client`) and passes the other to us over
//! libvirt's own connection. The display listens nowhere (`<listen type='none'/>`, QEMU's
//! `-vnc none`), so no socket path, directory or owner is ours to manage.
//!
//! Every call blocks; run it in `spawn_blocking`. Each opens a connection of its own and
//! closes it before returning: the descriptor outlives it.
#![allow(unsafe_code)]

use super::HvError;
use super::devices::parse_devices;
use super::libvirt::{close_quietly, lv};
use std::os::fd::{FromRawFd as _, OwnedFd};
use virt::connect::Connect;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::sys;

/// Why the display cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The domain does not exist.
    #[error("domain {0} does not exist")]
    NotFound(String),
    /// The running domain has no VNC display (`spec.graphics: none`, or it was started
    /// before it had one).
    #[error("domain {0} runs without a VNC display")]
    NoDisplay(String),
    /// This libvirt driver cannot hand out display connections (libvirt's test driver).
    #[error("this libvirt driver cannot connect to a display: {0}")]
    Unsupported(String),
    /// libvirt or QEMU refused.
    #[error(transparent)]
    Libvirt(#[from] HvError),
}

/// A connected socket to the VNC display of the running domain `domain` at `uri`; the
/// display speaks RFB on it at once. Authentication is skipped (`SKIPAUTH`): whoever reaches
/// this call was authorised by the console server, and no VNC password exists.
pub fn open_vnc(uri: &str, domain: &str) -> Result<OwnedFd, DisplayError> {
    let conn = Connect::open(Some(uri)).map_err(|e| HvError::Connect {
        uri: uri.to_owned(),
        message: e.message().to_owned(),
    })?;
    let result = open_on(&conn, domain);
    close_quietly(conn);
    result
}

fn open_on(conn: &Connect, domain: &str) -> Result<OwnedFd, DisplayError> {
    let dom = conn
        .lookup_domain_by_name(domain)
        .map_err(|_| DisplayError::NotFound(domain.to_owned()))?;
    // The live definition: a guest started before its VM had a display has none, whatever
    // the persistent definition says now.
    let xml = dom.xml_desc(0).map_err(|e| lv("read domain XML", e))?;
    let devices = parse_devices(&xml).map_err(|e| HvError::Libvirt {
        op: "read domain XML",
        message: e.to_string(),
        connection: false,
    })?;
    let index = devices
        .graphics
        .iter()
        .position(|g| g == "vnc")
        .ok_or_else(|| DisplayError::NoDisplay(domain.to_owned()))?;
    let index = u32::try_from(index).map_err(|_| DisplayError::NoDisplay(domain.to_owned()))?;
    let fd = dom
        .open_graphics_fd(index, sys::VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
        .map_err(|e| {
            if matches!(e.code(), Enum::Known(ErrorNumber::NoSupport)) {
                DisplayError::Unsupported(e.message().to_owned())
            } else {
                DisplayError::Libvirt(lv("open display", e))
            }
        })?;
    let fd = i32::try_from(fd).map_err(|_| HvError::Libvirt {
        op: "open display",
        message: format!("libvirt returned an invalid descriptor {fd}"),
        connection: false,
    })?;
    // SAFETY: libvirt returned a fresh descriptor (received over its connection) that no
    // one else owns or closes; OwnedFd takes that ownership and closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
