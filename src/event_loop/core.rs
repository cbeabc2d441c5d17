//! `LoopCore`: the native half of `interloop.Loop`; this file holds its state.
//!
//! The Python class `interloop.Loop` inherits from `LoopCore` first and from asyncio's
//! selector loop second, so everything on the hot path (scheduling, timers, readiness,
//! running callbacks) is native and the long tail of asyncio's API is inherited and
//! runs on top of it.
//!
//! One iteration (`run_once`), the same contract as asyncio's `_run_once`:
//!  1. Drop cancelled timers from the top of the heap (compact it if they are many).
//!  2. Compute the poll timeout: zero if callbacks are ready or the loop is stopping,
//!     else until the earliest timer, else forever.
//!  3. Poll the mio reactor with the GIL released, unless the timeout is zero and the
//!     reactor is not due (see `IO_POLL_EVERY`; skipping the system call is what
//!     makes a chain of `call_soon` cheap). A `call_soon_threadsafe` from another
//!     thread wakes the poll through a `mio::Waker`.
//!  4. Queue the handles of ready descriptors, drain the native completion sources,
//!     then queue the timers that are due.
//!  5. Run exactly the callbacks that were queued before this step; those they
//!     schedule run in the next iteration.
//!
//! `stop()` makes `run_forever` return after the iteration in which it was called.
//!
//! By concern, each file adding its part of `impl LoopCore`:
//! - `reactor.rs`: the I/O table and the mio reactor (steps 3 and 4a);
//! - `timers.rs`: the clock and the timer heap (steps 1 and 4c);
//! - `ready.rs`: the ready queue, handles and their reuse, `call_soon`'s work;
//! - `run.rs`: the iteration itself (steps 2, 4b and 5), debug-mode runs, sources;
//! - `python.rs`: the Python-facing methods (asyncio's API), on top of the others.
use super::handle::Handle;
use super::objref::ObjRef;
use super::objref::{refcnt, release};
use super::sources::{Attached, LoopWaker};
use super::timer_heap::TimerHeap;
use crate::capi::cell::GilCell;
use mio::unix::SourceFd;
use mio::{Events, Poll, Registry};
use mio::{Interest, Token};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::BuildHasherDefault;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub(super) struct State {
    pub(super) ready: VecDeque<Ready>,
    pub(super) timers: TimerHeap<Py<Handle>>,
    pub(super) io: FdMap<IoEntry>,
    /// A second handle on the poll's epoll descriptor, for registrations made while
    /// the loop's own thread may be polling. `None` once the loop is closed: `close`
    /// lets go of its descriptors, as asyncio's loop closes its selector.
    pub(super) registry: Option<Registry>,
}

/// File descriptors are small distinct integers: they hash as themselves (times an
/// odd constant, to spread them over the table's control bits). SipHash, the
/// default, showed in the per-iteration profile (`run_once` looks the self-pipe up).
#[derive(Default, Clone, Copy)]
pub(super) struct FdHasher(u64);

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

pub(super) type FdMap<V> = HashMap<RawFd, V, BuildHasherDefault<FdHasher>>;

pub(super) const WAKER_TOKEN: Token = Token(usize::MAX);

#[derive(Default)]
pub(super) struct IoEntry {
    pub(super) reader: Option<Py<Handle>>,
    pub(super) writer: Option<Py<Handle>>,
    /// The file object the registration was last made with, unless it was an int:
    /// asyncio's selectors find a registration by this object when its `fileno()`
    /// no longer gives the descriptor (a closed or detached socket reports -1).
    pub(super) fileobj: Option<Py<PyAny>>,
}

