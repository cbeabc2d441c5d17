//! Native fast paths for asyncio's socket transports on interloop's loop.
//!
//! interloop still uses asyncio's own `_SelectorSocketTransport` (subclassed in
//! `python/interloop/_transports.py`) for every decision a transport makes: flow
//! control, closing, EOF, errors, sendfile, TLS. What moves to Rust is the per-message
//! path, which in asyncio costs two or three Python frames per read and per write:
//!
//! - [`SocketReader`] is registered as the transport's reader callback. When the socket
//!   is readable it `recv`s into a buffer shared by all transports of the process and
//!   hands the bytes to `protocol.data_received`. EOF, errors, a closed transport and
//!   buffered protocols go to the transport's own Python methods, unchanged.
//! - [`SocketWriter`] is the transport's `write`. When nothing is buffered and no
//!   special state is set it `send`s directly; whatever it cannot finish (a partial
//!   send, would-block, anything unusual) goes to asyncio's `write`, which buffers and
//!   registers the writer as usual.
mod stream;

pub use stream::{SocketReader, SocketWriter};

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SocketReader>()?;
    m.add_class::<SocketWriter>()?;
    Ok(())
}
