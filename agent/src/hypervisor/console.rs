//! A running domain's serial console as libvirt streams it (`virDomainOpenConsole`), on a
//! connection of its own so a console left open never holds up the reconciler's calls.
//!
//! The stream is non-blocking and event driven, as `virsh console` drives it: libvirt's event
//! loop reads the connection's socket and calls [`on_stream_event`] when the guest's output
//! is buffered; that callback only wakes the reading thread and stops asking for more until
//! the thread has drained what is there ([`SerialConsole::recv`]). No thread ever blocks
//! inside libvirt on the stream, so a keystroke sent while nothing arrives is never held up
//! behind a blocked read (a blocking read in one thread and a send in another stalled the
//! send for 5 s, until the connection's keepalive, about once in a few hundred keystrokes).
//!
//! Opening never takes over a console another client holds (no FORCE flag): the second
//! client is told the console is busy.
#![allow(unsafe_code)]

use super::HvError;
use super::libvirt::{close_quietly, lv};
use std::ffi::{c_int, c_void};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use virt::connect::Connect;
use virt::stream::Stream;
use virt::sys;

/// libvirt's "no data now, try again" from a non-blocking stream call.
const WOULD_BLOCK: c_int = -2;
/// The events the reading side waits for.
const WANTED: sys::virStreamEventType =
    sys::VIR_STREAM_EVENT_READABLE | sys::VIR_STREAM_EVENT_ERROR | sys::VIR_STREAM_EVENT_HANGUP;
/// How long a send waits before trying again when the stream takes no bytes now.
const SEND_RETRY: Duration = Duration::from_millis(2);
/// How many times a send tries again before giving up on a stream that takes nothing.
const SEND_TRIES: u32 = 5_000;

/// An open serial console. Dropping it closes the stream and the connection.
pub struct SerialConsole {
    stream: Option<Stream>,
    conn: Option<Connect>,
    /// Wake-ups from libvirt's event loop (and from [`Aborter`]); one pending at most.
    wake: Mutex<Receiver<()>>,
    waker: SyncSender<()>,
    callback: bool,
}

/// Aborts a console's stream from another thread, which ends the reading thread's wait.
pub struct Aborter {
    stream: Stream,
    waker: SyncSender<()>,
}

impl Aborter {
    /// Abort the stream (a second abort, or one after the end, is harmless).
    pub fn abort(self) {
        let _ = self.stream.abort();
        wake(&self.waker);
    }
}

/// Wake the reading thread; a wake-up already pending is enough (a full or closed channel
/// needs nothing more).
fn wake(waker: &SyncSender<()>) {
    let _ = waker.try_send(());
}

/// libvirt's event loop thread: the stream has data, an end or an error. Only wakes the
/// reader and stops the readable event (libvirt fires it for as long as data is buffered)
/// until the reader has drained the stream and asks again.
unsafe extern "C" fn on_stream_event(
    stream: sys::virStreamPtr,
    _events: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: `opaque` is the `Box<SyncSender<()>>` leaked in `SerialConsole::open`; libvirt
    // keeps it until it calls `free_waker`, after the last callback returned.
    let waker = unsafe { &*(opaque as *const SyncSender<()>) };
    // SAFETY: `stream` is valid during the callback; updating its own callback from inside
    // it is what `virsh console` does.
    unsafe { sys::virStreamEventUpdateCallback(stream, 0) };
    wake(waker);
}