impl IoEntry {
    pub(super) fn interest(&self) -> Option<Interest> {
        match (self.reader.is_some(), self.writer.is_some()) {
            (true, true) => Some(Interest::READABLE.add(Interest::WRITABLE)),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

pub(super) struct PollState {
    pub(super) poll: Poll,
    pub(super) events: Events,
}

pub(crate) enum Ready {
    Native(Py<Handle>),
    /// An `asyncio.Handle` handed to us by inherited code (`_add_callback`), run
    /// through its own `_run()`.
    Foreign(Py<PyAny>),
    /// A callback scheduled by asyncio's C tasks and futures, which throw away the
    /// handle `call_soon` returns: queued without one (see `call_soon.rs`).
    Bare(Bare),
}

/// `callback(arg)` (or `callback()`) to run in `context`; see `Ready::Bare`.
pub(crate) struct Bare {
    pub(super) callback: ObjRef,
    pub(super) arg: Option<ObjRef>,
    pub(super) context: ObjRef,
}

#[pyclass(frozen, subclass, module = "interloop._interloop", name = "LoopCore")]
pub(crate) struct LoopCore {
    pub(super) state: GilCell<State>,
    /// Locked only by the loop's own thread: while polling (GIL released) and while
    /// reading the events back (GIL held). Nobody else takes it, so it never blocks.
    /// `None` once the loop is closed (the epoll descriptor is closed with it).
    pub(super) poll: parking_lot::Mutex<Option<PollState>>,
    pub(super) waker: Arc<LoopWaker>,
    /// Native completion sources drained each iteration (see `sources.rs`).
    pub(super) sources: GilCell<Vec<Attached>>,
    pub(super) closed: AtomicBool,
    pub(super) stopping: AtomicBool,
    pub(super) debug: AtomicBool,
    pub(super) timer_cancelled: Arc<AtomicUsize>,
    pub(super) clock_resolution: f64,
    /// asyncio's self-pipe (signal wake-ups). It alone does not make the loop poll
    /// between every two callbacks; see `INTERNAL_POLL_EVERY`.
    pub(super) internal_fd: std::sync::atomic::AtomicI32,
    /// Registered descriptors other than the internal one (kept by `set_io` and
    /// `_set_internal_fd`; read at every iteration to choose the poll cadence).
    pub(super) external_io: AtomicUsize,
    /// `()`, kept for `call_no_args` (CPython's immortal empty tuple: holding it
    /// keeps nothing else alive, and it needs no GC visit).
    pub(super) empty_tuple: Py<PyTuple>,
    /// Iterations since the reactor was last polled.
    pub(super) since_poll: std::sync::atomic::AtomicU32,
    /// Plain handles that ran and that nobody else referenced, emptied, for reuse by
    /// the next `call_soon` (saves an allocation and a deallocation per callback).
    pub(super) free_handles: GilCell<Vec<Py<Handle>>>,
    /// The first `("context",)` keyword-names tuple `call_soon` received (see
    /// `call_soon.rs`), held so that its address cannot be reused by another tuple.
    pub(super) context_kwnames: GilCell<Option<Py<PyTuple>>>,
    /// The keyword-names tuple of asyncio's C `call_soon` helper (its module state's
    /// `("context",)`), found by `_probe_c_callers`; see `call_soon.rs`.
    pub(super) c_kwnames: GilCell<Option<Py<PyTuple>>>,
    /// Set while `_probe_c_callers` makes asyncio's C future call `call_soon`.
    pub(super) probing: AtomicBool,
    /// Set once `time` was assigned on the instance (`unittest.mock.patch.object(loop,
    /// "time", ...)`, as aiohttp's tests do): from then on the core's own timers read
    /// the time through `loop.time()` as asyncio's do. Cleared when it is deleted.
    pub(super) time_patched: AtomicBool,
    /// `{"loop": self}`, the keyword arguments of the common `create_task` (`Task`
    /// only reads them), kept between calls. Reported to the GC (it refers back to
    /// the loop) and dropped by `take_all`.
    pub(super) task_kwargs: GilCell<Option<Py<PyDict>>>,
}

/// The loop drops its reference to `h`, which has left all of the loop's queues; if
/// anyone else still holds it, the GC takes over watching it (`Handle::expose`).
pub(super) fn let_go(py: Python<'_>, h: Py<Handle>) {
    if refcnt(py, &h) > 1 {
        h.get().expose(py, &h);
    }
    release(py, h);
}

pub(super) fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

impl LoopCore {
    #[inline]
    pub(super) fn check_closed(&self) -> PyResult<()> {
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

    /// Empties every queue and registration, returning what must be dropped (by the
    /// caller, after the borrow), the file objects registrations were made with too.
    pub(super) fn take_all(&self, py: Python<'_>) -> (Vec<Ready>, Vec<Py<Handle>>, Vec<Py<PyAny>>) {
        self.state.with(py, |s| {
            let ready: Vec<Ready> = s.ready.drain(..).collect();
            let mut handles = Vec::new();
            let mut fileobjs = Vec::new();
            s.timers.drain_into(&mut handles);
            for (fd, e) in s.io.drain() {
                if let Some(registry) = &s.registry {
                    let _ = registry.deregister(&mut SourceFd(&fd));
                }
                handles.extend(e.reader);
                handles.extend(e.writer);
                fileobjs.extend(e.fileobj);
            }
            self.count_external_io(s);
            (ready, handles, fileobjs)
        })
    }
}
