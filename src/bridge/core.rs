//! `PoolCore`: the caller's (main interpreter's) handle on one pool of workers.
//! Safe PyO3 API only; it never runs on a worker thread.
use super::completions::Completions;
use crate::event_loop::LoopCore;
use crate::sched::{kind, Origin, Scheduler, JOB_FLAG_INTERRUPT};
use crate::wire::{PAYLOAD_FILL, PAYLOAD_STASHED};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What `PoolCore.resolve` returns: `(kept, rest, error)`.
type Resolved<'py> = (
    Option<Bound<'py, PyList>>,
    Bound<'py, PyList>,
    Option<Bound<'py, PyAny>>,
);

/// Native half of `interloop.Pool`: worker threads, the scheduler, the completions.
#[pyclass(module = "interloop._interloop", frozen)]
pub(crate) struct PoolCore {
    sched: Arc<Scheduler>,
    completions: Arc<Completions>,
    threads: Mutex<Vec<Option<JoinHandle<()>>>>,
    /// Large bytes results being copied into the caller's objects.
    fills: super::fill::Fills,
}

#[pymethods]
impl PoolCore {
    /// Starts `workers` threads; each creates its own-GIL interpreter and runs the
    /// driver with `config` (JSON made by `interloop._pool`).
    #[new]
    fn new(py: Python<'_>, workers: usize, config: Vec<u8>) -> PyResult<Self> {
        if workers == 0 {
            return Err(PyRuntimeError::new_err("a pool needs at least one worker"));
        }
        let completions =
            Arc::new(Completions::new().map_err(|e| PyOSError::new_err(e.to_string()))?);
        let (sched, locals) = Scheduler::new(workers, Box::new(completions.clone()))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let config = Arc::new(crate::interp::WorkerConfig {
            driver_code: driver_code(py)?,
            config: config.into(),
            start: Default::default(),
        });
        let mut threads = Vec::with_capacity(workers);
        for (i, local) in locals.into_iter().enumerate() {
            let (s, c) = (sched.clone(), config.clone());
            let h = std::thread::Builder::new()
                .name(format!("interloop-worker-{i}"))
                .spawn(move || crate::interp::worker_main(s, i, local, c))
                .map_err(|e| PyOSError::new_err(e.to_string()))?;
            threads.push(Some(h));
        }
        Ok(PoolCore {
            sched,
            completions,
            threads: Mutex::new(threads),
            fills: Default::default(),
        })
    }

    /// If `loop_` is interloop's loop, it drains this pool's completions natively
    /// each iteration (no eventfd write, no reader callback) and calls
    /// `callback(None)` when there are some; returns whether it attached.
    fn attach_loop(
        slf: &Bound<'_, Self>,
        loop_: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
    ) -> PyResult<bool> {
        let source = slf.get().completions.clone();
        LoopCore::attach_to(loop_, slf.as_ptr() as usize, source, callback)
    }

    /// Undoes `attach_loop`; returns whether it was attached.
    fn detach_loop(slf: &Bound<'_, Self>, loop_: &Bound<'_, PyAny>) -> bool {
        LoopCore::detach_from(loop_, slf.as_ptr() as usize)
    }

    /// The fd that is readable when `drain()` has something.
    fn fd(&self) -> i32 {
        self.completions.fd()
    }

    fn workers(&self) -> usize {
        self.sched.workers()
    }

    /// Queues one job (`_wire.dumps_job`'s bytes); returns its id. `interrupt`
    /// sets the job's interrupt flag.
    #[pyo3(signature = (payload, interrupt, future=None))]
    fn submit(&self, payload: &[u8], interrupt: bool, future: Option<&Bound<'_, PyAny>>) -> u64 {
        let flags = if interrupt { JOB_FLAG_INTERRUPT } else { 0 };
        let id = self
            .sched
            .submit(payload.to_vec(), flags, Origin::Caller, None);
        if let Some(f) = future {
            gc_untrack(f);
        }
        id
    }

    /// Puts a job's future back under the cyclic GC (see `gc_untrack`).
    fn retrack(&self, future: &Bound<'_, PyAny>) {
        gc_retrack(future);
    }

    /// Cancels a job: removed if still queued, else its worker-side task is
    /// cancelled; with `interrupt`, CPU-bound code is interrupted too.
    /// Returns whether the job was running.
    #[pyo3(signature = (job, interrupt=false))]
    fn cancel(&self, job: u64, interrupt: bool) -> bool {
        match self.sched.cancel(job, interrupt) {
            Some(w) => {
                if interrupt {
                    crate::interp::interrupt(&self.sched, w, job);
                }
                true
            }
            None => false,
        }
    }

    /// A worker's large `bytes` (or `bytearray`) result, stashed under `sid`: starts
    /// copying it into a new object of this interpreter off the loop thread; a
    /// `FILLED` completion for `job` follows, then `take_filled(job)` gives it.
    #[pyo3(signature = (job, sid, bytearray=false))]
    fn fill(&self, py: Python<'_>, job: u64, sid: u64, bytearray: bool) -> PyResult<()> {
        self.fills.start(py, &self.completions, job, sid, bytearray)
    }

