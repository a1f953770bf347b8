//! What a console connection is bridged to: the VM's serial console or its VNC display
//! (a socket libvirt connects to QEMU's display and hands over), after checking that the VM
//! with the requested uid runs on this host under this agent.
//!
//! The check reads libvirt, not the API: the domain's own metadata (written by this agent
//! when it defined the domain) must name the uid, namespace, name and this node.

use super::request::{Kind, Target};
use crate::domain_xml::name::domain_name;
use crate::hypervisor::graphics::{self, DisplayError};
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::{HvError, Hypervisor as _};
use crate::lifecycle::VmState;
use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bridged byte stream (the serial pipe or the display's socket).
pub trait Session: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Session for T {}

/// Why a console cannot be opened; each answers the request with a status and a text body.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No running VM with that namespace, name and uid on this host.
    #[error("no running VM {0} with that uid on this host")]
    NotHere(String),
    /// The running guest has no graphical display (`spec.graphics: none`, or it was started
    /// before its VM had one).
    #[error(
        "VM {0} runs without a graphical display (spec.graphics: none, or started before it \
         had one: restart it); use its serial console"
    )]
    NoDisplay(String),
    /// This host's libvirt cannot hand out a display connection (libvirt's test driver).
    #[error("the display of VM {0} cannot be reached on this host: {1}")]
    DisplayUnsupported(String, String),
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
            OpenError::NoDisplay(_) | OpenError::DisplayUnsupported(..) | OpenError::Busy(_) => 409,
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

/// The real backend: libvirt for both, the serial console's stream and the display's
/// descriptor.
pub struct LibvirtBackend {
    /// The agent's libvirt client (for the ownership check).
    pub libvirt: Libvirt,
    /// The libvirt URI (each console opens a connection of its own).
    pub uri: String,
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
            Kind::Vnc => open_display(self.uri.clone(), domain, vm).await,
        }
    }
}

/// The display's socket from libvirt, as an async stream.
async fn open_display(
    uri: String,
    domain: String,
    vm: String,
) -> Result<Box<dyn Session>, OpenError> {
    let opened = tokio::task::spawn_blocking(move || graphics::open_vnc(&uri, &domain))
        .await
        .map_err(|e| OpenError::Unavailable(vm.clone(), HvError::Join(e)))?;
    let fd = match opened {
        Ok(fd) => fd,
        Err(DisplayError::NotFound(_)) => return Err(OpenError::NotHere(vm)),
        Err(DisplayError::NoDisplay(_)) => return Err(OpenError::NoDisplay(vm)),
        Err(DisplayError::Unsupported(message)) => {
            return Err(OpenError::DisplayUnsupported(vm, message));
        }
        Err(DisplayError::Libvirt(e)) => return Err(OpenError::Unavailable(vm, e)),
    };
    let stream = std::os::unix::net::UnixStream::from(fd);
    let stream = stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(stream))
        .map_err(|e| {
            OpenError::Unavailable(
                vm.clone(),
                HvError::Libvirt {
                    op: "open display",
                    message: e.to_string(),
                    connection: false,
                },
            )
        })?;
    Ok(Box::new(stream))
}
