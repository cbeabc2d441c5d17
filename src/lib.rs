//! interloop's native module `interloop._interloop`.
use pyo3::prelude::*;

// --- parallel engine (issue 4) ---
mod bridge;
mod interp;
mod sched;

#[pymodule]
fn _interloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    bridge::register(m)?; // parallel engine (issue 4)
    Ok(())
}
