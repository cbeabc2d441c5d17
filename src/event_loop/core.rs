//! `LoopCore`: the native half of `interloop.Loop`.
//!
//! The Python class `interloop.Loop` inherits from `LoopCore` first and from asyncio's
//! selector loop second, so everything on the hot path (scheduling, timers, readiness,
//! running callbacks) is here and the long tail of asyncio's API is inherited and
//! runs on top of it.
//!
//! One iteration (`run_once`), the same contract as asyncio's `_run_once`:
//!  1. Drop cancelled timers from the top of the heap (compact it if they are many).
//!  2. Compute the poll timeout: zero if callbacks are ready or the loop is stopping,
//!     else until the earliest timer, else forever.
//!  3. Poll the mio reactor with the GIL released, unless the timeout is zero and no
//!     file descriptor is registered (then there is nothing to learn, and skipping the
//!     system call is what makes a chain of `call_soon` cheap). A `call_soon_threadsafe`
//!     from another thread wakes the poll through a `mio::Waker`.
//!  4. Queue the handles of ready descriptors, then the timers that are due.
//!  5. Run exactly the callbacks that were queued before this step; those they
//!     schedule run in the next iteration.
//! `stop()` makes `run_forever` return after the iteration in which it was called.
use super::cell::GilCell;
use super::handle::{Handle, RunError, TimerInfo};
use super::objref::{has_weakrefs, refcnt, release, ObjRef};
use super::sources::{Attached, CompletionSource, LoopWaker};
use super::timers::{TimerHeap, MIN_CANCELLED_FOR_COMPACTION};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

/// File descriptors are small distinct integers: they hash as themselves (times an
/// odd constant, to spread them over the table's control bits). SipHash, the
/// default, showed in the per-iteration profile (`run_once` looks the self-pipe up).
#[derive(Default, Clone, Copy)]
struct FdHasher(u64);

impl std::hash::Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_i32(&mut self, i: i32) {
        self.0 = u64::from(i as u32);
    }
}

type FdMap<V> = HashMap<RawFd, V, BuildHasherDefault<FdHasher>>;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAKER_TOKEN: Token = Token(usize::MAX);
/// asyncio caps a single select() at one day; so do we.
const MAX_POLL_TIMEOUT: f64 = 24.0 * 3600.0;

pub(crate) enum Ready {
    Native(Py<Handle>),
    /// An `asyncio.Handle` handed to us by inherited code (`_add_callback`), run
    /// through its own `_run()`.
    Foreign(Py<PyAny>),
    /// A callback scheduled by asyncio's C tasks and futures, which throw away the
    /// handle `call_soon` returns: queued without one (see `fast.rs`).
    Bare(Bare),
}

/// `callback(arg)` (or `callback()`) to run in `context`; see `Ready::Bare`.
pub(crate) struct Bare {
    callback: ObjRef,
    arg: Option<ObjRef>,
    context: ObjRef,
}

#[derive(Default)]
struct IoEntry {
    reader: Option<Py<Handle>>,
    writer: Option<Py<Handle>>,
    /// The file object the registration was last made with, unless it was an int:
    /// asyncio's selectors find a registration by this object when its `fileno()`
    /// no longer gives the descriptor (a closed or detached socket reports -1).
    fileobj: Option<Py<PyAny>>,
}

