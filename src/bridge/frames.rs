//! `sys._current_frames()` limited to the calling interpreter, for while own-GIL
//! workers run.
//!
//! CPython 3.12 and 3.13 implement `sys._current_frames()` by walking the thread
//! states of *every* interpreter and building a frame object for each thread's
//! current frame. For a worker's thread that means allocating (with the caller's
//! allocator) and linking a frame object into another interpreter's frame while that
//! interpreter runs under its own GIL: the heap gets corrupted ("double free or
//! corruption"). `current_frames` walks only the calling interpreter's threads,
//! which its GIL (held here) keeps still, and `_pool` puts it in place of
//! `sys._current_frames` while any pool has workers (docs/design-pool.md).
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::os::raw::{c_char, c_int, c_ulong};

extern "C" {
    /// Raises an audit event (public C API since 3.8; pyo3-ffi does not declare it).
    /// `format` may be NULL for an event without arguments.
    fn PySys_Audit(event: *const c_char, format: *const c_char, ...) -> c_int;
}

/// Byte offset of `thread_id` (an `unsigned long`, the `threading.get_ident()` of
/// the thread) in `struct _ts` (`PyThreadState`, Include/cpython/pystate.h). No
/// public function returns it (`PyThreadState_GetID` is a different, serial id),
/// so it is read at its offset, which is fixed within a minor version; the layout is
/// checked on the calling thread (`layout_ok`) before the replacement is installed.
#[cfg(Py_3_13)]
const THREAD_ID_OFFSET: usize = 152;
#[cfg(not(Py_3_13))]
const THREAD_ID_OFFSET: usize = 136;

/// The thread id of `t`.
///
/// # Safety
/// `t` is a live thread state of the calling interpreter and the caller holds that
/// interpreter's GIL.
unsafe fn thread_id(t: *mut ffi::PyThreadState) -> c_ulong {
    // SAFETY: the caller guarantees `t` is live; `THREAD_ID_OFFSET` lies inside the
    // struct (checked against this thread's own state by `layout_ok`) and is aligned
    // for an `unsigned long` (a multiple of 8).
    unsafe { std::ptr::read((t as *const u8).add(THREAD_ID_OFFSET) as *const c_ulong) }
}

/// Whether `THREAD_ID_OFFSET` holds this thread's id in its own thread state: the
/// layout assumption, checked on the running CPython.
#[pyfunction]
fn _own_frames_layout_ok(_py: Python<'_>) -> bool {
    // SAFETY: we hold the GIL (`_py`), so this thread has a live, current thread state.
    unsafe {
        let t = ffi::PyThreadState_Get();
        thread_id(t) == ffi::PyThread_get_thread_ident()
    }
}

/// `sys._current_frames()` for the calling interpreter only: a dict mapping the id
/// of each of its threads that runs Python code to that thread's current frame.
#[pyfunction]
fn current_frames_here(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    if !_own_frames_layout_ok(py) {
        return Err(PyRuntimeError::new_err(
            "interloop: this CPython's thread-state layout is not the one expected",
        ));
    }
    // SAFETY: the GIL is held; the event name is a NUL-terminated literal and a NULL
    // format means no arguments, as CPython's own `sys._current_frames` raises it.
    if unsafe { PySys_Audit(c"sys._current_frames".as_ptr(), std::ptr::null()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = PyDict::new(py);
    // Nothing below may run Python code: that could release the GIL and let a thread
    // of this interpreter end and free the thread state we stand on. Allocating a
    // frame object could start a GC collection (finalizers are Python code), so the
    // collector is off for the walk; the dict's keys are ints (hash and compare in C).
    // SAFETY: the GIL is held; PyGC_Disable/PyGC_Enable only flip the collector.
    let was_enabled = unsafe { ffi::PyGC_Disable() };
    let walked = (|| -> PyResult<()> {
        // SAFETY: with the GIL held and no Python code running, no thread of this
        // interpreter runs, so none can unlink (`PyThreadState_DeleteCurrent` unlinks
        // with the GIL held) or free its state under us; a thread being born may link
        // a new state at the head meanwhile (CPython does that without the GIL), which
        // only decides whether we see it. `PyThreadState_GetFrame` reads the state's
        // current frame (its thread, of this interpreter, is suspended waiting for the
        // GIL) and returns a new reference, or NULL without an error when there is none.
        unsafe {
            let mut t = ffi::PyInterpreterState_ThreadHead(ffi::PyInterpreterState_Get());
            while !t.is_null() {
                let frame = ffi::PyThreadState_GetFrame(t);
                if !frame.is_null() {
                    let frame = Bound::from_owned_ptr(py, frame as *mut ffi::PyObject);
                    result.set_item(thread_id(t), frame)?;
                } else if !ffi::PyErr_Occurred().is_null() {
                    return Err(PyErr::fetch(py));
                }
                t = ffi::PyThreadState_Next(t);
            }
        }
        Ok(())
    })();
    if was_enabled != 0 {
        // SAFETY: as above.
        unsafe { ffi::PyGC_Enable() };
    }
    walked.map(|()| result)
}

/// Adds `current_frames_here` and its layout check to `interloop._interloop`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(current_frames_here, m)?)?;
    m.add_function(wrap_pyfunction!(_own_frames_layout_ok, m)?)?;
    Ok(())
}
