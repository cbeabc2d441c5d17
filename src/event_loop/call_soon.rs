//! A raw `METH_FASTCALL | METH_KEYWORDS` entry for `LoopCore.call_soon`, the
//! hottest call into the loop (asyncio's C `Task` calls `loop.call_soon(step,
//! context=ctx)` at every step). PyO3's generic wrapper (trampoline, keyword
//! matching, the `*args` tuple) costs more instructions than the call's own work
//! and spreads it over more code; this entry parses the one keyword itself and
//! then runs the same body as the `#[pymethods]` `call_soon` (which stays as the
//! documented signature). Installed over the PyO3 method when the module loads.
use super::core::LoopCore;
use crate::capi::{py_entry, MethodDef};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::OnceLock;

static CALL_SOON: OnceLock<MethodDef> = OnceLock::new();

/// Replaces `LoopCore.call_soon` with the raw entry.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let def = CALL_SOON.get_or_init(|| {
        MethodDef(ffi::PyMethodDef {
            ml_name: c"call_soon".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: call_soon,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: c"call_soon(callback, *args, context=None)\n--\n\nSchedules callback(*args) \
in the next iteration; returns its Handle."
                .as_ptr(),
        })
    });
    let tp = py.get_type::<LoopCore>();
    // Safety: GIL held; `def` is 'static; the descriptor checks that `self` is a
    // LoopCore (or subclass) instance before calling `call_soon`.
    unsafe {
        let d = ffi::PyDescr_NewMethod(
            tp.as_ptr() as *mut ffi::PyTypeObject,
            &def.0 as *const _ as *mut _,
        );
        let d = Bound::from_owned_ptr_or_err(py, d)?;
        tp.setattr("call_soon", d)?;
    }
    Ok(())
}

/// # Safety
/// A `METH_FASTCALL | METH_KEYWORDS` method of `LoopCore`: called by CPython with
/// the main GIL held and the arguments of `body`.
unsafe extern "C" fn call_soon(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // Safety: CPython calls this with the main GIL held (method descriptor call),
    // `slf` an instance of LoopCore or a subclass (checked by the descriptor), `args`
    // valid for `nargs` positional plus `len(kwnames)` keyword values, borrowed:
    // `body`'s contract.
    unsafe { py_entry(c"call_soon", |py| body(py, slf, args, nargsf, kwnames)) }
}

/// `call_soon`'s work.
///
/// # Safety
/// The main GIL is held; `slf` is a live `LoopCore`; `args` holds `nargs` positional
/// then `len(kwnames)` keyword values, borrowed, valid for the call.
unsafe fn body(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        let nargs = ffi::PyVectorcall_NARGS(nargsf as usize);
        // Borrowed for the call (CPython holds `self` while calling us): no reference
        // count traffic.
        let slf = Bound::ref_from_ptr(py, &slf).cast_unchecked::<LoopCore>();
        let mut context = None;
        if !kwnames.is_null() {
            let core = slf.get();
            // asyncio's C tasks and futures call through one helper that passes the same
            // `("context",)` tuple (kept in their module state) and drops the returned
            // handle unread. Found once per loop by `_probe_c_callers`, that tuple marks
            // calls whose handle nobody can see: they are queued without one.
            if (nargs == 1 || nargs == 2) && core.is_c_kwnames(py, kwnames) && !core.is_debug() {
                let context = Bound::from_borrowed_ptr(py, *args.offset(nargs));
                if !context.is_none() {
                    let arg = (nargs == 2).then(|| Bound::from_borrowed_ptr(py, *args.add(1)));
                    core.schedule_bare(py, Bound::from_borrowed_ptr(py, *args), arg, context)?;
                    return Ok(none());
                }
            }
            if core.probe_kwnames(
                py,
                Bound::ref_from_ptr(py, &kwnames).cast_unchecked::<PyTuple>(),
            ) {
                return Ok(none());
            }
            // The same tuple, in debug mode or before the probe: once seen, it is
            // recognised by identity, without comparing strings.
            if core.is_context_kwnames(py, kwnames) {
                context = Some(Bound::from_borrowed_ptr(py, *args.offset(nargs)));
            } else {
                let kw = Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>();
                for (i, name) in kw.iter().enumerate() {
                    if name.eq(pyo3::intern!(py, "context"))? && context.is_none() {
                        context = Some(Bound::from_borrowed_ptr(
                            py,
                            *args.offset(nargs + i as isize),
                        ));
                    } else {
                        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                            "call_soon() got an unexpected keyword argument {}",
                            name.repr()?
                        )));
                    }
                }
                if kw.len() == 1 {
                    slf.get().remember_context_kwnames(py, &kw);
                }
            }
        }
        if nargs < 1 {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "call_soon() missing 1 required positional argument: 'callback'",
            ));
        }
        let callback = Bound::from_borrowed_ptr(py, *args);
        let rest = if nargs == 1 {
            PyTuple::empty(py)
        } else {
            let rest = std::slice::from_raw_parts(args.add(1), (nargs - 1) as usize);
            PyTuple::new(py, rest.iter().map(|&p| Bound::from_borrowed_ptr(py, p)))?
        };
        let h = LoopCore::call_soon_impl(slf, callback, rest, context)?;
        Ok(h.into_ptr())
    }
}

/// `None` as a return value. It is immortal on every CPython we build for (3.12+),
/// so returning it needs no new reference, as CPython's own `Py_RETURN_NONE`.
#[inline(always)]
fn none() -> *mut ffi::PyObject {
    // Safety: `Py_None` only takes the address of the static `_Py_NoneStruct`.
    unsafe { ffi::Py_None() }
}
