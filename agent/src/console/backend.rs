//! What a console connection is bridged to: the VM's serial console or its VNC socket,
//! after checking that the VM with the requested uid runs on this host under this agent.
//!
//! The check reads libvirt, not the API: the domain's own metadata (written by this agent
//! when it defined the domain) must name the uid, namespace, name and this node.

use super::request::{Kind, Target};
use crate::domain_xml::name::domain_name;
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::{HvError, Hypervisor as _};
use crate::lifecycle::VmState;
use crate::storage::layout;
use async_trait::async_trait;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bridged byte stream (the serial pipe or the VNC socket).
pub trait Session: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Session for T {}

/// Why a console cannot be opened; each answers the request with a status and a text body.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No running VM with that namespace, name and uid on this host.
    #[error("no running VM {0} with that uid on this host")]
    NotHere(String),
    /// The VM has no graphical display (`spec.graphics: none`, or QEMU has not bound it).
    #[error("VM {0} has no graphical display (spec.graphics: none?)")]
    NoDisplay(String),
    /// Another client holds the serial console.
    #[error("the serial console of VM {0} is in use by another connection")]
    Busy(String),
    /// libvirt failed; the client may retry.
    #[error("the console of VM {0} cannot be opened now; retry")]
    Unavailable(String, #[source] HvError),
}

impl OpenError {
    /// The HTTP status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            OpenError::NotHere(_) => 404,
            OpenError::NoDisplay(_) | OpenError::Busy(_) => 409,
            OpenError::Unavailable(..) => 503,
        }
    }
}

/// Opens consoles.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Open the console `t` names.
    async fn open(&self, t: &Target) -> Result<Box<dyn Session>, OpenError>;
}

/// The real backend: libvirt for the serial console, the VM directory's socket for VNC.
pub struct LibvirtBackend {
    /// The agent's libvirt client (for the ownership check).
    pub libvirt: Libvirt,
    /// The libvirt URI (the serial console opens a connection of its own).
    pub uri: String,
    /// `--state-dir`.
    pub state_dir: PathBuf,
    /// This host's name, which the domain's metadata must carry.
    pub node: String,
}

#[async_trait]
impl Backend for LibvirtBackend {
    async fn open(&self, t: &Target) -> Result<Box<dyn Session>, OpenError> {
        let vm = format!("{}/{}", t.namespace, t.name);
        let domain = domain_name(&t.namespace, &t.name);
        let observed = self
            .libvirt
            .observe(&domain)
            .await
            .map_err(|e| OpenError::Unavailable(vm.clone(), e))?;
        let ours = observed.as_ref().is_some_and(|o| {
            matches!(o.state, VmState::Running | VmState::Paused)
                && o.live.as_ref().is_some_and(|m| {
                    m.uid == t.uid
                        && m.namespace == t.namespace
                        && m.name == t.name
                        && m.node.as_deref().is_none_or(|n| n == self.node)
                })
        });
        if !ours {
            return Err(OpenError::NotHere(vm));
        }
        match t.kind {
            Kind::Serial => match super::serial::open(self.uri.clone(), domain).await {
                Ok(pipe) => Ok(Box::new(pipe)),
                Err(HvError::Libvirt { message, .. }) if message.contains("console session") => {
                    Err(OpenError::Busy(vm))
                }
                Err(HvError::NotFound(_)) => Err(OpenError::NotHere(vm)),
                Err(e) => Err(OpenError::Unavailable(vm, e)),
            },
            Kind::Vnc => {
                let dir = layout::vm_dir(&self.state_dir, &t.uid)
                    .ok_or_else(|| OpenError::NotHere(vm.clone()))?;
                match tokio::net::UnixStream::connect(layout::vnc_socket(&dir)).await {
                    Ok(s) => Ok(Box::new(s)),
                    Err(_) => Err(OpenError::NoDisplay(vm)),
                }
            }
        }
    }
}
