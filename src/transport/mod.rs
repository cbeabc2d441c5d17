//! Native fast paths for asyncio's transports on interloop's loop.
//!
//! interloop keeps asyncio's own transport classes (subclassed in
//! `python/interloop/_transports.py`) for every decision a transport makes: flow
//! control, closing, EOF, errors, sendfile, TLS. What moves to Rust is the per-event
//! path, which in asyncio costs two or three Python frames per read and per write.
//! Each transport gets per-instance replacements for its hot methods:
//!
//! | transport                    | reader callback     | write method        |
//! |------------------------------|---------------------|---------------------|
//! | stream socket (TCP, Unix)    | [`SocketReader`]    | [`SocketWriter`]    |
//! | datagram socket (UDP)        | [`DatagramReader`]  | [`DatagramSender`]  |
//! | read pipe                    | [`PipeReader`]      |                     |
//! | write pipe                   |                     | [`PipeWriter`], and [`PipeFlusher`] while data is buffered |
//!
//! The shape is the same everywhere:
//!
//! 1. A reader does one system call into a buffer shared by all transports of the
//!    process (`read_bytes`), copies the bytes out, and calls the protocol
//!    (`data_received` / `datagram_received`). EOF and unusual states call the
//!    transport's Python methods, so their behaviour is asyncio's.
//! 2. A writer checks asyncio's preconditions for a direct send (a bytes-like
//!    argument, nothing buffered, connection not lost, not closing) and makes the
//!    system call itself. Whatever it cannot finish (would-block, a partial write, an
//!    argument or address it does not handle) goes to asyncio's own method, which
//!    buffers, registers the writer, pauses the protocol, or raises asyncio's
//!    exception, unchanged.
//! 3. A reader that reads until the descriptor is known drained says so through the
//!    loop's reader hook (`classify_reader` below, `event_loop/reader.rs`), and the
//!    reactor then skips the re-arm it otherwise makes after each event (see
//!    `event_loop/reactor.rs`); such a reader re-arms itself (`rearm`) when it may
//!    have left data unread.
//! 4. When the transport's connection is lost the Python side removes the native
//!    objects again (they hold the transport: a cycle, and asyncio's methods handle
//!    a closed transport).
mod common;
mod datagram;
mod pipe;
mod sockaddr;
mod stream;

pub(crate) use datagram::{DatagramReader, DatagramSender};
pub(crate) use pipe::{PipeFlusher, PipeReader, PipeWriter};
pub(crate) use stream::{SocketReader, SocketWriter};

use crate::event_loop::reader::{self, NativeReader};
use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SocketReader>()?;
    m.add_class::<SocketWriter>()?;
    m.add_class::<DatagramReader>()?;
    m.add_class::<DatagramSender>()?;
    m.add_class::<PipeReader>()?;
    m.add_class::<PipeWriter>()?;
    m.add_class::<PipeFlusher>()?;
    reader::install(classify_reader);
    Ok(())
}

/// The loop's reader hook (`event_loop::reader`): which reader callbacks drain their
/// descriptor themselves (see 3. above: stream sockets, and pipe readers on pipes and
/// stream sockets, not on terminals), and which one the loop calls directly.
///
/// The direct call is kept because it pays: `benches/tcp_echo_callgrind.py` (a
/// 64-byte TCP echo round trip on interloop's loop, two socket reads) counts about
/// 400 instructions more per round trip when the loop calls the `SocketReader`
/// object instead (`tp_call` and PyO3's wrapper, twice), about 9000 against 8600.
/// Going through this hook rather than naming `SocketReader` in the loop costs about
/// 10 per round trip (the handle's `OnceLock` and an indirect call), within noise.
fn classify_reader(callback: &Bound<'_, PyAny>) -> Option<NativeReader> {
    if callback.is_exact_instance_of::<SocketReader>() {
        return Some(NativeReader {
            drains_itself: true,
            direct: Some(SocketReader::run_direct),
        });
    }
    callback.cast::<PipeReader>().ok().map(|r| NativeReader {
        drains_itself: r.get().drains,
        direct: None,
    })
}
