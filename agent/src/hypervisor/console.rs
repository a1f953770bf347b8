//! A running domain's serial console as libvirt streams it (`virDomainOpenConsole`), on a
//! connection of its own so a console left open never holds up the reconciler's calls.
//!
//! Every call blocks; [`crate::console::serial`] runs them on threads of their own. Opening
//! never takes over a console another client holds (no FORCE flag): the second client is
//! told the console is busy.

use super::HvError;
use super::libvirt::{close_quietly, lv};
use virt::connect::Connect;
use virt::stream::Stream;

/// An open serial console. Dropping it closes the stream and the connection.
pub struct SerialConsole {
    stream: Option<Stream>,
    conn: Option<Connect>,
}

/// Aborts a console's stream from another thread, which ends a `recv` blocked on it.
pub struct Aborter(Stream);

impl Aborter {
    /// Abort the stream (a second abort, or one after the end, is harmless).
    pub fn abort(self) {
        let _ = self.0.abort();
    }
}

impl SerialConsole {
    /// Open the serial console of the running domain `domain` through libvirt at `uri`.
    pub fn open(uri: &str, domain: &str) -> Result<Self, HvError> {
        let conn = Connect::open(Some(uri)).map_err(|e| HvError::Connect {
            uri: uri.to_owned(),
            message: e.message().to_owned(),
        })?;
        let mut console = SerialConsole {
            stream: None,
            conn: Some(conn),
        };
        let conn = console.conn.as_ref().expect("just set");
        let dom = conn
            .lookup_domain_by_name(domain)
            .map_err(|_| HvError::NotFound(domain.to_owned()))?;
        let stream = Stream::new(conn, 0).map_err(|e| lv("open console", e))?;
        dom.open_console(None, &stream, 0)
            .map_err(|e| lv("open console", e))?;
        console.stream = Some(stream);
        Ok(console)
    }

    fn stream(&self) -> &Stream {
        self.stream.as_ref().expect("set while open")
    }

    /// Read what the guest wrote; 0 at the end of the stream (the guest stopped).
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, HvError> {
        let n = self.stream().recv(buf).map_err(|e| lv("console read", e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Write all of `data` to the guest's serial port.
    pub fn send(&self, mut data: &[u8]) -> Result<(), HvError> {
        while !data.is_empty() {
            let n = self
                .stream()
                .send(data)
                .map_err(|e| lv("console write", e))?;
            let n = usize::try_from(n).unwrap_or(0).min(data.len());
            if n == 0 {
                return Err(HvError::Libvirt {
                    op: "console write",
                    message: "the stream took no bytes".into(),
                    connection: false,
                });
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// A handle that aborts this console's stream from another thread.
    pub fn aborter(&self) -> Aborter {
        Aborter(self.stream().clone())
    }
}

impl Drop for SerialConsole {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.abort();
        }
        if let Some(conn) = self.conn.take() {
            close_quietly(conn);
        }
    }
}
