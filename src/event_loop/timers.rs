use super::core::{let_go, LoopCore, Ready};
use super::handle::{Handle, TimerInfo};
use super::timer_heap::MIN_CANCELLED_FOR_COMPACTION;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::atomic::Ordering;

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

pub(super) fn clock_resolution() -> f64 {
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

impl LoopCore {
    /// The time the loop's timers are measured against: the monotonic clock, or,
    /// once `time` was set on the instance (see `time_patched`), what `loop.time()`
    /// returns.
    #[inline(always)]
    pub(super) fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        Ok(Self::patched_now(slf)?.unwrap_or_else(monotonic))
    }

    /// `Some(loop.time())` if `time` was set on the instance, else `None`.
    #[inline(always)]
    pub(super) fn patched_now(slf: &Bound<'_, Self>) -> PyResult<Option<f64>> {
        if slf.get().time_patched.load(Ordering::Relaxed) {
            let t = slf.call_method0(pyo3::intern!(slf.py(), "time"))?;
            Ok(Some(t.extract::<f64>()?))
        } else {
            Ok(None)
        }
    }

    /// `call_later` and `call_at`: asyncio's checks, then a timer for `when`.
    pub(super) fn schedule_at<'py>(
        slf: &Bound<'py, Self>,
        when: f64,
        int_when: bool,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &str,
    ) -> PyResult<Bound<'py, Handle>> {
        let this = slf.get();
        this.check_schedule(slf, &callback, method, true)?;
        this.schedule_timer(slf, when, int_when, callback, args, context)
    }

    pub(super) fn schedule_timer<'py>(
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

    /// Lets go of cancelled timers taken out of the heap. Most iterations have none:
    /// an empty list owns no memory and is forgotten, skipping its drop glue.
    #[inline]
    pub(super) fn release_timers(&self, py: Python<'_>, garbage: Vec<Py<Handle>>) {
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

    /// Step 1: drops cancelled timers from the top of the heap (compacts the whole
    /// heap when they are many). Returns whether callbacks are ready and the
    /// earliest deadline left.
    #[inline(always)]
    pub(super) fn drop_cancelled_timers(&self, py: Python<'_>) -> (bool, Option<f64>) {
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
        (has_ready, next_when)
    }

    /// Step 4c: queues the timers that are due (no clock read when there are none).
    /// Returns how many callbacks are ready now: what this iteration runs.
    #[inline(always)]
    pub(super) fn queue_due_timers(&self, py: Python<'_>, patched_now: Option<f64>) -> usize {
        let (garbage, ntodo) = self.state.with(py, |s| {
            let mut garbage = Vec::new();
            if s.timers.is_empty() {
                return (garbage, s.ready.len());
            }
            let end = patched_now.unwrap_or_else(monotonic) + self.clock_resolution;
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
        ntodo
    }
}
