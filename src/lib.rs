//! interloop's native module `interloop._interloop`.
//!
//! Main interpreter (PyO3's safe API):
//! - `event_loop`: the asyncio loop core.
//! - `transport`: native fast paths for socket transports.
//! - `bridge`: the caller's handle on a worker pool and its completion queue.
//!
//! Worker interpreters (raw `pyo3::ffi` only; see ARCHITECTURE.md):
//! - `interp`: own-GIL sub-interpreters and the worker-side module.
//! - `sched`: the work-stealing scheduler shared by both sides (no Python objects).
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

// `gil_used = true`: the loop's state is guarded by the GIL (see event_loop/cell.rs).
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
