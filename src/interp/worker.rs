//! One worker thread: create an own-GIL interpreter, run the driver, tear down.
//!
//! # Worker life cycle
//! 1. `PyThreadState_New(main interpreter)` + `PyEval_RestoreThread`: take the main
//!    GIL briefly (the caller's loop releases it while it waits in epoll).
//! 2. `Py_NewInterpreterFromConfig` with an own GIL. On success this thread holds
//!    the new interpreter's GIL and the main GIL is released. On failure (3.12 does
//!    not re-take the main GIL: docs/design.md, trap 3) report `WORKER_FAILED` and end.
//! 3. Publish the `PyInterpreterState*` (for interrupts), create the worker module
//!    (`module::create`), execute the embedded `DRIVER_MODULES` (`interloop._wire`,
//!    then `interloop._worker`) and call `main(native_module, config)`. It returns at shutdown.
//! 4. Unpublish the interpreter (no more pending calls are added), drop the
//!    interrupt handler, post `WORKER_EXITED`, `Py_EndInterpreter`.
//! 5. `PyEval_RestoreThread(main_ts)`, `PyThreadState_Clear`,
//!    `PyThreadState_DeleteCurrent`, then `mark_exited` (the caller joins).
use super::ctx::WorkerCtx;
use super::module;
use crate::capi;
use crate::sched::{kind, Completion, Job, Origin, Scheduler};
use crossbeam_deque::Worker;
use pyo3::ffi;
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A Python module a worker executes at start.
pub(crate) struct DriverModule {
    pub(crate) name: &'static CStr,
    pub(crate) file: &'static CStr,
    pub(crate) source: &'static str,
}

/// The modules a worker executes at start, in this order, embedded so the worker
/// needs no file lookup: the wire format, then the driver, whose `main` runs the
/// worker. The driver takes `_wire` from `sys.modules` (see `_worker.py`).
pub(crate) const DRIVER_MODULES: [DriverModule; 2] = [
    DriverModule {
        name: c"interloop._wire",
        file: c"interloop/_wire.py",
        source: include_str!("../../python/interloop/_wire.py"),
    },
    DriverModule {
        name: c"interloop._worker",
        file: c"interloop/_worker.py",
        source: include_str!("../../python/interloop/_worker.py"),
    },
];

/// What a worker starts from: the `DRIVER_MODULES` compiled once by the caller and
/// marshalled as a tuple of code objects (compiling them in every worker would cost
/// milliseconds of its start-up), and the
/// pool's configuration (a marshalled dict made by `interloop._pool`).
pub(crate) struct WorkerConfig {
    pub(crate) driver_code: Arc<[u8]>,
    pub(crate) config: Arc<[u8]>,
    pub(crate) start: Arc<StartGate>,
}

/// Workers start one after the other: worker `k` creates its interpreter once worker
/// `k - 1` has reported ready, completed a job, or failed. Interpreters that start
/// at the same time slow each other down (creating one holds the main GIL, and two
/// interpreters of one process importing at once are slower than one after the
/// other), so a fresh pool's first worker, which serves its first jobs, starts as fast
/// as a lone interpreter would. A worker waits at most `START_TURN_MAX` for its turn.
#[derive(Default)]
pub(crate) struct StartGate {
    /// The first worker not yet allowed to start.
    next: std::sync::atomic::AtomicUsize,
    lock: parking_lot::Mutex<()>,
    turn: parking_lot::Condvar,
}

const START_TURN_MAX: std::time::Duration = std::time::Duration::from_millis(200);

impl StartGate {
    fn wait_turn(&self, me: usize) {
        let deadline = std::time::Instant::now() + START_TURN_MAX;
        let mut guard = self.lock.lock();
        while self.next.load(Ordering::Acquire) < me {
            if self.turn.wait_until(&mut guard, deadline).timed_out() {
                break;
            }
        }
    }

    /// Worker `me` is ready, serving, or gave up: the next one may start. Cheap once
    /// passed (called on every job a worker completes).
    pub(crate) fn pass(&self, me: usize) {
        if self.next.load(Ordering::Acquire) > me {
            return;
        }
        let _guard = self.lock.lock();
        self.next.fetch_max(me + 1, Ordering::AcqRel);
        self.turn.notify_all();
    }
}

/// Fault injection for the tests (tests/test_pool_faults.py): the interpreter of
/// worker `me` is not created when `INTERLOOP_TEST_REFUSE_INTERPRETER` lists `me`
/// (comma-separated), as if CPython had failed to create it. Nothing else can make
/// that failure happen on demand.
fn creation_refused_for_test(me: usize) -> bool {
    std::env::var("INTERLOOP_TEST_REFUSE_INTERPRETER")
        .is_ok_and(|v| v.split(',').any(|w| w.trim().parse() == Ok(me)))
}

pub(crate) fn worker_main(
    sched: Arc<Scheduler>,
    me: usize,
    local: Worker<Job>,
    config: Arc<WorkerConfig>,
) {
    config.start.wait_turn(me);
    let ctx = WorkerCtx::new(sched.clone(), me, local, config.start.clone());
    // Safety: this thread holds no GIL yet; `run` follows the numbered protocol
    // above, pairing every state change with its undo.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        run(&ctx, &config)
    }));
    if ran.is_err() {
        // A panic in this thread's own code (the entry points CPython calls catch
        // theirs): the interpreter is left as it is, but the pool learns of it and
        // no job waits for this worker.
        fail(&ctx, "the worker thread panicked (message on stderr)");
    }
    ctx.start.pass(me); // if it never reported ready
                        // Normally nothing is left; if the driver failed, its running jobs get an error
                        // instead of hanging their callers.
    for id in sched.running_on(me) {
        let msg = format!("interloop pool worker {me} stopped while running this job");
        sched.complete(me, id, kind::LOST, msg.into_bytes());
    }
    sched.mark_exited(me);
}