impl IoEntry {
    fn interest(&self) -> Option<Interest> {
        match (self.reader.is_some(), self.writer.is_some()) {
            (true, true) => Some(Interest::READABLE.add(Interest::WRITABLE)),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

#[derive(Default)]
struct State {
    ready: VecDeque<Ready>,
    timers: TimerHeap<Py<Handle>>,
    io: FdMap<IoEntry>,
}

struct PollState {
    poll: Poll,
    events: Events,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Read,
    Write,
}

#[pyclass(frozen, subclass, module = "interloop._interloop", name = "LoopCore")]
pub struct LoopCore {
    state: GilCell<State>,
    /// Locked only by the loop's own thread: while polling (GIL released) and while
    /// reading the events back (GIL held). Nobody else takes it, so it never blocks.
    poll: parking_lot::Mutex<PollState>,
    registry: Registry,
    waker: Arc<LoopWaker>,
    /// Native completion sources drained each iteration (see `sources.rs`).
    sources: GilCell<Vec<Attached>>,
    closed: AtomicBool,
    stopping: AtomicBool,
    debug: AtomicBool,
    timer_cancelled: Arc<AtomicUsize>,
    clock_resolution: f64,
    /// asyncio's self-pipe (signal wake-ups). It alone does not make the loop poll
    /// between every two callbacks; see `INTERNAL_POLL_EVERY`.
    internal_fd: std::sync::atomic::AtomicI32,
    /// Registered descriptors other than the internal one (kept by `set_io` and
    /// `_set_internal_fd`; read at every iteration to choose the poll cadence).
    external_io: AtomicUsize,
    /// `()`, kept for `call_no_args` (CPython's immortal empty tuple: holding it
    /// keeps nothing else alive, and it needs no GC visit).
    empty_tuple: Py<PyTuple>,
    /// Iterations since the reactor was last polled.
    since_poll: std::sync::atomic::AtomicU32,
    /// Plain handles that ran and that nobody else referenced, emptied, for reuse by
    /// the next `call_soon` (saves an allocation and a deallocation per callback).
    free_handles: GilCell<Vec<Py<Handle>>>,
    /// The first `("context",)` keyword-names tuple `call_soon` received (see
    /// `fast.rs`), held so that its address cannot be reused by another tuple.
    context_kwnames: GilCell<Option<Py<PyTuple>>>,
    /// The keyword-names tuple of asyncio's C `call_soon` helper (its module state's
    /// `("context",)`), found by `_probe_c_callers`; see `fast.rs`.
    c_kwnames: GilCell<Option<Py<PyTuple>>>,
    /// Set while `_probe_c_callers` makes asyncio's C future call `call_soon`.
    probing: AtomicBool,
    /// `{"loop": self}`, the keyword arguments of the common `create_task` (`Task`
    /// only reads them), kept between calls. Reported to the GC (it refers back to
    /// the loop) and dropped by `take_all`.
    task_kwargs: GilCell<Option<Py<PyDict>>>,
}

/// How many emptied handles the loop keeps for reuse.
const FREE_HANDLES_MAX: usize = 256;

/// With callbacks ready and only the internal self-pipe registered, the reactor is
/// polled every this many iterations, which bounds how long a signal handler waits
/// behind a chain of callbacks without paying a system call per callback.
const INTERNAL_POLL_EVERY: u32 = 64;

/// With callbacks ready and descriptors of its own registered, the loop polls the
/// reactor (without blocking) every this many iterations, not every iteration: an
/// iteration right after one that polled runs its callbacks without a system call.
/// In a request/response exchange the iteration after the I/O events runs the
/// coroutines those events woke (which write the answers), and the one after that
/// blocks for the next events: one `epoll_wait` per exchange instead of two, as in
/// libuv, whose loop runs the ready callbacks just before its blocking poll. An I/O
/// event waits at most one extra iteration while callbacks keep the loop busy.
const IO_POLL_EVERY: u32 = 2;

pub(crate) fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on
    // Linux. It is the clock `time.monotonic()` reads, so `loop.time()` agrees with it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn clock_resolution() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: as above.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        1e-9
    }
}

static TASK_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FUTURE_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static BASE_CREATE_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `asyncio.<module>.<path...>`, looked up once.
fn asyncio_attr<'py>(
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
fn task_factory<'py>(lp: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    lp.getattr(intern!(lp.py(), "_task_factory"))
}

/// The loop drops its reference to `h`, which has left all of the loop's queues; if
/// anyone else still holds it, the GC takes over watching it (`Handle::expose`).
fn let_go(py: Python<'_>, h: Py<Handle>) {
    if refcnt(py, &h) > 1 {
        h.get().expose(py, &h);
    }
    release(py, h);
}

