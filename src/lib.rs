//! interloop's native module `interloop._interloop`.
//!
//! Main interpreter (PyO3's safe API):
//! - `event_loop`: the asyncio loop core.
//! - `transport`: native fast paths for socket and pipe transports.
//! - `bridge`: the caller's handle on a worker pool and its completion queue.
//!
//! Worker interpreters (raw `pyo3::ffi` only: PyO3's statics belong to the main
//! interpreter, and PyO3 modules cannot load in sub-interpreters):
//! - `interp`: own-GIL sub-interpreters and the worker-side module.
//!
//! Both sides:
//! - `sched`: the work-stealing scheduler (no Python objects).
//! - `channel`: cross-interpreter channels (one raw-FFI module for every interpreter).
//! - `buffer`: zero-copy byte regions shared between interpreters.
//! - `wire`: the protocol constants shared with the Python side.
//! - `capi`: C-API plumbing (the entry-point trampoline, raw helpers, `GilCell`).
//!
//! # Module graph: src/
//!
//! Each module uses only those listed after its arrow (read from its `crate::`
//! paths); the graph has no cycle, and neither do the files inside each module.
//! `lib.rs` (the `#[pymodule]`) registers `event_loop`, `transport`, `bridge`,
//! `channel` and `wire`.
//!
//! ```text
//! capi        (leaf: pyo3 only)
//! sched       (leaf: no Python at all)
//! buffer      -> capi
//! event_loop  -> capi, sched
//! wire        -> buffer, capi, sched
//! transport   -> event_loop, capi
//! channel     -> buffer, event_loop, sched, capi
//! interp      -> channel, buffer, wire, sched, capi
//! bridge      -> interp, event_loop, buffer, wire, sched
//! ```
//!
//! The loop knows neither transports nor pools: `transport` installs the loop's
//! reader hook (`event_loop::reader`), and `bridge` and `channel` attach their
//! completion sources to a loop themselves (`event_loop::sources`).
use pyo3::prelude::*;

mod bridge;
mod buffer;
mod capi;
mod channel;
mod event_loop;
mod interp;
mod sched;
mod transport;
mod wire;

// `gil_used = true`: the loop's state is guarded by the GIL (see capi/cell.rs).
#[pymodule(gil_used = true)]
fn _interloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Safety: the main GIL is held (we have `m`) and `m` is a live module.
    if !unsafe { wire::add_constants(m.as_ptr()) } {
        return Err(PyErr::fetch(m.py()));
    }
    capi::entry::add_main_test_panic(m)?;
    event_loop::register(m)?;
    transport::register(m)?;
    bridge::register(m)?;
    channel::register(m)?;
    Ok(())
}
