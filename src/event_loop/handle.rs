//! `Handle` and `TimerHandle`: what `call_soon`, `call_later` and `add_reader` return.
//!
//! They behave like asyncio's (`cancel`, `cancelled`, `get_context`, `when`, a repr
//! with the callback's source, `_source_traceback` in debug mode) but are native, so
//! the loop runs them without a Python-level `Context.run` call: the callback is
//! called between `PyContext_Enter` and `PyContext_Exit`.
//!
//! Handles, and the context copies made for them, are not tracked by the cyclic GC.
//! A loop may queue a million of them, and the GC would walk every one at each
//! collection they are part of. Instead the loop
//! reports the references of the handles it queues as its own (`LoopCore::__traverse__`),
//! and a handle drops its callback and arguments once it has run or is cancelled, so a
//! handle that user code keeps afterwards holds no reference that could close a cycle
//! (its context and loop stay, for `get_context()` and `_loop`).
use super::objref::ObjRef;
use super::reader::{DirectRead, NativeReader};
use crate::capi::cell::GilCell;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The Python helpers (`interloop._loop`): repr formatting, stack capture. Looked up
/// once; only ever touched on slow paths (repr, debug mode).
pub(crate) fn helpers(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    HELPERS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("interloop._loop")?.unbind())
        })
        .map(|m| m.bind(py))
}

#[derive(Default)]
pub(crate) struct Inner {
    /// `None` once cancelled (outside debug mode), so a cancelled handle that waits in
    /// the timer heap does not keep its callback's objects alive. (callable, args tuple)
    callback: Option<(ObjRef, ObjRef)>,
    context: Option<ObjRef>,
    /// The context is a copy the loop made and untracked from the GC (see
    /// `make_inner`). It must be tracked again before anyone else can see it and
    /// before its last reference goes: CPython's context dealloc unlinks it from the
    /// GC list without checking that it is linked.
    context_untracked: bool,
    loop_: Option<ObjRef>,
    source_traceback: Option<Py<PyAny>>,
    /// The repr saved by `cancel()` in debug mode.
    saved_repr: Option<String>,
}

impl Inner {
    /// Hands the context to the GC again (idempotent).
    fn track_context(&mut self) {
        if self.context_untracked {
            self.context_untracked = false;
            if let Some(c) = &self.context {
                // Safety: GIL held (Inner is only touched through a GilCell or while
                // being dropped by its handle's dealloc); the object is alive and we
                // untracked it ourselves, so it is not tracked now.
                unsafe { ffi::PyObject_GC_Track(c.as_ptr().cast()) };
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.track_context();
    }
}

/// What `Handle::empty_for_reuse` took out, dropped by the caller after the borrow.
pub(crate) struct Reused {
    _callback: Option<(ObjRef, ObjRef)>,
    _context: Option<ObjRef>,
    _traceback: Option<Py<PyAny>>,
    _repr: Option<String>,
}

/// Marks a handle that is a timer: its deadline and the loop's count of cancelled
/// timers still in the heap (the loop compacts the heap when that count grows).
pub(crate) struct TimerInfo {
    pub(crate) when: f64,
    /// `call_at` was given an int: asyncio keeps `when` as given, and callers that
    /// schedule on whole seconds (aiohttp's timeout ceiling) read an int back.
    pub(crate) int_when: bool,
    pub(crate) heap_cancelled: Arc<AtomicUsize>,
}

#[pyclass(
    frozen,
    subclass,
    weakref,
    module = "interloop._interloop",
    name = "Handle"
)]
pub(crate) struct Handle {
    inner: GilCell<Inner>,
    cancelled: AtomicBool,
    /// Made in debug mode: `cancel()` saves the repr before dropping the callback (as
    /// asyncio does), so slow-callback and error messages can still name it.
    debug: AtomicBool,
    pub(crate) timer: Option<TimerInfo>,
    /// True while the handle sits in the loop's timer heap.
    pub(crate) scheduled: AtomicBool,
    /// A reader or writer: runs again at every readiness, never emptied after a run.
    io: AtomicBool,
    /// A reader that reads until the socket is drained, or asks for a re-arm itself
    /// (`NativeReader::drains_itself`): the reactor need not re-arm it after each event.
    drains: AtomicBool,
    /// A reader's direct call (`NativeReader::direct`), set once by `mark_io`.
    direct: OnceLock<DirectRead>,
}