unsafe extern "C" fn free_waker(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Box::into_raw` in `SerialConsole::open`; libvirt calls this
    // once, when the callback is removed.
    drop(unsafe { Box::from_raw(opaque as *mut SyncSender<()>) });
}

impl SerialConsole {
    /// Open the serial console of the running domain `domain` through libvirt at `uri`.
    pub fn open(uri: &str, domain: &str) -> Result<Self, HvError> {
        // Stream events come from libvirt's event loop, which must exist before the
        // connection opens.
        super::events::ensure_event_loop().map_err(|message| HvError::Libvirt {
            op: "console event loop",
            message,
            connection: false,
        })?;
        let conn = Connect::open(Some(uri)).map_err(|e| HvError::Connect {
            uri: uri.to_owned(),
            message: e.message().to_owned(),
        })?;
        let (waker, wake) = sync_channel(1);
        let mut console = SerialConsole {
            stream: None,
            conn: Some(conn),
            wake: Mutex::new(wake),
            waker,
            callback: false,
        };
        let conn = console.conn.as_ref().expect("just set");
        let dom = conn
            .lookup_domain_by_name(domain)
            .map_err(|_| HvError::NotFound(domain.to_owned()))?;
        let stream =
            Stream::new(conn, sys::VIR_STREAM_NONBLOCK).map_err(|e| lv("open console", e))?;
        dom.open_console(None, &stream, 0)
            .map_err(|e| lv("open console", e))?;
        let opaque = Box::into_raw(Box::new(console.waker.clone()));
        // SAFETY: the stream is valid; `opaque` stays alive until libvirt calls `free_waker`.
        let rc = unsafe {
            sys::virStreamEventAddCallback(
                stream.as_ptr(),
                WANTED as c_int,
                Some(on_stream_event),
                opaque.cast(),
                Some(free_waker),
            )
        };
        console.stream = Some(stream);
        if rc < 0 {
            // SAFETY: libvirt did not take `opaque`; it is ours to free.
            drop(unsafe { Box::from_raw(opaque) });
            return Err(lv("console events", virt::error::Error::last_error()));
        }
        console.callback = true;
        Ok(console)
    }

    fn stream(&self) -> &Stream {
        self.stream.as_ref().expect("set while open")
    }

    /// Wait for and read what the guest wrote; 0 at the end of the stream (the guest
    /// stopped). One thread reads at a time.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, HvError> {
        let wake = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // SAFETY: the stream is valid while `self` lives; `buf` is writable for its length.
            let n = unsafe {
                sys::virStreamRecv(self.stream().as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            match n {
                WOULD_BLOCK => {}
                n if n < 0 => return Err(lv("console read", virt::error::Error::last_error())),
                n => return Ok(usize::try_from(n).unwrap_or(0)),
            }
            // Drained: ask libvirt for the next data, then wait for it. Data that came
            // between the read and this makes the event fire at once.
            // SAFETY: the stream is valid; its callback was added in `open`.
            let rc = unsafe {
                sys::virStreamEventUpdateCallback(self.stream().as_ptr(), WANTED as c_int)
            };
            if rc < 0 {
                return Err(lv("console events", virt::error::Error::last_error()));
            }
            if wake.recv().is_err() {
                return Ok(0);
            }
        }
    }

    /// Write all of `data` to the guest's serial port.
    pub fn send(&self, mut data: &[u8]) -> Result<(), HvError> {
        let mut tries = 0;
        while !data.is_empty() {
            // SAFETY: the stream is valid while `self` lives; `data` is readable for its length.
            let n = unsafe {
                sys::virStreamSend(
                    self.stream().as_ptr(),
                    data.as_ptr().cast_mut().cast(),
                    data.len(),
                )
            };
            match n {
                WOULD_BLOCK if tries < SEND_TRIES => {
                    tries += 1;
                    std::thread::sleep(SEND_RETRY);
                }
                n if n <= 0 => {
                    let message = if n == 0 || n == WOULD_BLOCK {
                        "the stream takes no bytes".to_owned()
                    } else {
                        virt::error::Error::last_error().message().to_owned()
                    };
                    return Err(HvError::Libvirt {
                        op: "console write",
                        message,
                        connection: false,
                    });
                }
                n => {
                    tries = 0;
                    let n = usize::try_from(n).unwrap_or(0).min(data.len());
                    data = &data[n..];
                }
            }
        }
        Ok(())
    }

    /// A handle that aborts this console's stream from another thread.
    pub fn aborter(&self) -> Aborter {
        Aborter {
            stream: self.stream().clone(),
            waker: self.waker.clone(),
        }
    }
}

impl Drop for SerialConsole {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            if self.callback {
                // SAFETY: the stream is valid; removing the callback makes libvirt free the
                // waker it holds.
                unsafe { sys::virStreamEventRemoveCallback(stream.as_ptr()) };
            }
            let _ = stream.abort();
        }
        if let Some(conn) = self.conn.take() {
            close_quietly(conn);
        }
    }
}
