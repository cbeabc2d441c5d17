//! The Python-facing methods of `LoopCore` (the asyncio API it implements), on top
//! of the steps in `reactor`, `timers`, `ready` and `run`.
use super::core::{LoopCore, PollState, Ready, State, WAKER_TOKEN};
use super::handle::Handle;
use super::objref::refcnt;
use super::reactor::Side;
use super::sources::LoopWaker;
use super::timers::{clock_resolution, monotonic};
use crate::capi::cell::GilCell;
use mio::{Events, Poll, Waker};
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub(super) static TASK_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(super) static FUTURE_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(super) static BASE_CREATE_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `asyncio.<module>.<path...>`, looked up once.
pub(super) fn asyncio_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    path: &[&str],
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        let mut obj = py.import(format!("asyncio.{module}"))?.into_any();
        for p in path {
            obj = obj.getattr(*p)?;
        }
        Ok::<_, PyErr>(obj.unbind())
    })
    .map(|o| o.bind(py))
}

/// The loop's `_task_factory`, which asyncio's `set_task_factory` sets. On
/// `interloop.Loop` it lives in a slot (see `_loop.py`), so the generic lookup finds
/// the slot's descriptor in the type cache and never makes the instance dict.
pub(super) fn task_factory<'py>(lp: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    lp.getattr(intern!(lp.py(), "_task_factory"))
}

/// Reports a queued handle to the GC: its references as the loop's own while it is
/// untracked (the normal case), or the handle itself if it is tracked.
pub(super) fn visit_queued(h: &Py<Handle>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    // Safety: called from tp_traverse (GIL held) on a live handle the loop owns a
    // reference to; PyObject_GC_IsTracked only reads the GC header.
    if unsafe { pyo3::ffi::PyObject_GC_IsTracked(h.as_ptr()) } != 0 {
        visit.call(h)
    } else {
        h.get().traverse_refs(visit)
    }
}

/// `(reader, writer)` handles of one descriptor.
type IoPair = (Option<Py<Handle>>, Option<Py<Handle>>);