/// Reports a queued handle to the GC: its references as the loop's own while it is
/// untracked (the normal case), or the handle itself if it is tracked.
fn visit_queued(h: &Py<Handle>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    // Safety: called from tp_traverse (GIL held) on a live handle the loop owns a
    // reference to; PyObject_GC_IsTracked only reads the GC header.
    if unsafe { pyo3::ffi::PyObject_GC_IsTracked(h.as_ptr()) } != 0 {
        visit.call(h)
    } else {
        h.get().traverse_refs(visit)
    }
}

fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// asyncio's `selectors._fileobj_to_fd`: an int, or an object with `fileno()`.
fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = if let Ok(fd) = obj.extract::<i64>() {
        fd
    } else {
        match obj.call_method0("fileno") {
            Ok(f) => f.extract::<i64>()?,
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    obj.repr()?
                )))
            }
        }
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd as RawFd)
}

impl LoopCore {
    /// Re-arms `fd` so the reactor reports it again if it is still ready (used by
    /// native readers that stopped before draining their descriptor).
    pub(crate) fn rearm_fd(&self, py: Python<'_>, fd: RawFd) {
        let registry = &self.registry;
        self.state.with(py, |s| {
            if let Some(i) = s.io.get(&fd).and_then(IoEntry::interest) {
                let _ = registry.reregister(&mut SourceFd(&fd), Token(fd as usize), i);
            }
        })
    }

    #[inline]
    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    #[inline]
    pub(super) fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// The checks asyncio makes before scheduling: closed loop, and in debug mode the
    /// calling thread and the callback's kind. A non-callable callback is refused
    /// always (asyncio only notices it in debug mode, or when the callback runs).
    fn check_schedule(
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

    /// `{"loop": self}` for `Task(coro, **kwargs)` (see `task_kwargs`). A fresh dict
    /// if the kept one is referenced elsewhere (a task factory that kept it, say).
    fn task_kwargs<'py>(&self, slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
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
    fn run_bare(&self, slf: &Bound<'_, Self>, bare: Bare) -> PyResult<()> {
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

    /// A plain handle for `call_soon`-like methods, reused from the free list when
    /// possible (not in debug mode, whose handles carry a creation traceback).
    fn new_handle<'py>(
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

    /// Called after a handle ran: keep it for reuse if only the loop referenced it.
    // Not inlined: its drops of PyO3 references read a thread-local, whose address
    // the compiler would otherwise fetch at the top of every run of the ready queue.
    #[inline(never)]
    fn recycle(&self, py: Python<'_>, h: Py<Handle>) {
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

    pub(super) fn call_soon_impl<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        Self::schedule_soon(slf, callback, args, context, "call_soon", true)
    }

    /// `call_soon` and `call_soon_threadsafe`: checks, a handle, the ready queue
    /// (guarded by the GIL, which this thread holds).
    fn schedule_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<Bound<'py, Handle>> {
        let this = slf.get();
        this.check_schedule(slf, &callback, method, check_thread)?;
        let h = this.new_handle(slf, callback, args, context)?;
        this.push_ready(slf.py(), Ready::Native(h.clone().unbind()));
        Ok(h)
    }

    #[inline]
    fn push_ready(&self, py: Python<'_>, item: Ready) {
        self.state.with(py, |s| s.ready.push_back(item));
    }

    fn wake(&self) {
        self.waker.wake();
    }

    fn schedule_timer<'py>(
        &self,
        slf: &Bound<'py, Self>,
        when: f64,
        int_when: bool,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let py = slf.py();
        let info = TimerInfo {
            when,
            int_when,
            heap_cancelled: self.timer_cancelled.clone(),
        };
        let h = Handle::create(
            py,
            callback,
            args,
            context,
            slf.as_any(),
            self.is_debug(),
            Some(info),
        )?;
        h.get().scheduled.store(true, Ordering::Release);
        let item = h.clone().unbind();
        self.state.with(py, |s| s.timers.push(when, item));
        Ok(h)
    }

