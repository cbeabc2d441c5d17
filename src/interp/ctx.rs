//! A worker's context (what its module's functions reach through the module state)
//! and interrupts: a pending call that raises `CancelledError` in a job that runs
//! CPU-bound code and never awaits.
use crate::capi::_PyEval_AddPendingCall;
use crate::sched::{Job, Scheduler, WorkerSlot};
use crossbeam_deque::Worker;
use pyo3::ffi;
use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::sync::Arc;
use std::thread::ThreadId;

/// Everything the worker-side module needs; lives on the worker thread's stack.
pub(crate) struct WorkerCtx {
    pub(crate) sched: Arc<Scheduler>,
    pub(crate) start: Arc<super::worker::StartGate>,
    pub(crate) me: usize,
    pub(crate) local: Worker<Job>,
    thread: ThreadId,
    interrupt_handler: Cell<*mut ffi::PyObject>,
    /// A job was taken since the last spin (`take(spin_us)` spins only then).
    pub(crate) took: Cell<bool>,
}

impl WorkerCtx {
    /// The context of worker `me`, made on (and only usable from) its own thread.
    pub(crate) fn new(
        sched: Arc<Scheduler>,
        me: usize,
        local: Worker<Job>,
        start: Arc<super::worker::StartGate>,
    ) -> Self {
        WorkerCtx {
            sched,
            start,
            me,
            local,
            thread: std::thread::current().id(),
            interrupt_handler: Cell::new(std::ptr::null_mut()),
            took: Cell::new(false),
        }
    }

    pub(crate) fn slot(&self) -> &WorkerSlot {
        &self.sched.slots[self.me]
    }

    pub(crate) fn on_own_thread(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    /// # Safety
    /// The worker's GIL is held; `f` is an object of the worker interpreter.
    pub(crate) unsafe fn set_interrupt_handler(&self, f: *mut ffi::PyObject) {
        // Safety: GIL held and arguments live (this function's contract).
        unsafe {
            ffi::Py_IncRef(f);
            let old = self.interrupt_handler.replace(f);
            if !old.is_null() {
                ffi::Py_DecRef(old);
            }
            HANDLER.with(|h| h.set(f));
        }
    }

    /// Drops the interrupt handler; pending interrupts that run later do nothing.
    ///
    /// # Safety
    /// The worker's GIL is held (the handler is an object of its interpreter).
    pub(crate) unsafe fn clear_interrupt_handler(&self) {
        // Safety: GIL held and arguments live (this function's contract).
        unsafe {
            HANDLER.with(|h| h.set(std::ptr::null_mut()));
            let h = self.interrupt_handler.replace(std::ptr::null_mut());
            if !h.is_null() {
                ffi::Py_DecRef(h);
            }
        }
    }
}

thread_local! {
    /// The driver's interrupt handler (borrowed from `WorkerCtx`), for pending calls.
    static HANDLER: Cell<*mut ffi::PyObject> = const { Cell::new(std::ptr::null_mut()) };
}

/// Interrupts job `job` on worker `w` even if it never awaits: schedules a pending
/// call in that worker's interpreter; the driver's handler raises `CancelledError`
/// in the job if it is the code running right now.
pub(crate) fn interrupt(sched: &Scheduler, w: usize, job: u64) {
    let interp = sched.slots[w].interp.lock();
    if *interp == 0 {
        return;
    }
    let arg = Box::into_raw(Box::new(job)) as *mut c_void;
    // Safety: the interpreter is alive while `interp` is non-zero and we hold its
    // lock (the worker zeroes it under the lock before `Py_EndInterpreter`).
    // `_PyEval_AddPendingCall` may be called from any thread; it takes the
    // interpreter's pending-calls lock. `arg` is freed by `run_interrupt`, or leaked
    // if the interpreter ends first (8 bytes).
    unsafe {
        _PyEval_AddPendingCall(
            *interp as *mut ffi::PyInterpreterState,
            run_interrupt,
            arg,
            0,
        )
    };
}

/// # Safety
/// A pending call: run by CPython with this interpreter's GIL held; `arg` came from
/// `Box::into_raw` in `interrupt` and is used once.
unsafe extern "C" fn run_interrupt(arg: *mut c_void) -> c_int {
    // Safety: pending calls run with this interpreter's GIL held; `arg` came from `interrupt`.
    unsafe {
        crate::capi::entry(c"worker interrupt", || {
            // Safety: `arg` came from `Box::into_raw` in `interrupt` and is used once.
            let job = *Box::from_raw(arg as *mut u64);
            let h = HANDLER.with(|h| h.get());
            if h.is_null() {
                return 0; // not the worker's driver thread, or shutting down
            }
            // Safety: pending calls run with this interpreter's GIL held, on a thread of
            // this interpreter; `h` is a live object of it (a strong ref in `WorkerCtx`).
            let id = ffi::PyLong_FromUnsignedLongLong(job);
            if id.is_null() {
                return -1;
            }
            let r = ffi::PyObject_CallOneArg(h, id);
            ffi::Py_DecRef(id);
            if r.is_null() {
                return -1;
            }
            if r == ffi::Py_None() {
                ffi::Py_DecRef(r);
                return 0;
            }
            // The handler returned an exception instance: raise it in the running code.
            ffi::PyErr_SetRaisedException(r); // steals `r`
            -1
        })
    }
}
