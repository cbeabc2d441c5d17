//! Completions flowing back to the caller, and the caller's handle on a pool.
//!
//! Workers push finished jobs into [`Completions`] (a mutex-guarded vector) and
//! write its eventfd only when the vector goes from empty to non-empty, so a burst
//! of results costs one wake-up. The caller's loop drains the whole batch in one
//! call ([`Completions::drain`]): with asyncio that is an `add_reader` callback;
//! interloop's own loop can drain it natively each iteration instead (it gets the
//! `Arc<Completions>` from [`PoolCore::completions`]).

mod core;

pub use self::core::register;
#[allow(unused_imports)] // for interloop's own loop (native drain), see module docs
pub use self::core::PoolCore;

use crate::sched::{Completion, CompletionSink, WakeFd};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

pub struct Completions {
    queue: Mutex<Vec<Completion>>,
    wake: WakeFd,
}

impl Completions {
    pub fn new() -> std::io::Result<Self> {
        Ok(Completions { queue: Mutex::new(Vec::new()), wake: WakeFd::new()? })
    }

    /// The fd that becomes readable when completions are waiting.
    pub fn fd(&self) -> i32 {
        self.wake.raw()
    }

    /// Blocks (the caller must have released the GIL) until completions may be waiting.
    pub fn wait(&self, timeout_ms: i32) -> bool {
        self.wake.wait(timeout_ms)
    }

    /// Takes every waiting completion as a list of `(job_id, kind, bytes)`.
    pub fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.wake.clear();
        // Taken in its own statement: the lock is never held while touching Python.
        let batch = std::mem::take(&mut *self.queue.lock());
        let items = batch.into_iter().map(|c| {
            PyTuple::new(py, [c.job.into_pyobject(py).unwrap().into_any(), c.kind.into_pyobject(py).unwrap().into_any(), PyBytes::new(py, &c.data).into_any()])
        });
        let mut out = Vec::new();
        for t in items {
            out.push(t?);
        }
        PyList::new(py, out)
    }
}

impl CompletionSink for std::sync::Arc<Completions> {
    fn push(&self, c: Completion) {
        let was_empty = {
            let mut q = self.queue.lock();
            q.push(c);
            q.len() == 1
        };
        if was_empty {
            self.wake.notify();
        }
    }
}
