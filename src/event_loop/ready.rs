use super::core::{let_go, Bare, LoopCore, Ready};
use super::handle::{Handle, RunError};
use super::objref::{has_weakrefs, refcnt, release, ObjRef};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::atomic::Ordering;

/// How many emptied handles the loop keeps for reuse.
pub(super) const FREE_HANDLES_MAX: usize = 256;

impl LoopCore {
    /// The checks asyncio makes before scheduling: closed loop, and in debug mode the
    /// calling thread and the callback's kind. A non-callable callback is refused
    /// always (asyncio only notices it in debug mode, or when the callback runs).
    pub(super) fn check_schedule(
        &self,
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        self.check_closed()?;
        if self.is_debug() {
            if check_thread {
                slf.call_method0("_check_thread")?;
            }
            slf.call_method1("_check_callback", (callback, method))?;
        } else if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "a callable object was expected by {method}(), got {}",
                callback.repr()?
            )));
        }
        Ok(())
    }

    /// `call_soon` and `call_soon_threadsafe`: checks, a handle, the ready queue
    /// (guarded by the GIL, which this thread holds).
    pub(super) fn schedule_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<Bound<'py, Handle>> {
        slf.get()
            .check_schedule(slf, &callback, method, check_thread)?;
        Self::queue_soon(slf, callback, args, context)
    }

    /// A handle for `callback(*args)`, queued to run in the next iteration.
    #[inline(always)]
    pub(super) fn queue_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let this = slf.get();
        let h = this.new_handle(slf, callback, args, context)?;
        this.push_ready(slf.py(), Ready::Native(h.clone().unbind()));
        Ok(h)
    }

    pub(super) fn call_soon_impl<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        Self::schedule_soon(slf, callback, args, context, "call_soon", true)
    }

    /// A plain handle for `call_soon`-like methods, reused from the free list when
    /// possible (not in debug mode, whose handles carry a creation traceback).
    pub(super) fn new_handle<'py>(
        &self,
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let py = slf.py();
        let debug = self.is_debug();
        if !debug {
            if let Some(h) = self.free_handles.with(py, |f| f.pop()) {
                let h = h.into_bound(py);
                h.get().refill(py, callback, args, context, slf.as_any())?;
                return Ok(h);
            }
        }
        Handle::create(py, callback, args, context, slf.as_any(), debug, None)
    }

    #[inline]
    pub(super) fn push_ready(&self, py: Python<'_>, item: Ready) {
        self.state.with(py, |s| s.ready.push_back(item));
    }

    pub(super) fn wake(&self) {
        self.waker.wake();
    }

    /// Whether `kwnames` is the tuple asyncio's C `call_soon` helper passes.
    #[inline]
    pub(super) fn is_c_kwnames(&self, py: Python<'_>, kwnames: *mut pyo3::ffi::PyObject) -> bool {
        self.c_kwnames
            .with(py, |k| k.as_ref().is_some_and(|t| t.as_ptr() == kwnames))
    }

    /// During `_probe_c_callers`: remembers `kw` as the C helper's tuple. True if
    /// probing (the caller then queues nothing).
    pub(super) fn probe_kwnames(&self, py: Python<'_>, kw: &Bound<'_, PyTuple>) -> bool {
        if !self.probing.load(Ordering::Relaxed) {
            return false;
        }
        let old = self.c_kwnames.with(py, |k| k.replace(kw.clone().unbind()));
        drop(old);
        true
    }

    /// Whether `kwnames` is the `("context",)` tuple remembered by
    /// `remember_context_kwnames`.
    #[inline]
    pub(super) fn is_context_kwnames(
        &self,
        py: Python<'_>,
        kwnames: *mut pyo3::ffi::PyObject,
    ) -> bool {
        self.context_kwnames
            .with(py, |k| k.as_ref().is_some_and(|t| t.as_ptr() == kwnames))
    }

    /// Remembers `kw`, a one-name tuple `call_soon` found to be `("context",)`, if
    /// none is remembered yet (a strong reference: the tuple stays alive, so no
    /// other tuple can take its address).
    pub(super) fn remember_context_kwnames(&self, py: Python<'_>, kw: &Bound<'_, PyTuple>) {
        self.context_kwnames.with(py, |k| {
            if k.is_none() {
                *k = Some(kw.clone().unbind());
            }
        });
    }

    /// Queues a callback of asyncio's C tasks and futures without a handle.
    pub(super) fn schedule_bare(
        &self,
        py: Python<'_>,
        callback: Bound<'_, PyAny>,
        arg: Option<Bound<'_, PyAny>>,
        context: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.check_closed()?;
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "a callable object was expected by call_soon(), got {}",
                callback.repr()?
            )));
        }
        let item = Ready::Bare(Bare {
            callback: ObjRef::new(callback),
            arg: arg.map(ObjRef::new),
            context: ObjRef::new(context),
        });
        self.push_ready(py, item);
        Ok(())
    }

    /// Runs a handle-less callback (`Ready::Bare`); a failure goes to the exception
    /// handler with a handle made for the report, as asyncio's would have been.
    pub(super) fn run_bare(&self, slf: &Bound<'_, Self>, bare: Bare) -> PyResult<()> {
        let py = slf.py();
        // Safety: GIL held; `bare` owns its callback, argument and context for the
        // whole call (it is dropped after it).
        let res = unsafe {
            super::handle::call_in_context(py, bare.context.as_ptr(), || match &bare.arg {
                None => {
                    super::handle::call_no_args(bare.callback.as_ptr(), self.empty_tuple.as_ptr())
                }
                Some(a) => pyo3::ffi::PyObject_CallOneArg(bare.callback.as_ptr(), a.as_ptr()),
            })
        };
        match res {
            Ok(()) => Ok(()),
            Err(RunError::Fatal(e)) => Err(e),
            Err(RunError::Callback(e)) => {
                let args = match &bare.arg {
                    None => PyTuple::empty(py),
                    Some(a) => PyTuple::new(py, [a.to_py(py)])?,
                };
                let h = Handle::create(
                    py,
                    bare.callback.to_py(py).into_bound(py),
                    args,
                    Some(bare.context.to_py(py).into_bound(py)),
                    slf.as_any(),
                    false,
                    None,
                )?;
                slf.call_method1("_handle_callback_exception", (&h, e.value(py)))?;
                Ok(())
            }
        }
    }

    /// Called after a handle ran: keep it for reuse if only the loop referenced it.
    // Not inlined: its drops of PyO3 references read a thread-local, whose address
    // the compiler would otherwise fetch at the top of every run of the ready queue.
    #[inline(never)]
    pub(super) fn recycle(&self, py: Python<'_>, h: Py<Handle>) {
        if h.get().is_io() {
            // Still registered (or exposed when it was removed): nothing to do.
            release(py, h);
            return;
        }
        if h.get().timer.is_some() || refcnt(py, &h) != 1 || has_weakrefs(py, &h) {
            // Someone else holds it: keep the handle, drop what it called.
            drop(h.get().take_callback(py));
            let_go(py, h);
            return;
        }
        if self.free_handles.with(py, |f| f.len() >= FREE_HANDLES_MAX) {
            // No room to keep it (a long queue ran): freeing it lets go of the rest.
            release(py, h);
            return;
        }
        // Emptying can run Python code (a __del__); nothing is borrowed here.
        drop(h.get().empty_for_reuse(py));
        if refcnt(py, &h) != 1 {
            release(py, h);
            return;
        }
        if let Some(h) = self.free_handles.with(py, |f| {
            if f.len() < FREE_HANDLES_MAX {
                f.push(h);
                None
            } else {
                Some(h)
            }
        }) {
            release(py, h);
        }
    }
}