    /// Installs (or with `None` removes) the reader or writer of `fd`, keeping the
    /// epoll registration in step. Returns the handle it replaced and a file object
    /// for the caller to drop (the cell must not drop one). On a registration error
    /// nothing changes and the error is returned.
    ///
    /// `fileobj` is what the caller named `fd` with (`None` for an int). As asyncio's
    /// selectors re-register under the caller's object when the interest changes and
    /// keep the old key otherwise, it replaces the entry's object only then.
    fn set_io(
        &self,
        py: Python<'_>,
        fd: RawFd,
        side: Side,
        handle: Option<Py<Handle>>,
        fileobj: Option<Py<PyAny>>,
    ) -> (PyResult<()>, Option<Py<Handle>>, Option<Py<PyAny>>) {
        let registry = &self.registry;
        self.state.with(py, |s| {
            let entry = s.io.entry(fd).or_default();
            let before = entry.interest();
            let slot = match side {
                Side::Read => &mut entry.reader,
                Side::Write => &mut entry.writer,
            };
            let old = std::mem::replace(slot, handle);
            let after = entry.interest();
            let token = Token(fd as usize);
            let res = match (before, after) {
                (None, Some(i)) => match registry.register(&mut SourceFd(&fd), token, i) {
                    // Still registered from a descriptor number that was closed and
                    // reused while registered: take it over.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        registry.reregister(&mut SourceFd(&fd), token, i)
                    }
                    r => r,
                },
                (Some(b), Some(i)) if b != i => registry.reregister(&mut SourceFd(&fd), token, i),
                (Some(_), None) => {
                    // The descriptor may already be closed (epoll forgot it): fine.
                    let _ = registry.deregister(&mut SourceFd(&fd));
                    Ok(())
                }
                _ => Ok(()),
            };
            let done = match res {
                Ok(()) => {
                    let dropped = if after.is_none() {
                        s.io.remove(&fd).and_then(|e| e.fileobj)
                    } else if before != after {
                        let entry = s.io.get_mut(&fd).expect("entry exists");
                        std::mem::replace(&mut entry.fileobj, fileobj)
                    } else {
                        fileobj
                    };
                    (Ok(()), old, dropped)
                }
                Err(e) => {
                    // Undo: put the old handle back, hand the new one to the caller
                    // to drop.
                    let entry = s.io.get_mut(&fd).expect("entry exists");
                    let slot = match side {
                        Side::Read => &mut entry.reader,
                        Side::Write => &mut entry.writer,
                    };
                    let new = std::mem::replace(slot, old);
                    if entry.interest().is_none() {
                        s.io.remove(&fd);
                    }
                    (Err(PyErr::from(e)), new, fileobj)
                }
            };
            self.count_external_io(s);
            done
        })
    }

    /// Recounts `external_io` after the I/O table or the internal descriptor changed.
    fn count_external_io(&self, s: &State) {
        let internal = self.internal_fd.load(Ordering::Relaxed);
        let external = s.io.len() - usize::from(internal >= 0 && s.io.contains_key(&internal));
        self.external_io.store(external, Ordering::Relaxed);
    }

    /// The descriptor `obj` names, and `obj` itself unless it is an int. When its
    /// `fileno()` fails or is negative, asyncio's selectors look for the registration
    /// made with this very object (the descriptor it had then): so does this.
    fn registered_fd(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
    ) -> PyResult<(RawFd, Option<Py<PyAny>>)> {
        let named = (!obj.is_instance_of::<PyInt>()).then(|| obj.clone().unbind());
        match fileobj_to_fd(obj) {
            Ok(fd) => Ok((fd, named)),
            Err(e) => self
                .state
                .with(py, |s| {
                    s.io.iter()
                        .find(|(_, e)| {
                            e.fileobj
                                .as_ref()
                                .is_some_and(|o| o.as_ptr() == obj.as_ptr())
                        })
                        .map(|(fd, _)| *fd)
                })
                .map(|fd| (fd, named))
                .ok_or(e),
        }
    }

    fn add_io<'py>(
        &self,
        slf: &Bound<'py, Self>,
        side: Side,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, Handle>> {
        let py = slf.py();
        self.check_closed()?;
        let (fd, fileobj) = self.registered_fd(py, fd)?;
        let drains = side == Side::Read && crate::transport::drains_itself(&callback);
        let h = Handle::create(
            py,
            callback,
            args,
            None,
            slf.as_any(),
            self.is_debug(),
            None,
        )?;
        h.get().mark_io();
        if drains {
            h.get().mark_drains();
        }
        let (res, old, dropped) = self.set_io(py, fd, side, Some(h.clone().unbind()), fileobj);
        drop(dropped);
        res?;
        if let Some(old) = old {
            Handle::cancel_bound(old.bind(py));
            let_go(py, old);
        }
        Ok(h)
    }

    fn remove_io(&self, py: Python<'_>, side: Side, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let (fd, fileobj) = self.registered_fd(py, fd)?;
        let present = self.state.with(py, |s| {
            s.io.get(&fd).is_some_and(|e| match side {
                Side::Read => e.reader.is_some(),
                Side::Write => e.writer.is_some(),
            })
        });
        if !present {
            return Ok(false);
        }
        let (res, old, dropped) = self.set_io(py, fd, side, None, fileobj);
        drop(dropped);
        res?;
        match old {
            Some(old) => {
                Handle::cancel_bound(old.bind(py));
                let_go(py, old);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One iteration; see the module docs.
    #[inline(always)]
    fn run_once(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        // Before looking at any state: a source that fills up from now on wakes the
        // poll (see sources.rs).
        self.waker.rearm();
        let ntodo = match self.busy(slf.py()) {
            Some(n) => n,
            None => self.prepare(slf)?,
        };
        self.run_ready(slf, ntodo)
    }

    /// The common iteration of a busy loop, decided in a few loads: callbacks are
    /// ready, there are no timers and no native sources, and the reactor is not due
    /// to be polled. Then `prepare` would only count this iteration and return the
    /// queue's length, which this does. `None` otherwise.
    #[inline(always)]
    fn busy(&self, py: Python<'_>) -> Option<usize> {
        let since = self.since_poll.load(Ordering::Relaxed) + 1;
        if since >= self.poll_every() || !self.sources.with(py, |v| v.is_empty()) {
            return None;
        }
        let n = self.state.with(py, |s| {
            if s.timers.is_empty() {
                s.ready.len()
            } else {
                0
            }
        });
        if n == 0 {
            return None;
        }
        self.since_poll.store(since, Ordering::Relaxed);
        Some(n)
    }

    /// How many busy iterations may pass between two polls of the reactor.
    #[inline(always)]
    fn poll_every(&self) -> u32 {
        if self.external_io.load(Ordering::Relaxed) > 0 {
            IO_POLL_EVERY
        } else {
            INTERNAL_POLL_EVERY
        }
    }

    /// Steps 1 to 4 of an iteration: timers, the poll, native sources. Returns how
    /// many ready callbacks this iteration runs.
    #[inline(never)]
    fn prepare(&self, slf: &Bound<'_, Self>) -> PyResult<usize> {
        let py = slf.py();
        let (has_sources, sources_pending) = self.sources.with(py, |v| {
            (!v.is_empty(), v.iter().any(|a| a.source.has_pending()))
        });

        // 1 + 2: clean the heap's top, decide how long we may block.
        let cancelled = self.timer_cancelled.load(Ordering::Relaxed);
        let (has_ready, next_when, garbage) = self.state.with(py, |s| {
            let mut garbage = Vec::new();
            if cancelled > MIN_CANCELLED_FOR_COMPACTION && cancelled * 2 > s.timers.len() {
                s.timers
                    .retain_into(|h| !h.get().is_cancelled(), &mut garbage);
            } else {
                while s.timers.peek().is_some_and(|h| h.get().is_cancelled()) {
                    garbage.extend(s.timers.pop());
                }
            }
            (!s.ready.is_empty(), s.timers.peek_when(), garbage)
        });
        self.release_timers(py, garbage);

        let timeout = if has_ready || sources_pending || self.stopping.load(Ordering::Relaxed) {
            Some(Duration::ZERO)
        } else {
            next_when
                .map(|w| Duration::from_secs_f64((w - monotonic()).clamp(0.0, MAX_POLL_TIMEOUT)))
        };

        // 3: poll.
        // Only the loop's thread, holding the GIL, touches the count: a load and a
        // store, not a locked read-modify-write.
        let since = self.since_poll.load(Ordering::Relaxed) + 1;
        let poll_now = timeout != Some(Duration::ZERO) || since >= self.poll_every();
        self.since_poll
            .store(if poll_now { 0 } else { since }, Ordering::Relaxed);
        if poll_now {
            if timeout != Some(Duration::ZERO) {
                // A signal that arrived while callbacks ran (and whose Python handler
                // has not run yet, e.g. sent from C code) must not wait for the next
                // wake-up: run the handlers before blocking. Cheap when none is pending.
                py.check_signals()?;
            }
            let res = py.detach(|| {
                let mut guard = self.poll.lock();
                let PollState { poll, events } = &mut *guard;
                poll.poll(events, timeout)
            });
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    // A signal: let Python run its handlers now (Ctrl-C raises here).
                    py.check_signals()?;
                }
                Err(e) => return Err(e.into()),
            }
            // 4a: queue the handles of ready descriptors.
            let guard = self.poll.lock();
            let registry = &self.registry;
            self.state.with(py, |s| {
                for ev in guard.events.iter() {
                    if ev.token() == WAKER_TOKEN {
                        continue;
                    }
                    let fd = ev.token().0 as RawFd;
                    let Some(entry) = s.io.get(&fd) else { continue };
                    // Hang-up and error wake both sides, as asyncio's selectors do.
                    let err = ev.is_error();
                    let readable = ev.is_readable() || ev.is_read_closed() || err;
                    let writable = ev.is_writable() || ev.is_write_closed() || err;
                    for (hit, h) in [(readable, &entry.reader), (writable, &entry.writer)] {
                        if let (true, Some(h)) = (hit, h) {
                            if !h.get().is_cancelled() {
                                s.ready.push_back(Ready::Native(h.clone_ref(py)));
                            }
                        }
                    }
                    // mio registers edge-triggered; re-arming reports the descriptor
                    // again while it stays ready, which gives asyncio's level-triggered
                    // add_reader semantics (a reader that does not drain is called again).
                    // A native reader that drains its descriptor (socket and pipe
                    // readers, `transport::drains_itself`), alone on it, reads until it
                    // is drained or asks for the re-arm itself, saving a system call per event;
                    // a hang-up or error is always re-armed so EOF is never missed.
                    let self_draining = entry.writer.is_none()
                        && !ev.is_read_closed()
                        && !err
                        && entry.reader.as_ref().is_some_and(|r| r.get().drains());
                    if let (false, Some(i)) = (self_draining, entry.interest()) {
                        let _ = registry.reregister(&mut SourceFd(&fd), ev.token(), i);
                    }
                }
            });
            drop(guard);
        }

        // 4b: completions from native sources (their callbacks resolve futures).
        if has_sources {
            self.drain_sources(slf)?;
        }

        // 4c: timers that are due (no clock read when there are none).
        let (garbage, ntodo) = self.state.with(py, |s| {
            let mut garbage = Vec::new();
            if s.timers.is_empty() {
                return (garbage, s.ready.len());
            }
            let end = monotonic() + self.clock_resolution;
            while let Some(h) = s.timers.pop_due(end) {
                if h.get().is_cancelled() {
                    garbage.push(h);
                } else {
                    h.get().scheduled.store(false, Ordering::Release);
                    s.ready.push_back(Ready::Native(h));
                }
            }
            (garbage, s.ready.len())
        });
        self.release_timers(py, garbage);
        Ok(ntodo)
    }

    /// Step 5: runs the first `ntodo` ready callbacks (what the steps before queued;
    /// not what those callbacks queue in turn).
    #[inline(always)]
    fn run_ready(&self, slf: &Bound<'_, Self>, ntodo: usize) -> PyResult<()> {
        let py = slf.py();
        let debug = self.is_debug();
        for _ in 0..ntodo {
            let Some(item) = self.state.with(py, |s| s.ready.pop_front()) else {
                break;
            };
            match item {
                Ready::Native(h) => {
                    if h.get().is_cancelled() {
                        if h.get().is_io() {
                            release(py, h); // exposed, if at all, when it was removed
                        } else {
                            let_go(py, h);
                        }
                        continue;
                    }
                    if debug {
                        let res = self.run_handle_debug(slf, h.bind(py));
                        if h.get().is_io() {
                            release(py, h);
                        } else {
                            let_go(py, h);
                        }
                        res?;
                    } else {
                        match h.get().invoke(py) {
                            Ok(()) => self.recycle(py, h),
                            Err(RunError::Fatal(e)) => {
                                release(py, h);
                                return Err(e);
                            }
                            Err(RunError::Callback(e)) => {
                                slf.call_method1("_handle_callback_exception", (&h, e.value(py)))?;
                                self.recycle(py, h);
                            }
                        }
                    }
                }
                Ready::Bare(bare) => self.run_bare(slf, bare)?,
                Ready::Foreign(obj) => {
                    // A `Bound` releases directly when dropped (see `release`).
                    let obj = obj.into_bound(py);
                    let obj = &obj;
                    if obj.call_method0("cancelled")?.is_truthy()? {
                        continue;
                    }
                    if debug {
                        // As for native handles: _current_handle and the slow log.
                        slf.setattr("_current_handle", obj)?;
                        let t0 = monotonic();
                        let res = obj.call_method0("_run");
                        let dt = monotonic() - t0;
                        slf.setattr("_current_handle", py.None())?;
                        res?;
                        let limit: f64 = slf
                            .getattr("slow_callback_duration")?
                            .extract()
                            .unwrap_or(0.1);
                        if dt >= limit {
                            slf.call_method1("_warn_slow_callback", (obj, dt))?;
                        }
                    } else {
                        obj.call_method0("_run")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Lets go of cancelled timers taken out of the heap. Most iterations have none:
    /// an empty list owns no memory and is forgotten, skipping its drop glue.
    #[inline]
    fn release_timers(&self, py: Python<'_>, garbage: Vec<Py<Handle>>) {
        if garbage.capacity() == 0 {
            std::mem::forget(garbage);
            return;
        }
        for h in &garbage {
            h.get().scheduled.store(false, Ordering::Release);
        }
        let n = garbage
            .len()
            .min(self.timer_cancelled.load(Ordering::Relaxed));
        self.timer_cancelled.fetch_sub(n, Ordering::Relaxed);
        for h in garbage {
            let_go(py, h);
        }
    }

    fn drain_sources(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let pending: Vec<(Arc<dyn CompletionSource>, Py<PyAny>)> = self.sources.with(py, |v| {
            v.iter()
                .filter(|a| a.source.has_pending())
                .map(|a| (a.source.clone(), a.callback.clone_ref(py)))
                .collect()
        });
        for (source, callback) in pending {
            let res = source
                .drain(py)
                .and_then(|batch| callback.bind(py).call1((batch,)).map(drop));
            if let Err(e) = res {
                if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
                    || e.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                {
                    return Err(e);
                }
                let ctx = PyDict::new(py);
                ctx.set_item("message", "Exception in a completion callback")?;
                ctx.set_item("exception", e.value(py))?;
                ctx.set_item("callback", callback)?;
                slf.call_method1("call_exception_handler", (ctx,))?;
            }
        }
        Ok(())
    }

    /// Attaches a native completion source under `key` (replacing one with the same
    /// key): each iteration its pending batch is passed to `callback`.
    pub fn attach_source(
        &self,
        py: Python<'_>,
        key: usize,
        source: Arc<dyn CompletionSource>,
        callback: Py<PyAny>,
    ) -> PyResult<()> {
        self.check_closed()?;
        source.set_waker(Some(self.waker.clone()));
        let replaced = self.sources.with(py, |v| {
            let old = v.iter().position(|a| a.key == key).map(|i| v.remove(i));
            v.push(Attached {
                key,
                source,
                callback,
            });
            old
        });
        drop(replaced);
        // Whatever was queued before the waker was installed is drained next time.
        self.waker.wake();
        Ok(())
    }

    /// Detaches the source attached under `key`; returns whether there was one.
    pub fn detach_source(&self, py: Python<'_>, key: usize) -> bool {
        let removed = self.sources.with(py, |v| {
            v.iter().position(|a| a.key == key).map(|i| v.remove(i))
        });
        match removed {
            Some(a) => {
                a.source.set_waker(None);
                drop(a);
                true
            }
            None => false,
        }
    }

    /// Debug mode: `_current_handle` is set while the callback runs (the default
    /// exception handler shows its creation traceback) and slow callbacks are logged.
    fn run_handle_debug(&self, slf: &Bound<'_, Self>, h: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        slf.setattr("_current_handle", h)?;
        let t0 = monotonic();
        let res = h.get().invoke(py);
        let dt = monotonic() - t0;
        slf.setattr("_current_handle", py.None())?;
        match res {
            Ok(()) => {}
            Err(RunError::Fatal(e)) => return Err(e),
            Err(RunError::Callback(e)) => {
                slf.call_method1("_handle_callback_exception", (h, e.value(py)))?;
            }
        }
        let limit: f64 = slf
            .getattr("slow_callback_duration")?
            .extract()
            .unwrap_or(0.1);
        if dt >= limit {
            slf.call_method1("_warn_slow_callback", (h, dt))?;
        }
        if !h.get().is_io() {
            drop(h.get().take_callback(py));
        }
        Ok(())
    }

    /// Empties every queue and registration, returning what must be dropped (by the
    /// caller, after the borrow).
    /// Empties the queues and the I/O table; returns what they held for the caller
    /// to release (file objects the I/O table was registered with last).
    fn take_all(&self, py: Python<'_>) -> (Vec<Ready>, Vec<Py<Handle>>, Vec<Py<PyAny>>) {
        let registry = &self.registry;
        self.state.with(py, |s| {
            let ready: Vec<Ready> = s.ready.drain(..).collect();
            let mut handles = Vec::new();
            let mut fileobjs = Vec::new();
            s.timers.drain_into(&mut handles);
            for (fd, e) in s.io.drain() {
                let _ = registry.deregister(&mut SourceFd(&fd));
                handles.extend(e.reader);
                handles.extend(e.writer);
                fileobjs.extend(e.fileobj);
            }
            self.count_external_io(s);
            (ready, handles, fileobjs)
        })
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
            state: GilCell::new(State::default()),
            poll: parking_lot::Mutex::new(PollState {
                poll,
                events: Events::with_capacity(1024),
            }),
            registry,
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

    /// (Replaced at import by the raw entry in `fast.rs`, which runs the same body.)
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
        let this = slf.get();
        let h = this.new_handle(slf, callback, args, context)?;
        this.push_ready(slf.py(), Ready::Native(h.clone().unbind()));
        Ok(h)
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
        let this = slf.get();
        this.check_schedule(slf, &callback, "call_later", true)?;
        this.schedule_timer(slf, monotonic() + delay, false, callback, args, context)
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
        let this = slf.get();
        this.check_schedule(slf, &callback, "call_at", true)?;
        this.schedule_timer(slf, when, int_when, callback, args, context)
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

    /// The hook `interloop.Pool` looks for: drain `core`'s completion queue natively
    /// each iteration and pass every batch to `callback`.
    fn _interloop_attach_completions(
        &self,
        py: Python<'_>,
        core: &Bound<'_, crate::bridge::PoolCore>,
        callback: Py<PyAny>,
    ) -> PyResult<()> {
        let key = core.as_ptr() as usize;
        self.attach_source(py, key, core.get().completions(), callback)
    }

    fn _interloop_detach_completions(
        &self,
        py: Python<'_>,
        core: &Bound<'_, crate::bridge::PoolCore>,
    ) -> bool {
        self.detach_source(py, core.as_ptr() as usize)
    }

    /// Marks `fd` (asyncio's self-pipe) as internal: see `INTERNAL_POLL_EVERY`.
    /// Makes asyncio's C future call `call_soon` once, to learn the keyword-names
    /// tuple of its internal `call_soon` helper (see `fast.rs`). `set_result` is the
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
    fn _io_handles(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
    ) -> PyResult<(Option<Py<Handle>>, Option<Py<Handle>>)> {
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
