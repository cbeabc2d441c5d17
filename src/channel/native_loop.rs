//! interloop's own loop drains a channel notifier natively (main interpreter only;
//! safe PyO3 API): the notifier is attached as a completion source
//! (`event_loop/sources.rs`), so a wake-up costs the loop's waker instead of an
//! eventfd write, an epoll event and a reader callback. asyncio's loops (and every
//! worker's loop) use the notifier's eventfd with `add_reader` instead.
use super::state::Notifier;
use crate::event_loop::sources::{CompletionSource, LoopWaker};
use crate::event_loop::LoopCore;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyList};
use std::sync::Arc;

impl CompletionSource for Notifier {
    fn set_waker(&self, waker: Option<Arc<LoopWaker>>) {
        // Back on the eventfd: make sure tokens already queued are seen through it.
        if self.wake.set_waker(waker) && self.has_pending() {
            self.wake.wake();
        }
    }

    fn has_pending(&self) -> bool {
        Notifier::has_pending(self)
    }

    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self.drain())?.into_any())
    }
}

/// The notifier behind a capsule made by `_chan.notifier()`.
fn notifier_of(cap: &Bound<'_, PyAny>) -> PyResult<Arc<Notifier>> {
    let cap = cap.cast::<PyCapsule>()?;
    let name = super::ffi::NOTIFIER;
    let p = cap.pointer_checked(Some(name))?;
    // Safety: a capsule named `NOTIFIER` holds a `Box<Arc<Notifier>>` (ffi.rs), alive
    // while the capsule is (we hold a reference to it for this call).
    Ok(unsafe { (*(p.as_ptr() as *const Arc<Notifier>)).clone() })
}

/// `_chan_attach_loop(loop, notifier, callback) -> bool`: if `loop` is interloop's
/// loop, it drains `notifier` each iteration and calls `callback(tokens)`.
#[pyfunction]
pub(crate) fn _chan_attach_loop(
    loop_: &Bound<'_, PyAny>,
    notifier: &Bound<'_, PyAny>,
    callback: Py<PyAny>,
) -> PyResult<bool> {
    if !loop_.is_instance_of::<LoopCore>() {
        return Ok(false);
    }
    let n = notifier_of(notifier)?;
    let key = Arc::as_ptr(&n) as usize;
    LoopCore::attach_to(loop_, key, n, callback)
}
