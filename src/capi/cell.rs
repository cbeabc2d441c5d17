//! `GilCell`: interior mutability for state that only the GIL guards.
//!
//! The loop's ready queue, timer heap and I/O table are touched on every callback, so a
//! lock per access would cost more than the work. Every entry point that reaches them
//! is a Python method (it holds the main interpreter's GIL), and the GIL serialises
//! them. The one rule that keeps this sound: **no Python code may run while the cell
//! is borrowed** — not a call, not a `drop` of a `Py<T>` that could free an object
//! with a `__del__`. Closures passed to [`GilCell::with`] therefore only move `Py`
//! values in and out; whatever must be dropped is returned and dropped by the caller.
//! A re-entrant borrow (a bug) panics instead of aliasing.
use pyo3::Python;
use std::cell::{Cell, UnsafeCell};

pub(crate) struct GilCell<T> {
    value: UnsafeCell<T>,
    borrowed: Cell<bool>,
}

// Safety: all access goes through `with`/`try_with`, which take a `Python<'_>` token,
// so the caller holds the main interpreter's GIL (PyO3's safe API never runs on worker
// threads: see `interp`). The module is declared `gil_used = true`, so on a
// free-threaded build CPython re-enables the GIL before loading us. Holding the GIL
// serialises every access across threads; `borrowed` catches re-entrancy on one thread.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(crate) fn new(value: T) -> Self {
        GilCell {
            value: UnsafeCell::new(value),
            borrowed: Cell::new(false),
        }
    }

    /// Runs `f` with exclusive access. `f` must not run Python code (see module docs).
    #[inline]
    pub(crate) fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        assert!(
            !self.borrowed.get(),
            "interloop: GilCell borrowed re-entrantly"
        );
        self.borrowed.set(true);
        struct Release<'a>(&'a Cell<bool>);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _release = Release(&self.borrowed);
        // Safety: the GIL is held (token) and `borrowed` was false, so no other `&mut`
        // to the value exists on this thread, and no other thread can be here.
        f(unsafe { &mut *self.value.get() })
    }

    /// Like `with`, but returns `None` instead of panicking if already borrowed. Used by
    /// the GC's traverse, which can run at any allocation.
    #[inline]
    pub(crate) fn try_with<R>(&self, py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.borrowed.get() {
            return None;
        }
        Some(self.with(py, f))
    }

    /// For `tp_traverse` only, which CPython calls with the GIL held and must not call
    /// into Python; returns `None` if a borrow is active (then nothing is visited).
    pub(crate) fn traverse_with<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        if self.borrowed.get() {
            return None;
        }
        // Safety: the GC holds the GIL and no `&mut` is live (`borrowed` is false);
        // `f` only reads.
        Some(f(unsafe { &*self.value.get() }))
    }
}
