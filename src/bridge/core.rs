//! `PoolCore`: the caller's (main interpreter's) handle on one pool of workers.
//! Safe PyO3 API only; it never runs on a worker thread.
use super::Completions;
use crate::sched::{Origin, Scheduler};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Native half of `interloop.Pool`: worker threads, the scheduler, the completions.
#[pyclass(module = "interloop._interloop", frozen)]
pub struct PoolCore {
    sched: Arc<Scheduler>,
    completions: Arc<Completions>,
    threads: Mutex<Vec<Option<JoinHandle<()>>>>,
    /// Large bytes results being copied into the caller's objects.
    fills: super::fill::Fills,
}

impl PoolCore {
    /// For interloop's own loop: drain completions natively instead of via the fd.
    pub fn completions(&self) -> Arc<Completions> {
        self.completions.clone()
    }
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

    /// The fd that is readable when `drain()` has something.
    fn fd(&self) -> i32 {
        self.completions.fd()
    }

    fn workers(&self) -> usize {
        self.sched.workers()
    }

    /// Queues one job (`_worker.dumps_job`'s bytes); returns its id. `interrupt`
    /// sets the job's interrupt flag.
    fn submit(&self, payload: &[u8], interrupt: bool) -> u64 {
        self.sched
            .submit(payload.to_vec(), interrupt as u32, Origin::Caller, None)
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
    /// (trap 1: workers need the main GIL to tear down). Returns the stuck ones.
    fn join(&self, py: Python<'_>, timeout: f64) -> Vec<usize> {
        let sched = self.sched.clone();
        let stuck = py.detach(move || sched.wait_exited(Duration::from_secs_f64(timeout.max(0.0))));
        // Handles taken in their own statement (trap 2), then joined without the GIL.
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

/// The worker driver compiled and marshalled, once per process.
fn driver_code(py: Python<'_>) -> PyResult<Arc<[u8]>> {
    static CODE: std::sync::OnceLock<Arc<[u8]>> = std::sync::OnceLock::new();
    if let Some(c) = CODE.get() {
        return Ok(c.clone());
    }
    let code = py.import("builtins")?.getattr("compile")?.call1((
        crate::interp::DRIVER_SRC,
        "interloop/_worker.py",
        "exec",
    ))?;
    let bytes: Vec<u8> = py
        .import("marshal")?
        .getattr("dumps")?
        .call1((code,))?
        .extract()?;
    Ok(CODE.get_or_init(|| bytes.into()).clone())
}

/// Adds the pool's classes to `interloop._interloop`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::interp::init_module_def();
    m.add_class::<PoolCore>()?;
    Ok(())
}
