use super::core::{let_go, LoopCore, Ready};
use super::handle::RunError;
use super::objref::release;
use super::sources::{Attached, CompletionSource};
use super::timers::monotonic;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// asyncio caps a single select() at one day; so do we.
pub(super) const MAX_POLL_TIMEOUT: f64 = 24.0 * 3600.0;

/// With callbacks ready and only the internal self-pipe registered, the reactor is
/// polled every this many iterations, which bounds how long a signal handler waits
/// behind a chain of callbacks without paying a system call per callback.
pub(super) const INTERNAL_POLL_EVERY: u32 = 64;

/// With callbacks ready and descriptors of its own registered, the loop polls the
/// reactor (without blocking) every this many iterations, not every iteration: an
/// iteration right after one that polled runs its callbacks without a system call.
/// In a request/response exchange the iteration after the I/O events runs the
/// coroutines those events woke (which write the answers), and the one after that
/// blocks for the next events: one `epoll_wait` per exchange instead of two, as in
/// libuv, whose loop runs the ready callbacks just before its blocking poll. An I/O
/// event waits at most one extra iteration while callbacks keep the loop busy.
pub(super) const IO_POLL_EVERY: u32 = 2;

impl LoopCore {
    /// One iteration; see the module docs.
    #[inline(always)]
    pub(super) fn run_once(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
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
    pub(super) fn busy(&self, py: Python<'_>) -> Option<usize> {
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
    pub(super) fn poll_every(&self) -> u32 {
        if self.external_io.load(Ordering::Relaxed) > 0 {
            IO_POLL_EVERY
        } else {
            INTERNAL_POLL_EVERY
        }
    }

    /// Steps 1 to 4 of an iteration: timers, the poll, native sources. Returns how
    /// many ready callbacks this iteration runs.
    #[inline(never)]
    pub(super) fn prepare(&self, slf: &Bound<'_, Self>) -> PyResult<usize> {
        let py = slf.py();
        let (has_sources, sources_pending) = self.sources.with(py, |v| {
            (!v.is_empty(), v.iter().any(|a| a.source.has_pending()))
        });
        // 1: clean the heap's top.
        let (has_ready, next_when) = self.drop_cancelled_timers(py);
        // 2: how long we may block.
        let ready = has_ready || sources_pending;
        // A patched clock is read only when a timer bounds the wait.
        let patched_now = if ready || next_when.is_none() {
            None
        } else {
            Self::patched_now(slf)?
        };
        let timeout = self.poll_timeout(ready, next_when, patched_now);
        // 3 + 4a: poll, when due, and queue the handles of ready descriptors.
        if self.poll_due(timeout) {
            self.poll_reactor(py, timeout)?;
        }
        // 4b: completions from native sources (their callbacks resolve futures).
        if has_sources {
            self.drain_sources(slf)?;
        }
        // 4c: timers that are due.
        Ok(self.queue_due_timers(py, Self::patched_now(slf)?))
    }

    /// Step 2: zero if callbacks are ready (or a source has completions, or the loop
    /// is stopping), else until the earliest timer, else forever (`None`).
    #[inline(always)]
    fn poll_timeout(
        &self,
        ready: bool,
        next_when: Option<f64>,
        patched_now: Option<f64>,
    ) -> Option<Duration> {
        if ready || self.stopping.load(Ordering::Relaxed) {
            Some(Duration::ZERO)
        } else {
            next_when.map(|w| {
                let now = patched_now.unwrap_or_else(monotonic);
                Duration::from_secs_f64((w - now).clamp(0.0, MAX_POLL_TIMEOUT))
            })
        }
    }

    /// Step 3's decision: a blocking poll always; a non-blocking one only every
    /// `poll_every()` iterations (see `IO_POLL_EVERY`). Counts the iteration.
    #[inline(always)]
    fn poll_due(&self, timeout: Option<Duration>) -> bool {
        // Only the loop's thread, holding the GIL, touches the count: a load and a
        // store, not a locked read-modify-write.
        let since = self.since_poll.load(Ordering::Relaxed) + 1;
        let poll_now = timeout != Some(Duration::ZERO) || since >= self.poll_every();
        self.since_poll
            .store(if poll_now { 0 } else { since }, Ordering::Relaxed);
        poll_now
    }

    /// Step 5: runs the first `ntodo` ready callbacks (what the steps before queued;
    /// not what those callbacks queue in turn).
    #[inline(always)]
    pub(super) fn run_ready(&self, slf: &Bound<'_, Self>, ntodo: usize) -> PyResult<()> {
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
                        let res = self.run_debug(slf, h.bind(py).as_any(), || h.get().invoke(py));
                        if h.get().is_io() {
                            release(py, h);
                        } else {
                            drop(h.get().take_callback(py));
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
                        // `_run` reports the callback's exception itself; what
                        // escapes it leaves the loop.
                        self.run_debug(slf, obj, || {
                            obj.call_method0("_run").map(drop).map_err(RunError::Fatal)
                        })?;
                    } else {
                        obj.call_method0("_run")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Debug mode, for native and foreign handles alike: `_current_handle` is set
    /// while `run` runs the handle (the default exception handler shows its creation
    /// traceback), a callback's exception goes to the exception handler, and slow
    /// callbacks are logged.
    fn run_debug(
        &self,
        slf: &Bound<'_, Self>,
        handle: &Bound<'_, PyAny>,
        run: impl FnOnce() -> Result<(), RunError>,
    ) -> PyResult<()> {
        let py = slf.py();
        slf.setattr("_current_handle", handle)?;
        let t0 = monotonic();
        let res = run();
        let dt = monotonic() - t0;
        slf.setattr("_current_handle", py.None())?;
        match res {
            Ok(()) => {}
            Err(RunError::Fatal(e)) => return Err(e),
            Err(RunError::Callback(e)) => {
                slf.call_method1("_handle_callback_exception", (handle, e.value(py)))?;
            }
        }
        let limit: f64 = slf
            .getattr("slow_callback_duration")?
            .extract()
            .unwrap_or(0.1);
        if dt >= limit {
            slf.call_method1("_warn_slow_callback", (handle, dt))?;
        }
        Ok(())
    }

    pub(super) fn drain_sources(&self, slf: &Bound<'_, Self>) -> PyResult<()> {
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
    pub(crate) fn attach_source(
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

    /// [`Self::attach_source`] if `loop_` is interloop's loop; returns whether it is
    /// (a producer with another loop goes on waking it through its eventfd).
    pub(crate) fn attach_to(
        loop_: &Bound<'_, PyAny>,
        key: usize,
        source: Arc<dyn CompletionSource>,
        callback: Py<PyAny>,
    ) -> PyResult<bool> {
        let Ok(lp) = loop_.cast::<LoopCore>() else {
            return Ok(false);
        };
        lp.get().attach_source(loop_.py(), key, source, callback)?;
        Ok(true)
    }

    /// [`Self::detach_source`] if `loop_` is interloop's loop.
    pub(crate) fn detach_from(loop_: &Bound<'_, PyAny>, key: usize) -> bool {
        match loop_.cast::<LoopCore>() {
            Ok(lp) => lp.get().detach_source(loop_.py(), key),
            Err(_) => false,
        }
    }

    /// Detaches the source attached under `key`; returns whether there was one.
    pub(crate) fn detach_source(&self, py: Python<'_>, key: usize) -> bool {
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
}
