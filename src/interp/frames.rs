//! `sys._current_frames()` limited to the calling interpreter (raw FFI, so that both
//! the main interpreter, through `bridge`, and every worker can use it).
//!
//! CPython 3.12 and 3.13 implement `sys._current_frames()` by walking the thread
//! states of *every* interpreter and building a frame object for each thread's
//! current frame. For another interpreter's thread that means allocating (with the
//! caller's allocator) and linking a frame object into a frame of an interpreter that
//! runs under its own GIL: the heap gets corrupted ("double free or corruption").
//! [`current_frames`] walks only the calling interpreter's threads, which its GIL
//! (held here) keeps still. The pool puts it in place of `sys._current_frames` in the
//! main interpreter while workers run, and in every worker (docs/design-pool.md).
use crate::capi::set_error;
use pyo3::ffi;
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
/// checked on the calling thread ([`layout_ok`]) before every walk.
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
///
/// # Safety
/// The calling thread holds its interpreter's GIL.
pub(crate) unsafe fn layout_ok() -> bool {
    // SAFETY: with the GIL held this thread has a live, current thread state.
    unsafe { thread_id(ffi::PyThreadState_Get()) == ffi::PyThread_get_thread_ident() }
}

/// A new dict mapping the id of each thread of the calling interpreter that runs
/// Python code to its current frame; NULL with an exception set on failure.
///
/// # Safety
/// The calling thread holds its interpreter's GIL.
pub(crate) unsafe fn current_frames() -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (contract). Every call below is C API used as
    // documented; the reasoning for the walk is at the loop.
    unsafe {
        if !layout_ok() {
            return set_error(
                ffi::PyExc_RuntimeError,
                "interloop: this CPython's thread-state layout is not the one expected",
            );
        }
        // As CPython's own `sys._current_frames` does; NULL format: no arguments.
        if PySys_Audit(c"sys._current_frames".as_ptr(), std::ptr::null()) < 0 {
            return std::ptr::null_mut();
        }
        let result = ffi::PyDict_New();
        if result.is_null() {
            return result;
        }
        // Nothing below may run Python code: that could release the GIL and let a
        // thread of this interpreter end and free the thread state we stand on.
        // Allocating a frame object could start a GC collection (finalizers are
        // Python code), so the collector is off for the walk; the dict's keys are ints
        // (hashed and compared in C).
        let was_enabled = ffi::PyGC_Disable();
        let mut failed = false;
        // With the GIL held and no Python code running, no other thread of this
        // interpreter runs, so no state can be unlinked (only a holder of this
        // interpreter's GIL unlinks one: `PyThreadState_Delete`, and
        // `PyThreadState_DeleteCurrent` before it releases the GIL) or freed under us; a thread being
        // born may link a new state at the head meanwhile (CPython does that without
        // the GIL), which only decides whether we see it (it has no frame yet).
        // `PyThreadState_GetFrame` reads the state's current frame (its thread, of
        // this interpreter, waits for the GIL) and returns a new reference, or NULL
        // (with no error left set) when there is none.
        let mut t = ffi::PyInterpreterState_ThreadHead(ffi::PyInterpreterState_Get());
        while !t.is_null() {
            let frame = ffi::PyThreadState_GetFrame(t) as *mut ffi::PyObject;
            if !frame.is_null() {
                let key = ffi::PyLong_FromUnsignedLong(thread_id(t));
                let ok = !key.is_null() && ffi::PyDict_SetItem(result, key, frame) == 0;
                if !key.is_null() {
                    ffi::Py_DecRef(key);
                }
                ffi::Py_DecRef(frame);
                if !ok {
                    failed = true;
                    break;
                }
            }
            t = ffi::PyThreadState_Next(t);
        }
        if was_enabled != 0 {
            ffi::PyGC_Enable();
        }
        if failed {
            ffi::Py_DecRef(result);
            return std::ptr::null_mut();
        }
        result
    }
}