#[pyclass(frozen, extends = Handle, module = "interloop._interloop", name = "TimerHandle")]
pub(crate) struct TimerHandle;

/// Why running a handle's callback failed.
pub(crate) enum RunError {
    /// KeyboardInterrupt or SystemExit: leaves `run_forever`, as in asyncio.
    Fatal(PyErr),
    /// Any other exception: goes to the loop's exception handler.
    Callback(PyErr),
}

impl Handle {
    /// Builds a handle (a `TimerHandle` when `timer` is given). `context=None` takes a
    /// copy of the current context, as asyncio does.
    pub(crate) fn create<'py>(
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        loop_: &Bound<'py, PyAny>,
        debug: bool,
        timer: Option<TimerInfo>,
    ) -> PyResult<Bound<'py, Handle>> {
        let inner = Self::make_inner(py, callback, args, context, loop_, debug)?;
        let is_timer = timer.is_some();
        let handle = Handle {
            inner: GilCell::new(inner),
            cancelled: AtomicBool::new(false),
            debug: AtomicBool::new(debug),
            timer,
            scheduled: AtomicBool::new(false),
            io: AtomicBool::new(false),
            drains: AtomicBool::new(false),
            direct: OnceLock::new(),
        };
        let h = if is_timer {
            let init = PyClassInitializer::from(handle).add_subclass(TimerHandle);
            Bound::new(py, init)?.into_super()
        } else {
            Bound::new(py, handle)?
        };
        // Safety: PyO3 makes every class a GC type and tracks new objects; untracking
        // is allowed at any time, and PyO3's dealloc untracks through the checked
        // PyObject_GC_UnTrack, so an untracked handle is freed correctly. Why: see the
        // module docs (the loop reports a queued handle's references itself).
        unsafe { ffi::PyObject_GC_UnTrack(h.as_ptr().cast()) };
        Ok(h)
    }

    fn make_inner<'py>(
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        loop_: &Bound<'py, PyAny>,
        debug: bool,
    ) -> PyResult<Inner> {
        // Everything that can fail comes before the context copy is untracked: an
        // untracked copy must not be dropped by an early return.
        let source_traceback = if debug {
            Some(helpers(py)?.call_method0("_extract_stack")?.unbind())
        } else {
            None
        };
        let (context, untracked) = Self::context_for(py, context, true)?;
        Ok(Inner {
            callback: Some((ObjRef::new(callback), ObjRef::new(args.into_any()))),
            context: Some(ObjRef::new(context)),
            context_untracked: untracked,
            loop_: Some(ObjRef::new(loop_.clone())),
            source_traceback,
            saved_repr: None,
        })
    }

    /// The context a new handle runs in, and whether it is a copy we untracked:
    /// `context`, or (for `None`) a copy of the current context, as asyncio does.
    /// `untrack`: take a copy out of the GC (see the module docs). New handles do:
    /// a long ready queue (a batch of call_soon) is made of them, since the free
    /// list keeps few. Recycled handles do not: their queue is short, and the two
    /// GC calls would cost more than the collections they save.
    #[inline(always)]
    fn context_for<'py>(
        py: Python<'py>,
        context: Option<Bound<'py, PyAny>>,
        untrack: bool,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        match context {
            Some(c) if !c.is_none() => Ok((c, false)),
            // Safety: PyContext_CopyCurrent returns a new reference or NULL with an
            // exception set; from_owned_ptr_or_err takes ownership of either outcome.
            // The copy is ours alone (nobody else has seen it yet), so untracking it
            // is sound: the GC then ignores the copies a long ready queue holds (the
            // loop reports them through its own traverse), and a batch of call_soon
            // no longer sets off full collections. See the module docs.
            _ => unsafe {
                let ctx = Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())?;
                if untrack {
                    ffi::PyObject_GC_UnTrack(ctx.as_ptr().cast());
                }
                Ok((ctx, untrack))
            },
        }
    }

    /// Refills a handle taken from the loop's free list (see `LoopCore::recycle`):
    /// a plain (non-timer) handle nobody else references, emptied by `empty_for_reuse`,
    /// which kept its loop. Only the callback and the context are set.
    pub(crate) fn refill<'py>(
        &self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        loop_: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let (context, untracked) = Self::context_for(py, context, false)?;
        let stale_loop = self.inner.with(py, |i| {
            i.callback = Some((ObjRef::new(callback), ObjRef::new(args.into_any())));
            i.context = Some(ObjRef::new(context));
            i.context_untracked = untracked;
            // Always this loop's own handle; checked, not assumed.
            match &i.loop_ {
                Some(l) if l.as_ptr() == loop_.as_ptr() => None,
                _ => i.loop_.replace(ObjRef::new(loop_.clone())),
            }
        });
        drop(stale_loop);
        self.debug.store(false, Ordering::Relaxed);
        self.cancelled.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Empties the handle (for the loop's teardown); the caller drops the result after
    /// the borrow.
    pub(crate) fn take_inner(&self, py: Python<'_>) -> Inner {
        self.inner.with(py, std::mem::take)
    }

    /// Empties a handle that ran, for the free list: everything but its loop (the
    /// same for every handle on that list). The caller drops the result after the
    /// borrow.
    pub(crate) fn empty_for_reuse(&self, py: Python<'_>) -> Reused {
        self.inner.with(py, |i| {
            // Before anyone can drop it: the context goes back to the GC.
            i.track_context();
            Reused {
                _callback: i.callback.take(),
                _context: i.context.take(),
                _traceback: i.source_traceback.take(),
                _repr: i.saved_repr.take(),
            }
        })
    }

    /// Drops the callback and its arguments once a one-shot handle has run (asyncio
    /// keeps them; we do not, because handles are not tracked by the GC: see
    /// `LoopCore::__traverse__`). The caller drops the result after the borrow.
    pub(crate) fn take_callback(&self, py: Python<'_>) -> Option<(ObjRef, ObjRef)> {
        self.inner.with(py, |i| i.callback.take())
    }

    /// The loop lets go of this handle while someone else still holds it: from now
    /// on the GC must see it (and the context copy it holds), since it may close a
    /// cycle (request -> handle -> context -> request). Never called for a handle
    /// still in the loop's queues (the loop reports those itself; see `LoopCore`).
    pub(crate) fn expose(&self, py: Python<'_>, me: &Py<Handle>) {
        self.inner.with(py, |i| i.track_context());
        // Safety: GIL held; `me` is this live handle. Tracking an untracked GC object
        // is always allowed; the check avoids CPython's fatal double-track error.
        unsafe {
            if ffi::PyObject_GC_IsTracked(me.as_ptr()) == 0 {
                ffi::PyObject_GC_Track(me.as_ptr().cast());
            }
        }
    }

    /// Reports this handle's references to the GC on behalf of the loop that queues it.
    pub(crate) fn traverse_refs(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.inner
            .traverse_with(|i| {
                if let Some((f, a)) = &i.callback {
                    visit.call(f.as_py())?;
                    visit.call(a.as_py())?;
                }
                for o in [&i.context, &i.loop_].into_iter().flatten() {
                    visit.call(o.as_py())?;
                }
                if let Some(t) = &i.source_traceback {
                    visit.call(t)?;
                }
                Ok(())
            })
            .unwrap_or(Ok(()))
    }

    #[inline]
    pub(crate) fn is_io(&self) -> bool {
        self.io.load(Ordering::Relaxed)
    }

    /// Marks a reader or writer handle, with what the loop knows of its callback.
    pub(crate) fn mark_io(&self, native: NativeReader) {
        self.io.store(true, Ordering::Relaxed);
        self.drains.store(native.drains_itself, Ordering::Relaxed);
        if let Some(run) = native.direct {
            let _ = self.direct.set(run);
        }
    }

    /// The direct call of an I/O handle's native reader, if it has one.
    #[inline(always)]
    fn direct_read(&self) -> Option<DirectRead> {
        if self.is_io() {
            self.direct.get().copied()
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn drains(&self) -> bool {
        self.drains.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Calls the callback inside the handle's context.
    pub(crate) fn invoke(&self, py: Python<'_>) -> Result<(), RunError> {
        let taken = self.inner.with(py, |i| {
            let (f, a) = i.callback.as_ref()?;
            let ctx = i.context.as_ref()?.as_ptr();
            // clone_ref only increments reference counts: no Python code runs. The
            // context is borrowed: only take_inner/refill (never run during a call)
            // or the handle's dealloc (the caller holds the handle) release it.
            Some((f.clone_ref(py), a.clone_ref(py), ctx))
        });
        let Some((func, args, ctx)) = taken else {
            return Ok(());
        };
        // Safety: `func` and `args` are strong references we own for the whole call;
        // `ctx` is borrowed from this handle, which the caller keeps alive and which
        // releases its context only in take_inner/refill/dealloc (none can run during
        // the call); the GIL is held (token).
        unsafe {
            call_in_context(py, ctx, || {
                // A native reader with a direct call (see `reader`): the same work
                // as calling it, without `tp_call` and PyO3's wrapper.
                if let Some(run) = self.direct_read() {
                    return match run(py, func.as_py().bind(py)) {
                        Ok(()) => ffi::Py_None(), // immortal: no reference to give
                        Err(e) => {
                            e.restore(py);
                            std::ptr::null_mut()
                        }
                    };
                }
                if ffi::PyTuple_GET_SIZE(args.as_ptr()) == 0 {
                    call_no_args(func.as_ptr(), args.as_ptr())
                } else {
                    ffi::PyObject_Call(func.as_ptr(), args.as_ptr(), std::ptr::null_mut())
                }
            })
        }
    }

    pub(crate) fn loop_obj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner
            .with(py, |i| i.loop_.as_ref().map(|l| l.to_py(py)))
    }

    /// asyncio's `Handle.cancel()`: mark cancelled, drop the callback and its
    /// arguments (in debug mode, after saving the repr).
    pub(crate) fn cancel_bound(slf: &Bound<'_, Handle>) {
        let this = slf.get();
        let py = slf.py();
        if this.cancelled.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(t) = &this.timer {
            if this.scheduled.load(Ordering::Acquire) {
                t.heap_cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        if this.debug.load(Ordering::Relaxed) {
            if let Ok(r) = Handle::__repr__(slf) {
                this.inner.with(py, |i| i.saved_repr = Some(r));
            }
        }
        // Taken out under the borrow, dropped after it: dropping may run __del__.
        let dropped = this.inner.with(py, |i| i.callback.take());
        drop(dropped);
    }
}

/// Runs `call` between `PyContext_Enter(ctx)` and `PyContext_Exit(ctx)`, as asyncio's
/// `context.run(callback, *args)`; an exception from the call (or from leaving the
/// context) is classified for the loop. `call` returns what a CPython call returns:
/// a new reference, or NULL with an exception set. The result is released after the
/// context is left, as asyncio drops `context.run`'s return value (a finalizer it
/// sets off sees the loop's context, not the callback's).
///
/// # Safety
/// GIL held; `ctx` is a live `contextvars.Context` that stays alive for the whole call.
/// Enter and Exit are paired: Exit runs exactly once after a successful Enter,
/// whatever `call` did, and the call's exception is fetched before Exit, so Exit
/// cannot clobber it.
#[inline(always)]
pub(crate) unsafe fn call_in_context(
    py: Python<'_>,
    ctx: *mut ffi::PyObject,
    call: impl FnOnce() -> *mut ffi::PyObject,
) -> Result<(), RunError> {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        if ffi::PyContext_Enter(ctx) < 0 {
            return Err(classify(py, PyErr::fetch(py)));
        }
        // Each outcome is handled on its own path: a combined match over the call's and
        // the exit's results made every call copy both (large) results around.
        let res = call();
        if !res.is_null() {
            let exited = ffi::PyContext_Exit(ctx) >= 0;
            ffi::Py_DECREF(res);
            if exited {
                Ok(())
            } else {
                Err(classify(py, PyErr::fetch(py)))
            }
        } else {
            let e = PyErr::fetch(py);
            // The call's exception wins; one from leaving the context is dropped.
            if ffi::PyContext_Exit(ctx) < 0 {
                drop(PyErr::fetch(py));
            }
            Err(classify(py, e))
        }
    }
}

/// `f()`. For an object without vectorcall (asyncio's C task step is one), through
/// `PyObject_Call` with `empty_tuple`: `PyObject_CallNoArgs` would go one call layer
/// deeper (`_PyObject_MakeTpCall`), which fetches and releases the arguments tuple
/// on every call.
///
/// # Safety
/// GIL held; `f` is a live object, `empty_tuple` is `()` (borrowed).
#[inline(always)]
pub(crate) unsafe fn call_no_args(
    f: *mut ffi::PyObject,
    empty_tuple: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        if ffi::PyType_HasFeature(ffi::Py_TYPE(f), ffi::Py_TPFLAGS_HAVE_VECTORCALL) == 0 {
            ffi::PyObject_Call(f, empty_tuple, std::ptr::null_mut())
        } else {
            ffi::PyObject_CallNoArgs(f)
        }
    }
}

fn classify(py: Python<'_>, e: PyErr) -> RunError {
    if e.is_instance_of::<PyKeyboardInterrupt>(py) || e.is_instance_of::<PySystemExit>(py) {
        RunError::Fatal(e)
    } else {
        RunError::Callback(e)
    }
}

#[pymethods]
impl Handle {
    fn cancel(slf: &Bound<'_, Self>) {
        Handle::cancel_bound(slf);
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner.with(py, |i| {
            // Seen from outside from now on: the GC must know it again.
            i.track_context();
            i.context.as_ref().map(|c| c.to_py(py))
        })
    }

    /// Runs the callback now, reporting an exception to the loop's handler (asyncio's
    /// `Handle._run`).
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        match slf.get().invoke(py) {
            Ok(()) => Ok(()),
            Err(RunError::Fatal(e)) => Err(e),
            Err(RunError::Callback(e)) => {
                if let Some(lp) = slf.get().loop_obj(py) {
                    helpers(py)?.call_method1("_report_callback_error", (lp, slf, e.value(py)))?;
                }
                Ok(())
            }
        }
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner
            .with(py, |i| i.callback.as_ref().map(|(f, _)| f.to_py(py)))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner
            .with(py, |i| i.callback.as_ref().map(|(_, a)| a.to_py(py)))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.get_context(py)
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.loop_obj(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.inner
            .with(py, |i| i.source_traceback.as_ref().map(|t| t.clone_ref(py)))
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Acquire)
    }

    fn _repr_info<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        helpers(slf.py())?.call_method1("_handle_repr_info", (slf,))
    }

    /// Only reached once the handle is tracked again (`expose`): while queued it is
    /// untracked and the loop reports its references.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse_refs(&visit)
    }

    fn __clear__(&self) {
        Python::attach(|py| drop(self.inner.try_with(py, std::mem::take)));
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        if let Some(r) = slf.get().inner.with(py, |i| i.saved_repr.clone()) {
            return Ok(r);
        }
        helpers(py)?.call_method1("_handle_repr", (slf,))?.extract()
    }
}

