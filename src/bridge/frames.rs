//! The main interpreter's handle on `interp::frames`: `current_frames_here`, which the
//! pool puts in place of `sys._current_frames` while workers run
//! (docs/design-pool.md, "`sys._current_frames()` while workers run").
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `sys._current_frames()` for the calling interpreter only: a dict mapping the id
/// of each of its threads that runs Python code to that thread's current frame.
#[pyfunction]
fn current_frames_here(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: we hold the main interpreter's GIL (`py`), the function's contract; it
    // returns a new reference or NULL with an exception set.
    let d = unsafe { Bound::from_owned_ptr_or_err(py, crate::interp::current_frames()) }?;
    Ok(d.cast_into::<PyDict>()?)
}

/// Whether the thread-state layout `current_frames_here` reads is this CPython's.
#[pyfunction]
fn _own_frames_layout_ok(_py: Python<'_>) -> bool {
    // SAFETY: we hold the GIL (`_py`).
    unsafe { crate::interp::frames_layout_ok() }
}

/// Adds `current_frames_here` and its layout check to `interloop._interloop`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(current_frames_here, m)?)?;
    m.add_function(wrap_pyfunction!(_own_frames_layout_ok, m)?)?;
    Ok(())
}
