//! Large `bytes`/`bytearray` results, copied into the caller's object off its loop.
//!
//! A worker's `bytes` result must become a `bytes` of the caller's interpreter: one
//! copy, into memory the caller has just allocated. On a VM most of that copy's time
//! is page faults on the fresh memory, and done by the caller's loop thread the
//! copies of all results line up on that one thread. So the caller only allocates
//! the object (which touches none of its pages) and a copier thread fills it from
//! the worker's buffer (a region, see `crate::buffer`), then
//! posts a `FILLED` completion for the job; the caller resolves the future with the
//! object then. The copies of several results run in parallel, and the worker's own
//! buffer is released (and its memory reused) as soon as its copy is done.
//!
//! Until `FILLED` the object lives only here, out of Python's reach (nothing can read
//! it half-written), and no copy outlives its pool: the pool's `Drop` waits for its
//! copies to finish before the objects can be freed. CPython does the same thing
//! itself when `os.read` fills a new `bytes` with the GIL released.
use super::completions::Completions;
use crate::buffer::Region;
use crate::sched::{kind, Completion, CompletionSink};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Results being filled, per pool.
#[derive(Default)]
pub(crate) struct Fills {
    /// job -> the caller's new object, until its copy is done and taken.
    objects: Mutex<HashMap<u64, Py<PyAny>>>,
    /// Copies queued or running.
    in_flight: Arc<AtomicUsize>,
}

struct Copy {
    /// Start of the destination object's storage (`len` bytes, nobody else writes it).
    dst: usize,
    region: Arc<Region>,
    sink: Arc<Completions>,
    job: u64,
    in_flight: Arc<AtomicUsize>,
}

/// The copier threads: plain threads (no interpreter), as many as there are CPUs (at
/// most 4), started on first use and parked on the queue while there is nothing to
/// copy.
fn copier() -> &'static crossbeam_channel::Sender<Copy> {
    static TX: OnceLock<crossbeam_channel::Sender<Copy>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Copy>();
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4);
        for i in 0..n {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("interloop-copier-{i}"))
                .spawn(move || {
                    for c in rx {
                        let len = c.region.len();
                        // Safety: `dst` is the storage of an object of exactly `len`
                        // bytes that `Fills::objects` keeps alive and unread until the
                        // FILLED completion below is drained (and the pool's `Drop`
                        // waits for `in_flight`); the region's bytes stay valid while
                        // `c.region` lives. They do not overlap (fresh allocation).
                        unsafe {
                            std::ptr::copy_nonoverlapping(c.region.as_ptr(), c.dst as *mut u8, len)
                        };
                        // Released here, on no interpreter's thread: the region hands
                        // its buffer back to the worker (see `Region::drop`).
                        drop(c.region);
                        c.sink.push(Completion {
                            job: c.job,
                            kind: kind::FILLED,
                            data: Vec::new(),
                        });
                        c.in_flight.fetch_sub(1, Ordering::Release);
                    }
                });
        }
        tx
    })
}

impl Fills {
    /// Takes the single region stashed under `sid` and starts filling a new `bytes`
    /// (or `bytearray` if `bytearray`) of the same length with it; a `FILLED`
    /// completion for `job` follows on `sink`.
    pub(crate) fn start(
        &self,
        py: Python<'_>,
        sink: &Arc<Completions>,
        job: u64,
        sid: u64,
        bytearray: bool,
    ) -> PyResult<()> {
        let Some(mut bufs) = crate::buffer::unstash(sid) else {
            return Err(PyRuntimeError::new_err(
                "the buffer of this result was already released (was it cancelled?)",
            ));
        };
        let region = match (bufs.pop(), bufs.is_empty()) {
            (Some(r), true) => r,
            _ => {
                return Err(PyValueError::new_err(
                    "a filled result has exactly one buffer",
                ))
            }
        };
        let len = region.len() as ffi::Py_ssize_t;
        // Safety: GIL held (token). A NULL source makes an uninitialised object of
        // `len` bytes (malloc'd: its pages are not touched yet); `from_owned_ptr_or_err`
        // takes the new reference or the error. The storage pointer is valid while the
        // object lives.
        let (obj, dst) = unsafe {
            if bytearray {
                let o = Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyByteArray_FromStringAndSize(std::ptr::null(), len),
                )?;
                let p = ffi::PyByteArray_AsString(o.as_ptr());
                (o, p)
            } else {
                let o = Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyBytes_FromStringAndSize(std::ptr::null(), len),
                )?;
                let p = ffi::PyBytes_AsString(o.as_ptr());
                (o, p)
            }
        };
        let old = self.objects.lock().insert(job, obj.unbind());
        drop(old);
        if len == 0 {
            // Nothing to copy: complete at once.
            sink.push(Completion {
                job,
                kind: kind::FILLED,
                data: Vec::new(),
            });
            return Ok(());
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let c = Copy {
            dst: dst as usize,
            region,
            sink: sink.clone(),
            job,
            in_flight: self.in_flight.clone(),
        };
        if copier().send(c).is_err() {
            unreachable!("the copier queue is never closed");
        }
        Ok(())
    }

    /// The filled object of `job` (after its `FILLED` completion), once.
    pub(crate) fn take(&self, job: u64) -> Option<Py<PyAny>> {
        self.objects.lock().remove(&job)
    }

    /// Waits for this pool's copies to finish (before their objects may be freed).
    /// Copies never need a GIL, so this may be called holding one.
    pub(crate) fn wait_idle(&self) {
        let mut i = 0u32;
        while self.in_flight.load(Ordering::Acquire) != 0 {
            i = i.wrapping_add(1);
            crate::sched::spin_pause(i);
        }
    }
}

impl Drop for Fills {
    fn drop(&mut self) {
        self.wait_idle();
    }
}
