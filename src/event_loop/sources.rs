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
pub struct LoopWaker {
    waker: mio::Waker,
    pending: AtomicBool,
}

impl LoopWaker {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        LoopWaker { waker, pending: AtomicBool::new(false) }
    }

    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A failed wake (eventfd counter full) means a wake-up is already pending.
            let _ = self.waker.wake();
        }
    }

    /// Called by the loop before it decides to block: later `wake()`s write again.
    pub(crate) fn rearm(&self) {
        self.pending.store(false, Ordering::Release);
    }
}

/// A native producer of completions the loop drains itself.
pub trait CompletionSource: Send + Sync {
    /// Install (or with `None` remove) the waker to call when the source becomes
    /// non-empty.
    fn set_waker(&self, waker: Option<Arc<LoopWaker>>);
    /// Whether completions are waiting (cheap; called every iteration).
    fn has_pending(&self) -> bool;
    /// Takes every waiting completion as one Python object (the callback's argument).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>>;
}

pub(crate) struct Attached {
    pub key: usize,
    pub source: Arc<dyn CompletionSource>,
    pub callback: Py<PyAny>,
}
