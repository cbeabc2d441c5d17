//! interloop's native module `interloop._interloop`.
//!
//! `event_loop`: the asyncio loop core (main interpreter, PyO3 safe API).
//! `transport`: native fast paths for socket transports.
use pyo3::prelude::*;

pub mod event_loop;
pub mod transport;

// `gil_used = true`: the loop's state is guarded by the GIL (see event_loop/cell.rs).
#[pymodule(gil_used = true)]
fn _interloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    event_loop::register(m)?;
    transport::register(m)?;
    Ok(())
}