#[pymethods]
impl TimerHandle {
    /// asyncio's TimerHandle ordering: by deadline; equal when deadline, callback,
    /// arguments and cancellation all are.
    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        use pyo3::basic::CompareOp::*;
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let a = slf.as_super().get();
        let b = other.as_super().get();
        let (wa, wb) = (
            a.timer.as_ref().map_or(f64::NAN, |t| t.when),
            b.timer.as_ref().map_or(f64::NAN, |t| t.when),
        );
        let equal = || -> PyResult<bool> {
            if wa != wb || a.is_cancelled() != b.is_cancelled() {
                return Ok(false);
            }
            let none = || py.None();
            let (ca, cb) = (
                a._callback(py).unwrap_or_else(none),
                b._callback(py).unwrap_or_else(none),
            );
            let (aa, ab) = (
                a._args(py).unwrap_or_else(none),
                b._args(py).unwrap_or_else(none),
            );
            Ok(ca.bind(py).eq(cb.bind(py))? && aa.bind(py).eq(ab.bind(py))?)
        };
        let r = match op {
            Lt => wa < wb,
            Gt => wa > wb,
            Le => wa < wb || equal()?,
            Ge => wa > wb || equal()?,
            Eq => equal()?,
            Ne => !equal()?,
        };
        Ok(pyo3::types::PyBool::new(py, r)
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __hash__(slf: PyRef<'_, Self>) -> isize {
        let w = slf.as_super().timer.as_ref().map_or(0.0, |t| t.when);
        // hash(float) semantics are not needed; a stable hash of the deadline is.
        let bits = w.to_bits();
        (bits ^ (bits >> 32)) as isize
    }

    fn when<'py>(slf: PyRef<'py, Self>) -> Bound<'py, PyAny> {
        Self::_when(slf)
    }

    #[getter]
    fn _when<'py>(slf: PyRef<'py, Self>) -> Bound<'py, PyAny> {
        let py = slf.py();
        match slf.as_super().timer.as_ref() {
            Some(t) if t.int_when => pyo3::types::PyInt::new(py, t.when as i64).into_any(),
            t => pyo3::types::PyFloat::new(py, t.map_or(f64::NAN, |t| t.when)).into_any(),
        }
    }
}
