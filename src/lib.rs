//! interloop's native module `interloop._interloop`.
use pyo3::prelude::*;

#[pymodule]
fn _interloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
