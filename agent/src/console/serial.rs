//! The serial console as an async byte stream: libvirt's console stream (non-blocking, woken
//! by libvirt's event loop, see [`crate::hypervisor::console`]) is pumped by two threads of
//! its own into one end of an in-memory pipe, the bridge holds the other.
//!
//! Either side ending ends both: the client going away (the pipe's read side ends) aborts
//! the libvirt stream, which wakes the reading thread; the guest stopping (the stream ends)
//! closes the pipe, which ends the bridge.

use crate::hypervisor::HvError;
use crate::hypervisor::console::SerialConsole;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

/// Bytes buffered in the pipe each way.
const PIPE_BYTES: usize = 64 * 1024;

/// Open the serial console of `domain` and return the bridge's end of the pipe.
pub async fn open(uri: String, domain: String) -> Result<DuplexStream, HvError> {
    let console = tokio::task::spawn_blocking(move || SerialConsole::open(&uri, &domain)).await??;
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (mut from_client, mut to_client) = tokio::io::split(ours);
    let handle = tokio::runtime::Handle::current();
    let aborter = console.aborter();
    let console = std::sync::Arc::new(console);
    let reader = console.clone();
    let h = handle.clone();
    std::thread::Builder::new()
        .name("console-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match reader.recv(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if h.block_on(to_client.write_all(&buf[..n])).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = h.block_on(to_client.shutdown());
        })
        .map_err(thread_error)?;
    std::thread::Builder::new()
        .name("console-write".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match handle.block_on(from_client.read(&mut buf)) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if console.send(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // Wakes the reading thread; the console closes when both threads let go.
            aborter.abort();
        })
        .map_err(thread_error)?;
    Ok(theirs)
}

fn thread_error(e: std::io::Error) -> HvError {
    HvError::Libvirt {
        op: "console thread",
        message: e.to_string(),
        connection: false,
    }
}
