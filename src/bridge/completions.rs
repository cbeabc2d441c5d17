//! The completion queue: see the module docs of `bridge`.
use crate::event_loop::sources::{CompletionSource, LoopWaker, SourceWake};
use crate::sched::{Completion, CompletionSink};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) struct Completions {
    queue: Mutex<Vec<Completion>>,
    /// The eventfd, or the waker of an interloop loop that drains this queue natively.
    wake: SourceWake,
    /// Mirrors `!queue.is_empty()` (written under the lock) for `spin_wait`.
    nonempty: AtomicBool,
}

impl Completions {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Completions {
            queue: Mutex::new(Vec::new()),
            wake: SourceWake::new()?,
            nonempty: AtomicBool::new(false),
        })
    }

    /// The fd that becomes readable when completions are waiting.
    pub(crate) fn fd(&self) -> i32 {
        self.wake.fd()
    }

    /// Blocks (the caller must have released the GIL) until completions may be waiting.
    pub(crate) fn wait(&self, timeout_ms: i32) -> bool {
        self.wake.wait(timeout_ms)
    }

    /// Spins (GIL held: bounded, and workers never need the main GIL for jobs) up to
    /// `budget` for a completion to arrive; returns whether one is waiting. Used by
    /// `Pool.run` right after a submission on an otherwise idle loop: catching a fast
    /// result here saves the loop's sleep in epoll and its wake-up.
    pub(crate) fn spin_wait(&self, budget: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + budget;
        let mut i = 0u32;
        loop {
            if self.nonempty.load(Ordering::Acquire) {
                return true;
            }
            i = i.wrapping_add(1);
            if i % 32 == 0 && std::time::Instant::now() >= deadline {
                return false;
            }
            crate::sched::spin_pause(i);
        }
    }

    /// Takes every waiting completion (clears the wake-up first, so a completion
    /// pushed after the take wakes the loop again).
    pub(crate) fn take(&self) -> Vec<Completion> {
        self.wake.clear();
        let mut q = self.queue.lock();
        self.nonempty.store(false, Ordering::Relaxed);
        std::mem::take(&mut *q)
    }

    /// Takes every waiting completion as a list of `(job_id, kind, bytes)`.
    pub(crate) fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        // Taken in its own statement: the lock is never held while touching Python.
        let batch = self.take();
        let mut out = Vec::with_capacity(batch.len());
        for c in batch {
            out.push(completion_tuple(py, &c)?);
        }
        PyList::new(py, out)
    }
}

/// `(job_id, kind, bytes)` of one completion.
pub(crate) fn completion_tuple<'py>(
    py: Python<'py>,
    c: &Completion,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            c.job.into_pyobject(py)?.into_any(),
            c.kind.into_pyobject(py)?.into_any(),
            PyBytes::new(py, &c.data).into_any(),
        ],
    )
}

impl CompletionSink for std::sync::Arc<Completions> {
    fn push(&self, c: Completion) {
        let was_empty = {
            let mut q = self.queue.lock();
            q.push(c);
            self.nonempty.store(true, Ordering::Release);
            q.len() == 1
        };
        if was_empty {
            self.wake.wake();
        }
    }
}

impl CompletionSource for Completions {
    fn set_waker(&self, waker: Option<Arc<LoopWaker>>) {
        // Back on the eventfd: make sure anything already queued is seen through it.
        if self.wake.set_waker(waker) && !self.queue.lock().is_empty() {
            self.wake.wake();
        }
    }

    fn has_pending(&self) -> bool {
        !self.queue.lock().is_empty()
    }

    /// Takes nothing: the loop then calls the pool's callback with None, and the
    /// pool takes the batch itself with `PoolCore.resolve` (futures resolved
    /// natively, no list of tuples).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(py.None().into_bound(py))
    }
}