    /// The object of a `FILLED` completion (once); `None` if unknown.
    fn take_filled(&self, job: u64) -> Option<Py<PyAny>> {
        self.fills.take(job)
    }

    /// Every waiting completion as `[(job_id, kind, bytes), ...]`.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        self.completions.drain(py)
    }

    /// Drains the completions and resolves the plain ones here, natively: a result
    /// (kind 0, data not starting with `PAYLOAD_STASHED` or `PAYLOAD_FILL`) whose
    /// future is in `pending` (job id -> `JobFuture`, a dict of
    /// `interloop.Pool`) is popped from it (and from `stashes`, job id -> stash id of
    /// its arguments' buffers, now taken by a worker) and, unless already done, gets
    /// `_pool = None` and `set_result(fut, None)` for empty data, else
    /// `set_result(fut, loads(data))` (`set_exception(fut, e)` if `loads` raises);
    /// then if `sinks` (job id -> `MapSink` of an unordered map) has the job, it is
    /// popped and `sink.add(fut)` called. A result for a job no longer pending is
    /// dropped. This is `Pool._on_completions`'s loop without a Python frame, a tuple
    /// and an unpacking per job.
    ///
    /// Returns `(kept, rest, error)`: `kept` lists the resolved futures whose `_cb`
    /// is set (callbacks the pool keeps and runs in one batch), or is None; `rest`
    /// lists `(job_id, kind, bytes)` of every other completion, for Python's
    /// `_wire.classify`; `error` is None, or the first exception
    /// raised while resolving (the other completions are resolved all the same, so
    /// the caller can schedule `kept` and handle `rest` before raising it).
    #[allow(clippy::too_many_arguments)]
    fn resolve<'py>(
        &self,
        py: Python<'py>,
        pending: &Bound<'py, PyDict>,
        sinks: &Bound<'py, PyDict>,
        stashes: &Bound<'py, PyDict>,
        set_result: &Bound<'py, PyAny>,
        set_exception: &Bound<'py, PyAny>,
        loads: &Bound<'py, PyAny>,
    ) -> PyResult<Resolved<'py>> {
        let batch = self.completions.take();
        let rest = PyList::empty(py);
        let mut kept: Option<Bound<'py, PyList>> = None;
        let mut first_err: Option<PyErr> = None;
        let none = py.None().into_bound(py);
        for c in batch {
            let r = (|| -> PyResult<()> {
                // The fast path of `_wire.classify`'s decision, which is written
                // once, in Python: a plain value (COMPLETION_OK whose data has no
                // buffers in the stash, so a dropped one needs no release) is
                // resolved here; every other completion goes to `Pool._on_completions`.
                if c.kind != kind::OK
                    || matches!(c.data.first(), Some(&PAYLOAD_STASHED | &PAYLOAD_FILL))
                {
                    return rest.append(super::completions::completion_tuple(py, &c)?);
                }
                let job = c.job.into_pyobject(py)?;
                let Some(fut) = pending.get_item(&job)? else {
                    return Ok(()); // no longer pending: dropped
                };
                pending.del_item(&job)?;
                gc_retrack(&fut);
                if !stashes.is_empty() && stashes.contains(&job)? {
                    stashes.del_item(&job)?; // a worker took the call's buffers
                }
                if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
                    return Ok(()); // cancelled by the caller: dropped
                }
                fut.setattr(intern!(py, "_pool"), &none)?;
                if c.data.is_empty() {
                    set_result.call1((&fut, &none))?; // None travels as empty data
                } else {
                    match loads.call1((PyBytes::new(py, &c.data),)) {
                        Ok(v) => set_result.call1((&fut, v))?,
                        Err(e) => set_exception.call1((&fut, e.into_value(py)))?,
                    };
                }
                if !fut.getattr(intern!(py, "_cb"))?.is_none() {
                    match &kept {
                        Some(k) => k.append(&fut)?,
                        None => kept = Some(PyList::new(py, [&fut])?),
                    }
                }
                if !sinks.is_empty() {
                    if let Some(sink) = sinks.get_item(&job)? {
                        sinks.del_item(&job)?;
                        sink.call_method1(intern!(py, "add"), (&fut,))?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        Ok((
            kept,
            rest,
            first_err.map(|e| e.into_value(py).into_bound(py).into_any()),
        ))
    }

    /// Spins up to `us` microseconds (GIL held) for a completion; returns whether one
    /// is waiting (then `drain()` has it). See `Completions::spin_wait`.
    fn spin(&self, us: u64) -> bool {
        self.completions
            .spin_wait(Duration::from_micros(us.min(1000)))
    }

    /// Blocks without the GIL until completions may be waiting (for threads).
    fn wait(&self, py: Python<'_>, timeout: f64) -> bool {
        let ms = if timeout < 0.0 {
            -1
        } else {
            (timeout * 1000.0).min(i32::MAX as f64) as i32
        };
        let c = self.completions.clone();
        py.detach(move || c.wait(ms))
    }

    /// Tells every worker to cancel what it runs and exit.
    fn shutdown(&self) {
        self.sched.shutdown();
    }

    /// Waits up to `timeout` seconds for the workers to exit, without the GIL
    /// (docs/design.md, trap 1: workers need the main GIL to tear down). Returns the stuck ones.
    fn join(&self, py: Python<'_>, timeout: f64) -> Vec<usize> {
        let sched = self.sched.clone();
        let stuck = py.detach(move || sched.wait_exited(Duration::from_secs_f64(timeout.max(0.0))));
        // Handles taken in their own statement (docs/design.md, trap 2), then joined without the GIL.
        let handles: Vec<JoinHandle<()>> = {
            let mut t = self.threads.lock();
            t.iter_mut()
                .enumerate()
                .filter(|(i, _)| !stuck.contains(i))
                .filter_map(|(_, h)| h.take())
                .collect()
        };
        py.detach(move || {
            for h in handles {
                let _ = h.join();
            }
        });
        stuck
    }

    /// Job ids running on worker `worker` (to name stuck work).
    fn running_on(&self, worker: usize) -> Vec<u64> {
        self.sched.running_on(worker)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.sched.snapshot();
        let d = PyDict::new(py);
        d.set_item("workers", s.workers)?;
        d.set_item("queued", s.queued)?;
        d.set_item("running", s.running)?;
        d.set_item("submitted", s.submitted)?;
        d.set_item("completed", s.completed)?;
        d.set_item("failed", s.failed)?;
        d.set_item("cancelled", s.cancelled)?;
        d.set_item("stolen", s.stolen)?;
        d.set_item("wakeups", s.wakeups)?;
        d.set_item("spins", s.spins)?;
        d.set_item("spin_hits", s.spin_hits)?;
        let lat = PyDict::new(py);
        let (count, mean, p50, p90, p99, max) = s.latency;
        lat.set_item("count", count)?;
        lat.set_item("mean_us", mean)?;
        lat.set_item("p50_us", p50)?;
        lat.set_item("p90_us", p90)?;
        lat.set_item("p99_us", p99)?;
        lat.set_item("max_us", max)?;
        d.set_item("latency", lat)?;
        Ok(d)
    }
}

/// Takes a pending job's future out of the cyclic GC's lists. While pending, the
/// pool's `_pending` dict holds it, so it cannot be cyclic garbage; untracked, the
/// collections that run while thousands of jobs are pending do not traverse it
/// (references from an untracked object count as external, which is safe). Every
/// path that takes a future out of `_pending` puts it back (`gc_retrack`), so a
/// finished future in a cycle is collected as usual.
fn gc_untrack(obj: &Bound<'_, PyAny>) {
    let p = obj.as_ptr();
    // SAFETY: the GIL is held (we have a `Bound`) and `p` is a live object.
    // PyObject_GC_IsTracked is defined for any object (0 for non-GC types), and
    // PyObject_GC_UnTrack is only called on a tracked object, i.e. one of a GC type.
    unsafe {
        if pyo3::ffi::PyObject_GC_IsTracked(p) == 1 {
            pyo3::ffi::PyObject_GC_UnTrack(p.cast());
        }
    }
}

/// Undoes `gc_untrack` (nothing if the object is tracked or not of a GC type).
pub(crate) fn gc_retrack(obj: &Bound<'_, PyAny>) {
    let p = obj.as_ptr();
    // SAFETY: the GIL is held and `p` is live. PyObject_GC_Track is only called on
    // an object whose type supports GC (PyObject_IS_GC) and that is not tracked:
    // tracking a tracked object is a fatal error.
    unsafe {
        if pyo3::ffi::PyObject_IS_GC(p) == 1 && pyo3::ffi::PyObject_GC_IsTracked(p) == 0 {
            pyo3::ffi::PyObject_GC_Track(p.cast());
        }
    }
}

/// The worker's modules (`interp::DRIVER_MODULES`) compiled and marshalled as one
/// tuple of code objects, once per process.
fn driver_code(py: Python<'_>) -> PyResult<Arc<[u8]>> {
    static CODE: std::sync::OnceLock<Arc<[u8]>> = std::sync::OnceLock::new();
    if let Some(c) = CODE.get() {
        return Ok(c.clone());
    }
    let compile = py.import("builtins")?.getattr("compile")?;
    let mut codes = Vec::with_capacity(crate::interp::DRIVER_MODULES.len());
    for m in &crate::interp::DRIVER_MODULES {
        let file = m.file.to_str().expect("module file names are ASCII");
        codes.push(compile.call1((m.source, file, "exec"))?);
    }
    let bytes: Vec<u8> = py
        .import("marshal")?
        .getattr("dumps")?
        .call1((PyTuple::new(py, codes)?,))?
        .extract()?;
    Ok(CODE.get_or_init(|| bytes.into()).clone())
}

/// Adds the pool's classes to `interloop._interloop`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::interp::init_module_def();
    m.add_class::<PoolCore>()?;
    super::frames::register(m)
}
