//! Cross-interpreter channels: `interloop.Channel`.
//!
//! A channel's state lives in Rust ([`state::Channel`], one `Arc` shared by every
//! interpreter): a FIFO of pickled messages (`Vec<u8>`, Rust-owned), a closed flag
//! and the queues of waiting senders and receivers. Python objects never cross:
//! the sender pickles, the receiver unpickles in its own interpreter.
//!
//! One raw-FFI module ([`ffi`]) serves both worlds: the main interpreter gets it as
//! `interloop._interloop._chan`, a worker from its worker module's
//! `channel_module()`. The Python face is `python/interloop/_channel.py`.
//!
//! Waking, not polling: each event loop that waits on channels (the caller's loop,
//! each worker's loop) owns one [`state::Notifier`], an eventfd plus a list of woken
//! tokens, watched with `loop.add_reader`; interloop's own loop drains it natively
//! instead ([`native_loop`]). The waiting protocol is written at [`state::Channel`].
//!
//! Pickling: a channel pickles to its process-wide id; the registry maps ids to
//! channels (weakly; pinned while a pickled copy is in flight, see [`state::pin`]).
mod ffi;
mod native_loop;
pub(crate) mod state;

pub(crate) use ffi::channel_module;

use pyo3::prelude::*;

/// Adds `_chan` (the channel functions) to `interloop._interloop`, and prepares the
/// definition workers use. Called from the `#[pymodule]` with the main GIL held.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    ffi::init_def();
    let py = m.py();
    // Safety: the main GIL is held and `init_def` ran just above.
    let module = unsafe { Bound::from_owned_ptr_or_err(py, ffi::create_module())? };
    m.add("_chan", module)?;
    m.add_function(wrap_pyfunction!(native_loop::_chan_attach_loop, m)?)
}
