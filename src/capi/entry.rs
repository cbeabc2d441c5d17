//! The one trampoline every `extern "C"` function CPython calls runs its body in.
//!
//! A Rust panic must not unwind into C (that aborts the process, or worse). Every
//! entry point (method-table functions, type slots, capsule destructors, pending
//! calls) therefore runs its body through [`entry`], which catches the panic and
//! turns it into a Python `SystemError` naming the entry, then returns the entry's
//! error value (NULL, -1). The same rule holds on both sides: the exception is
//! raised with raw `pyo3::ffi` calls, which work in any interpreter, so a panic in
//! a worker becomes an exception of the worker's job, as one in the main
//! interpreter becomes an exception of the call that hit it. [`py_entry`] is the
//! main interpreter's form: its body gets the GIL token and returns a `PyResult`
//! (PyO3's safe API, which must never run on a worker).
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::any::Any;
use std::ffi::CStr;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What an entry point returns to CPython when it failed (an exception is set).
pub(crate) trait ErrorReturn {
    fn error() -> Self;
}

impl ErrorReturn for *mut ffi::PyObject {
    #[inline(always)]
    fn error() -> Self {
        std::ptr::null_mut()
    }
}

impl ErrorReturn for c_int {
    #[inline(always)]
    fn error() -> Self {
        -1
    }
}

/// For entries that cannot report an error (destructors, `tp_dealloc`): the
/// exception is printed as unraisable, as CPython does for a failing `__del__`.
impl ErrorReturn for () {
    fn error() {
        // Safety: `entry`'s caller holds the GIL, and an exception is set.
        unsafe { ffi::PyErr_WriteUnraisable(std::ptr::null_mut()) }
    }
}

/// Runs the body of entry point `name`; a panic becomes a `SystemError` and the
/// entry's error value.
///
/// # Safety
/// The current thread holds the GIL of the interpreter that called the entry (so
/// that an exception can be set).
#[inline(always)]
pub(crate) unsafe fn entry<R: ErrorReturn>(name: &CStr, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            // Safety: the GIL is held (this function's contract).
            unsafe { raise_panic(name, payload.as_ref()) };
            R::error()
        }
    }
}

/// [`entry`] for the main interpreter: the body gets the GIL token and may fail
/// with a `PyErr`, which is restored.
///
/// # Safety
/// The current thread holds the main interpreter's GIL (never a worker's: the token
/// opens PyO3's safe API, which belongs to the main interpreter).
#[inline(always)]
pub(crate) unsafe fn py_entry<R: ErrorReturn>(
    name: &CStr,
    body: impl FnOnce(Python<'_>) -> PyResult<R>,
) -> R {
    // Safety: the main GIL is held (this function's contract).
    let py = unsafe { Python::assume_attached() };
    let run = || match body(py) {
        Ok(r) => r,
        Err(e) => {
            e.restore(py);
            R::error()
        }
    };
    // Safety: as above.
    unsafe { entry(name, run) }
}

/// Sets `SystemError("panic in interloop's <name>: <message>")`, replacing any
/// exception the body had set.
///
/// # Safety
/// The GIL of the current interpreter is held.
#[cold]
unsafe fn raise_panic(name: &CStr, payload: &(dyn Any + Send)) {
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let text = format!("panic in interloop's {}: {}", name.to_string_lossy(), msg);
    // Safety: the GIL is held (this function's contract); the pointers are live
    // for the call.
    unsafe {
        ffi::PyErr_Clear();
        super::raw::set_error(ffi::PyExc_SystemError, &text);
    }
}

/// A `METH_FASTCALL` entry of a raw module's method table whose function runs
/// through [`entry`]: `$f` is an `unsafe fn(module, args, nargs) -> *mut PyObject`
/// that CPython may call with the calling interpreter's GIL held and `args[..nargs]`
/// valid borrowed references.
macro_rules! method {
    ($name:literal, $f:path, $doc:literal) => {{
        /// # Safety
        /// Called by CPython as a METH_FASTCALL function (see `method!`).
        unsafe extern "C" fn shim(
            m: *mut pyo3::ffi::PyObject,
            a: *mut *mut pyo3::ffi::PyObject,
            n: pyo3::ffi::Py_ssize_t,
        ) -> *mut pyo3::ffi::PyObject {
            // Safety: CPython calls a METH_FASTCALL function with the calling
            // interpreter's GIL held and `a[..n]` valid borrowed references, which
            // is `$f`'s contract.
            unsafe { $crate::capi::entry::entry($name, || $f(m, a, n)) }
        }
        pyo3::ffi::PyMethodDef {
            ml_name: $name.as_ptr(),
            ml_meth: pyo3::ffi::PyMethodDefPointer {
                PyCFunctionFast: shim,
            },
            ml_flags: pyo3::ffi::METH_FASTCALL,
            ml_doc: $doc.as_ptr(),
        }
    }};
}
pub(crate) use method;

/// Test-only: the entry `_test_panic(message)` panics with `message`, to check that
/// a panic becomes a `SystemError` (tests/test_native_entries.py). On the main
/// module, the worker module and the channel module, never called otherwise.
///
/// # Safety
/// As a METH_FASTCALL function (see [`method!`]).
pub(crate) unsafe fn test_panic(
    _m: *mut ffi::PyObject,
    a: *mut *mut ffi::PyObject,
    n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // Safety: the GIL is held and `a[..n]` are valid (this function's contract).
    let msg = unsafe {
        if !super::raw::nargs(n, 1, "_test_panic") {
            return std::ptr::null_mut();
        }
        super::raw::arg_str(*a)
    };
    match msg {
        Some(msg) => panic!("{msg}"),
        None => std::ptr::null_mut(),
    }
}

/// Adds `_test_panic` to the main module `m`, the same test-only entry run through
/// [`py_entry`] (the form the main interpreter's raw entries use).
pub(crate) fn add_main_test_panic(m: &Bound<'_, PyModule>) -> PyResult<()> {
    /// # Safety
    /// Called by CPython as a METH_FASTCALL function of the main module.
    unsafe extern "C" fn shim(
        m: *mut ffi::PyObject,
        a: *mut *mut ffi::PyObject,
        n: ffi::Py_ssize_t,
    ) -> *mut ffi::PyObject {
        // Safety: CPython calls a METH_FASTCALL function of the main module with the
        // main GIL held and `a[..n]` valid borrowed references.
        unsafe { py_entry(c"_test_panic", |_py| Ok(test_panic(m, a, n))) }
    }
    static DEF: super::raw::MethodDef = super::raw::MethodDef(ffi::PyMethodDef {
        ml_name: c"_test_panic".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFast: shim,
        },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"_test_panic(message): test-only, panics in Rust with message".as_ptr(),
    });
    // Safety: the main GIL is held (we have `m`); `DEF` is 'static and never written.
    let f = unsafe {
        Bound::from_owned_ptr_or_err(
            m.py(),
            ffi::PyCFunction_NewEx(
                &DEF.0 as *const _ as *mut _,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        )?
    };
    m.add("_test_panic", f)
}
