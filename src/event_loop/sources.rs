//! Completion sources: native producers (the parallel engine's completion queue) that
//! the loop drains itself each iteration, instead of through a wake-up descriptor and
//! a Python reader callback.
//!
//! Protocol:
//!  1. `attach`: the loop hands the source a [`LoopWaker`]; from then on a producer
//!     thread that makes the source non-empty calls `wake()` (no GIL needed).
//!  2. Each iteration the loop asks `has_pending()` before deciding how long to block
//!     (pending work means a zero timeout), and after polling drains every pending
//!     source and calls its callback with the batch (GIL held).
//!  3. A producer that pushes after the loop's check wakes the poll, so nothing waits
//!     for an unrelated event. A spurious wake-up only costs an empty iteration.
//!  4. `detach`: the source forgets the waker; the loop drops its callback.
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Wakes a loop blocked in its poll, from any thread, coalescing bursts.
pub(crate) struct LoopWaker {
    /// `None` once the loop is closed: its eventfd is closed with it, and a producer
    /// that still holds this waker must not write to a descriptor number that may
    /// belong to someone else by then.
    waker: parking_lot::RwLock<Option<mio::Waker>>,
    pending: AtomicBool,
}

impl LoopWaker {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        LoopWaker {
            waker: parking_lot::RwLock::new(Some(waker)),
            pending: AtomicBool::new(false),
        }
    }

    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A failed wake (eventfd counter full) means a wake-up is already pending.
            if let Some(w) = &*self.waker.read() {
                let _ = w.wake();
            }
        }
    }

    /// Called by the loop before it decides to block: later `wake()`s write again.
    pub(crate) fn rearm(&self) {
        self.pending.store(false, Ordering::Release);
    }

    /// Closes the eventfd (the loop is closed); later `wake()`s do nothing.
    pub(crate) fn close(&self) {
        let w = self.waker.write().take();
        drop(w);
    }
}

/// How a producer (the pool's completion queue, a channel notifier) wakes the loop
/// that consumes it: through an eventfd that loop watches with `add_reader`, or,
/// once interloop's own loop drains the producer natively, through that loop's
/// [`LoopWaker`] (no eventfd write, no reader callback).
pub(crate) struct SourceWake {
    fd: crate::sched::WakeFd,
    loop_waker: parking_lot::Mutex<Option<Arc<LoopWaker>>>,
    /// Whether the eventfd may be set (so `clear` reads it only when it has to).
    fd_notified: AtomicBool,
}

impl SourceWake {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(SourceWake {
            fd: crate::sched::WakeFd::new()?,
            loop_waker: parking_lot::Mutex::new(None),
            fd_notified: AtomicBool::new(false),
        })
    }

    /// The fd that becomes readable on a wake-up (when no loop drains natively).
    pub(crate) fn fd(&self) -> i32 {
        self.fd.raw()
    }

    /// Blocks until a wake-up (the caller must not hold a GIL).
    pub(crate) fn wait(&self, timeout_ms: i32) -> bool {
        self.fd.wait(timeout_ms)
    }

    /// Wakes the consumer. Call with no lock held.
    pub(crate) fn wake(&self) {
        // Taken in its own statement: no lock is held while waking.
        let waker = self.loop_waker.lock().clone();
        match waker {
            Some(w) => w.wake(),
            None => {
                self.fd_notified.store(true, Ordering::Release);
                self.fd.notify();
            }
        }
    }

    /// Before the consumer takes what is queued: resets the eventfd if it was
    /// written, so an item queued meanwhile either is taken now or sets it again.
    pub(crate) fn clear(&self) {
        if self.fd_notified.swap(false, Ordering::AcqRel) {
            self.fd.clear();
        }
    }

    /// [`CompletionSource::set_waker`]: returns true when the producer is back on the
    /// eventfd (the caller then wakes again if something is already queued).
    pub(crate) fn set_waker(&self, waker: Option<Arc<LoopWaker>>) -> bool {
        let mut w = self.loop_waker.lock();
        *w = waker;
        w.is_none()
    }
}

/// A native producer of completions the loop drains itself.
pub(crate) trait CompletionSource: Send + Sync {
    /// Install (or with `None` remove) the waker to call when the source becomes
    /// non-empty.
    fn set_waker(&self, waker: Option<Arc<LoopWaker>>);
    /// Whether completions are waiting (cheap; called every iteration).
    fn has_pending(&self) -> bool;
    /// Takes every waiting completion as one Python object (the callback's argument).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>>;
}

pub(crate) struct Attached {
    pub(crate) key: usize,
    pub(crate) source: Arc<dyn CompletionSource>,
    pub(crate) callback: Py<PyAny>,
}