fn fail(ctx: &WorkerCtx, msg: &str) {
    ctx.sched.route(
        Origin::Caller,
        Completion {
            job: ctx.me as u64,
            kind: kind::WORKER_FAILED,
            data: msg.as_bytes().to_vec(),
        },
    );
}

/// Steps 1 to 5 of the worker life cycle.
///
/// # Safety
/// Called once, on a fresh thread that holds no Python thread state.
unsafe fn run(ctx: &WorkerCtx, config: &WorkerConfig) {
    // Safety: this function's contract (see its # Safety).
    unsafe {
        // Step 1.
        let main_ts = ffi::PyThreadState_New(ffi::PyInterpreterState_Main());
        ffi::PyEval_RestoreThread(main_ts);
        // Step 2.
        let cfg = ffi::PyInterpreterConfig {
            use_main_obmalloc: 0,
            allow_fork: 0,
            allow_exec: 1,
            allow_threads: 1,
            allow_daemon_threads: 0,
            check_multi_interp_extensions: 1,
            gil: ffi::PyInterpreterConfig_OWN_GIL,
        };
        let mut ts: *mut ffi::PyThreadState = std::ptr::null_mut();
        let status = if creation_refused_for_test(ctx.me) {
            ffi::PyStatus_Error(c"refused by INTERLOOP_TEST_REFUSE_INTERPRETER".as_ptr())
        } else {
            ffi::Py_NewInterpreterFromConfig(&mut ts, &cfg)
        };
        if ffi::PyStatus_Exception(status) != 0 {
            #[cfg(not(Py_3_13))]
            ffi::PyEval_RestoreThread(main_ts);
            ffi::PyThreadState_Clear(main_ts);
            ffi::PyThreadState_DeleteCurrent();
            fail(ctx, "could not create an own-GIL sub-interpreter");
            return;
        }
        // Step 3.
        *ctx.slot().interp.lock() = ffi::PyInterpreterState_Get() as usize;
        // This interpreter lends memory to zero-copy buffers; buffers handed back are
        // released here (a pending call, after a wake-up so it runs soon).
        let waker = (ctx.sched.clone(), ctx.me);
        let owner = crate::buffer::Owner::register_current(Some(Box::new(move || {
            waker.0.slots[waker.1].wake.notify()
        })));
        drive(ctx, config);
        // Step 4.
        owner.unregister();
        *ctx.slot().interp.lock() = 0;
        ctx.clear_interrupt_handler();
        ctx.sched.route(
            Origin::Caller,
            Completion {
                job: ctx.me as u64,
                kind: kind::WORKER_EXITED,
                data: Vec::new(),
            },
        );
        ffi::Py_EndInterpreter(ts);
        // Step 5.
        ffi::PyEval_RestoreThread(main_ts);
        ffi::PyThreadState_Clear(main_ts);
        ffi::PyThreadState_DeleteCurrent();
    }
}

/// Step 3: module, driver, `main()`. Errors are printed in the worker and reported.
///
/// # Safety
/// The worker interpreter's GIL is held by this thread; `ctx` outlives the call.
unsafe fn drive(ctx: &WorkerCtx, config: &WorkerConfig) {
    // Safety: this function's contract (see its # Safety).
    unsafe {
        let m = module::create(ctx);
        if m.is_null() {
            ffi::PyErr_Print();
            fail(ctx, "could not create the worker module");
            return;
        }
        let ok = run_driver(m, config);
        if !ok {
            ffi::PyErr_Print();
            fail(
                ctx,
                "the worker driver failed (traceback printed on stderr)",
            );
        }
        module::detach(m);
        ffi::Py_DecRef(m);
    }
}

/// # Safety
/// As `drive`; `m` is the worker module (a strong reference owned by the caller).
unsafe fn run_driver(m: *mut ffi::PyObject, config: &WorkerConfig) -> bool {
    // Safety: this function's contract (see its # Safety).
    unsafe {
        let codes = ffi::PyMarshal_ReadObjectFromString(
            config.driver_code.as_ptr() as *const _,
            config.driver_code.len() as ffi::Py_ssize_t,
        );
        if codes.is_null() {
            return false;
        }
        // Each module in order; `drv` ends as the last one, the driver.
        let mut drv: *mut ffi::PyObject = std::ptr::null_mut();
        for (i, module) in DRIVER_MODULES.iter().enumerate() {
            if !drv.is_null() {
                ffi::Py_DecRef(drv);
            }
            let code = ffi::PyTuple_GetItem(codes, i as ffi::Py_ssize_t); // borrowed
            drv = if code.is_null() {
                std::ptr::null_mut()
            } else {
                ffi::PyImport_ExecCodeModuleEx(module.name.as_ptr(), code, module.file.as_ptr())
            };
            if drv.is_null() {
                ffi::Py_DecRef(codes);
                return false;
            }
        }
        ffi::Py_DecRef(codes);
        let main = ffi::PyObject_GetAttrString(drv, c"main".as_ptr());
        ffi::Py_DecRef(drv);
        if main.is_null() {
            return false;
        }
        let cfg = capi::bytes(&config.config);
        ffi::Py_IncRef(m);
        let args = capi::tuple(&[m, cfg]);
        if args.is_null() {
            ffi::Py_DecRef(main);
            return false;
        }
        let r = ffi::PyObject_Call(main, args, std::ptr::null_mut());
        ffi::Py_DecRef(args);
        ffi::Py_DecRef(main);
        if r.is_null() {
            return false;
        }
        ffi::Py_DecRef(r);
        true
    }
}
