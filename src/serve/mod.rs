//! `interloop serve`: an HTTP/1.1 server in Rust for ASGI apps run on
//! every core from one process (docs/design-serve.md).
//!
//! Each serving interpreter (a pool worker's own-GIL sub-interpreter, or the main
//! interpreter with `--workers 1`) owns one [`server::Server`]: its listening
//! sockets, its connections and a mio `Poll`. The interpreter's event loop watches
//! the poll's epoll fd with `add_reader` and calls `server_poll` when it is
//! readable; accepting, reading, parsing ([`http`], httparse) and writing all
//! happen inside that call or inside the app's `send`, on the interpreter's own
//! thread (through rustls, [`tls`], with `--ssl-certfile`). No request crosses a thread: what is shared is the [`group`] (stop
//! flag, wakers, counters).
//!
//! One raw-FFI module ([`ffi`]) serves both worlds, like the channel's: the main
//! interpreter gets it as `interloop._interloop._serve`, a worker from its worker
//! module's `serve_module()`. The Python side is `python/interloop/_serve/`.
mod ffi;
mod group;
mod http;
mod server;
mod tls;

pub(crate) use ffi::serve_module;

use pyo3::prelude::*;

/// Adds `_serve` to `interloop._interloop` and prepares the definition workers
/// use. Called from the `#[pymodule]` with the main GIL held.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    ffi::init_def();
    // Safety: the main GIL is held and `init_def` ran just above.
    let module = unsafe { Bound::from_owned_ptr_or_err(m.py(), ffi::create_module())? };
    m.add("_serve", module)
}