impl LoopCore {
    /// `{"loop": self}` for `Task(coro, **kwargs)` (see `task_kwargs`). A fresh dict
    /// if the kept one is referenced elsewhere (a task factory that kept it, say).
    pub(super) fn task_kwargs<'py>(&self, slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let kept = self
            .task_kwargs
            .with(py, |k| k.as_ref().map(|d| d.clone_ref(py)));
        if let Some(d) = kept {
            // Two references: the cell's and `d`; a third means someone kept it.
            if refcnt(py, &d) == 2 && d.bind(py).len() == 1 {
                return Ok(d.into_bound(py));
            }
        }
        let d = PyDict::new(py);
        d.set_item(intern!(py, "loop"), slf)?;
        let old = self.task_kwargs.with(py, |k| k.replace(d.clone().unbind()));
        drop(old);
        Ok(d)
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        Ok(LoopCore {
            state: GilCell::new(State {
                registry: Some(registry),
                ..State::default()
            }),
            poll: parking_lot::Mutex::new(Some(PollState {
                poll,
                events: Events::with_capacity(1024),
            })),
            waker: Arc::new(LoopWaker::new(waker)),
            sources: GilCell::new(Vec::new()),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            timer_cancelled: Arc::new(AtomicUsize::new(0)),
            clock_resolution: clock_resolution(),
            internal_fd: std::sync::atomic::AtomicI32::new(-1),
            external_io: AtomicUsize::new(0),
            empty_tuple: PyTuple::empty(_args.py()).unbind(),
            since_poll: std::sync::atomic::AtomicU32::new(0),
            free_handles: GilCell::new(Vec::new()),
            context_kwnames: GilCell::new(None),
            c_kwnames: GilCell::new(None),
            probing: AtomicBool::new(false),
            time_patched: AtomicBool::new(false),
            task_kwargs: GilCell::new(None),
        })
    }

    fn time(&self) -> f64 {
        monotonic()
    }

    /// asyncio's `create_task`. The common case (no task factory, not in debug mode)
    /// builds the C-accelerated `asyncio.Task` directly; factories and debug mode take
    /// asyncio's own implementation.
    #[pyo3(signature = (coro, *, name=None, context=None, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let task = asyncio_attr(py, &TASK_CLASS, "tasks", &["Task"])?;
        let plain = !this.is_debug()
            && kwargs.is_none_or(|k| k.is_empty())
            && task_factory(slf.as_any())?.is_none();
        if plain && name.is_none() && context.is_none() {
            return task.call((coro,), Some(&this.task_kwargs(slf)?));
        }
        let kw = PyDict::new(py);
        if let Some(n) = name {
            kw.set_item(intern!(py, "name"), n)?;
        }
        if let Some(c) = context {
            kw.set_item(intern!(py, "context"), c)?;
        }
        if !plain {
            if let Some(k) = kwargs {
                kw.update(k.as_mapping())?;
            }
            return asyncio_attr(
                py,
                &BASE_CREATE_TASK,
                "base_events",
                &["BaseEventLoop", "create_task"],
            )?
            .call((slf, coro), Some(&kw));
        }
        kw.set_item(intern!(py, "loop"), slf)?;
        task.call((coro,), Some(&kw))
    }

    /// asyncio's `create_future`: a C-accelerated `asyncio.Future` bound to this loop.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kw = PyDict::new(py);
        kw.set_item(intern!(py, "loop"), slf)?;
        asyncio_attr(py, &FUTURE_CLASS, "futures", &["Future"])?.call((), Some(&kw))
    }

    /// (Replaced at import by the raw entry in `call_soon.rs`, which runs the same body.)
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        Self::call_soon_impl(slf, callback, args, context)
    }

    /// asyncio's internal `_call_soon(callback, args, context)`: no checks.
    fn _call_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        Self::queue_soon(slf, callback, args, context)
    }

    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let h = Self::schedule_soon(slf, callback, args, context, "call_soon_threadsafe", false)?;
        // The waker makes a loop blocked in epoll notice.
        slf.get().wake();
        Ok(h)
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later<'py>(
        slf: &Bound<'py, Self>,
        delay: Option<f64>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let Some(delay) = delay else {
            return Err(PyTypeError::new_err("delay must not be None"));
        };
        Self::schedule_at(
            slf,
            Self::now(slf)? + delay,
            false,
            callback,
            args,
            context,
            "call_later",
        )
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at<'py>(
        slf: &Bound<'py, Self>,
        when: Option<Bound<'py, PyAny>>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let Some(when) = when else {
            return Err(PyTypeError::new_err("when cannot be None"));
        };
        let int_when = when.is_exact_instance_of::<PyInt>();
        let when: f64 = when.extract()?;
        Self::schedule_at(slf, when, int_when, callback, args, context, "call_at")
    }

    /// asyncio's `_add_callback(handle)`: used by inherited code (signal handling).
    fn _add_callback(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let item = match handle.cast::<Handle>() {
            Ok(h) => {
                if h.get().is_cancelled() {
                    return Ok(());
                }
                Ready::Native(h.clone().unbind())
            }
            Err(_) => {
                if handle.getattr("_cancelled")?.is_truthy()? {
                    return Ok(());
                }
                Ready::Foreign(handle.clone().unbind())
            }
        };
        slf.get().push_ready(py, item);
        Ok(())
    }

    /// The hook `interloop.Pool` looks for: drain the completion queue of `core` (a
    /// pool's native half) each iteration and pass every batch to `callback`. The
    /// pool attaches itself (`PoolCore.attach_loop`, through `attach_source`).
    fn _interloop_attach_completions(
        slf: &Bound<'_, Self>,
        core: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
    ) -> PyResult<()> {
        let attached = core.call_method1(intern!(slf.py(), "attach_loop"), (slf, callback))?;
        if !attached.is_truthy()? {
            return Err(PyTypeError::new_err("the pool did not attach to this loop"));
        }
        Ok(())
    }

    fn _interloop_detach_completions(
        slf: &Bound<'_, Self>,
        core: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        core.call_method1(intern!(slf.py(), "detach_loop"), (slf,))?
            .is_truthy()
    }

    /// Marks `fd` (asyncio's self-pipe) as internal: see `INTERNAL_POLL_EVERY`.
    /// Makes asyncio's C future call `call_soon` once, to learn the keyword-names
    /// tuple of its internal `call_soon` helper (see `call_soon.rs`). `set_result` is the
    /// bound method of a C future with one done-callback; nothing is queued.
    fn _probe_c_callers(&self, set_result: &Bound<'_, PyAny>) -> PyResult<()> {
        self.probing.store(true, Ordering::Relaxed);
        let res = set_result.call1((set_result.py().None(),));
        self.probing.store(false, Ordering::Relaxed);
        res.map(drop)
    }

    fn _set_internal_fd(&self, py: Python<'_>, fd: i32) {
        self.internal_fd.store(fd, Ordering::Relaxed);
        self.state.with(py, |s| self.count_external_io(s));
    }

    fn _write_to_self(&self) {
        self.wake();
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    #[getter(_stopping)]
    fn get_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
    #[setter(_stopping)]
    fn set_stopping(&self, v: bool) {
        self.stopping.store(v, Ordering::Relaxed)
    }

    #[getter(_closed)]
    fn get_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
    #[setter(_closed)]
    fn set_closed(&self, v: bool) {
        self.closed.store(v, Ordering::Relaxed)
    }

    #[getter(_debug)]
    fn get_debug_flag(&self) -> bool {
        self.is_debug()
    }

    /// asyncio's `get_debug()`, natively: C `Future`s and `Task`s call it when they
    /// are created (asyncio's is a Python function reading the `_debug` property).
    fn get_debug(&self) -> bool {
        self.is_debug()
    }
    /// asyncio stores any value (`set_debug(0)`); its truth is what counts.
    #[setter(_debug)]
    fn set_debug_flag(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.debug.store(v.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, Handle>> {
        slf.get().add_io(slf, Side::Read, fd, callback, args)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, Handle>> {
        slf.get().add_io(slf, Side::Write, fd, callback, args)
    }

    fn _remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_io(py, Side::Read, fd)
    }

    fn _remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_io(py, Side::Write, fd)
    }

    /// The handles registered for `fd`: `(reader, writer)`, each `None` if absent.
    fn _io_handles(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<IoPair> {
        let (fd, _named) = self.registered_fd(py, fd)?;
        Ok(self.state.with(py, |s| match s.io.get(&fd) {
            Some(e) => (
                e.reader.as_ref().map(|h| h.clone_ref(py)),
                e.writer.as_ref().map(|h| h.clone_ref(py)),
            ),
            None => (None, None),
        }))
    }

    /// Re-arms `fd` so the reactor reports it again if it is still ready (used by
    /// native readers that stopped before draining their socket).
    fn _rearm(&self, py: Python<'_>, fd: RawFd) {
        self.rearm_fd(py, fd)
    }

    /// The registered descriptors.
    fn _io_fds(&self, py: Python<'_>) -> Vec<RawFd> {
        self.state.with(py, |s| s.io.keys().copied().collect())
    }

    /// Counts for tests and debugging: `(ready, timers, descriptors)`.
    fn _queue_sizes(&self, py: Python<'_>) -> (usize, usize, usize) {
        self.state
            .with(py, |s| (s.ready.len(), s.timers.len(), s.io.len()))
    }

    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().run_once(slf)
    }

    /// The loop proper; `Loop.run_forever` wraps it with asyncio's set-up and clean-up.
    fn _run_forever_core(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let result = loop {
            if let Err(e) = this.run_once(slf) {
                break Err(e);
            }
            if this.stopping.load(Ordering::Relaxed) {
                break Ok(());
            }
        };
        this.stopping.store(false, Ordering::Relaxed);
        result
    }

    /// Marks the loop closed and releases every queued callback and registration.
    fn _core_close(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::Relaxed);
        let (ready, handles, fileobjs) = self.take_all(py);
        drop(fileobjs);
        // Empty them too: user code may still hold some, and handles are not GC-tracked.
        for r in &ready {
            if let Ready::Native(h) = r {
                drop(h.get().take_inner(py));
            }
        }
        for h in &handles {
            drop(h.get().take_inner(py));
        }
        drop((ready, handles));
        let free = self.free_handles.with(py, std::mem::take);
        drop(free);
        let kwargs = self.task_kwargs.with(py, Option::take);
        drop(kwargs);
        let sources = self.sources.with(py, std::mem::take);
        for a in &sources {
            a.source.set_waker(None);
        }
        drop(sources);
        // Last, the descriptors (asyncio's close closes its selector): the epoll
        // descriptor, its second handle and the waker's eventfd.
        let registry = self.state.with(py, |s| s.registry.take());
        drop(registry);
        let poll = self.poll.lock().take();
        drop(poll);
        self.waker.close();
    }

    /// Generic attribute assignment, watching for `time`: see `time_patched`.
    fn __setattr__(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        // SAFETY: all three are live objects we hold references to; the generic
        // setter is what `object.__setattr__` does (it returns 0 or -1 with an
        // exception set).
        let rc = unsafe {
            pyo3::ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), value.as_ptr())
        };
        if rc < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        if is_time(name) {
            slf.get().time_patched.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn __delattr__(slf: &Bound<'_, Self>, name: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: as in `__setattr__`; a NULL value asks the generic setter to delete.
        let rc = unsafe {
            pyo3::ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        if is_time(name) {
            slf.get().time_patched.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(Some(kw)) = self
            .task_kwargs
            .traverse_with(|k| k.as_ref().map(|d| visit.call(d)))
        {
            kw?;
        }
        // Emptied handles kept for reuse still refer to the loop (handle.rs).
        if let Some(r) = self.free_handles.traverse_with(|f| {
            for h in f {
                visit_queued(h, &visit)?;
            }
            Ok(())
        }) {
            r?;
        }
        if let Some(r) = self.sources.traverse_with(|v| {
            for a in v {
                visit.call(&a.callback)?;
            }
            Ok(())
        }) {
            r?;
        }
        // Handles are not GC-tracked (handle.rs): their references are reported here,
        // as the loop's own, for every handle the loop queues.
        self.state
            .traverse_with(|s| {
                for r in &s.ready {
                    match r {
                        // An I/O handle is reported once, through the I/O table (if
                        // it was removed meanwhile, reporting less is only cautious).
                        Ready::Native(h) if h.get().is_io() => {}
                        Ready::Native(h) => visit_queued(h, &visit)?,
                        Ready::Foreign(o) => visit.call(o)?,
                        Ready::Bare(b) => {
                            visit.call(b.callback.as_py())?;
                            if let Some(a) = &b.arg {
                                visit.call(a.as_py())?;
                            }
                            visit.call(b.context.as_py())?;
                        }
                    }
                }
                for h in s.timers.iter() {
                    visit_queued(h, &visit)?;
                }
                for e in s.io.values() {
                    for h in [&e.reader, &e.writer].into_iter().flatten() {
                        visit_queued(h, &visit)?;
                    }
                    if let Some(o) = &e.fileobj {
                        visit.call(o)?;
                    }
                }
                Ok(())
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            if let Some(taken) = self.state.try_with(py, |_| ()).map(|_| self.take_all(py)) {
                drop(taken);
            }
            drop(self.free_handles.try_with(py, std::mem::take));
            drop(self.task_kwargs.try_with(py, Option::take));
        })
    }
}

fn is_time(name: &Bound<'_, PyAny>) -> bool {
    name.cast::<pyo3::types::PyString>()
        .is_ok_and(|s| s.to_str().is_ok_and(|s| s == "time"))
}
