//! The worker-side native module: a multi-phase-init extension module object
//! (`Py_mod_multiple_interpreters = Py_MOD_PER_INTERPRETER_GIL_SUPPORTED`) created
//! by each worker in its own interpreter with `PyModule_FromDefAndSpec2`, and put in
//! that interpreter's `sys.modules` as `interloop._interloop`, so that
//! `import interloop` inside a worker finds it instead of the PyO3 module (which
//! CPython refuses to load in an own-GIL interpreter).
//!
//! Module state: one pointer to the worker's [`WorkerCtx`], set by the worker
//! thread after creation and cleared before the interpreter ends.
use super::ctx::{interrupt, WorkerCtx};
use crate::capi::*;
use crate::sched::{kind, Completion, Origin};
use pyo3::ffi;
use std::os::raw::{c_int, c_void};
use std::sync::OnceLock;

type Args = *mut *mut ffi::PyObject;

static DEF: OnceLock<DefPtr> = OnceLock::new();

/// Builds and initialises the module definition once; call with the main GIL held
/// (from `#[pymodule]`), before any worker starts.
pub(crate) fn init_module_def() {
    DEF.get_or_init(|| {
        let methods = vec![
            method!(c"wake_fd", w_wake_fd, c"wake_fd() -> int: readable when there is news for this worker"),
            method!(c"index", w_index, c"index() -> int: this worker's index"),
            method!(c"ready", w_ready, c"ready(error: str|None): tell the caller this worker started"),
            method!(c"poll", w_poll, c"poll() -> (shutdown, cancels, completions)"),
            method!(c"take", w_take, c"take(spin_us=0) -> (job, fn_bytes, args_bytes, flags, local) | None; registers for a wake-up if None; may first spin up to spin_us if a job was taken since the last spin"),
            method!(c"busy", w_busy, c"busy(): no capacity now, do not wake me for new jobs"),
            method!(c"has_work", w_has_work, c"has_work() -> bool: some job is queued somewhere"),
            method!(c"complete", w_complete, c"complete(job, kind, data: bytes); a local job (see take) is not routed: its spawner is this worker, which resolved it"),
            method!(c"spawn", w_spawn, c"spawn(payload: bytes, flags: int) -> job: nested submission to this worker's deque"),
            method!(c"cancel", w_cancel, c"cancel(job, interrupt: bool) -> bool"),
            method!(c"set_interrupt_handler", w_set_interrupt_handler, c"set_interrupt_handler(fn): fn(job) -> exception|None"),
            method!(c"channel_module", crate::channel::channel_module, c"channel_module() -> the channel functions for this interpreter (src/channel)"),
            method!(c"serve_module", crate::serve::serve_module, c"serve_module() -> the HTTP server functions for this interpreter (src/serve)"),
            method!(c"current_frames", w_current_frames, c"current_frames() -> {thread id: frame} for this interpreter's threads only (replaces sys._current_frames in workers)"),
            method!(c"_test_panic", crate::capi::entry::test_panic, c"_test_panic(message): test-only, panics in Rust with message"),
            ffi::PyMethodDef::zeroed(),
        ];
        let slots = vec![
            ffi::PyModuleDef_Slot { slot: ffi::Py_mod_exec, value: w_exec as *mut c_void },
            ffi::PyModuleDef_Slot {
                slot: ffi::Py_mod_multiple_interpreters,
                value: ffi::Py_MOD_PER_INTERPRETER_GIL_SUPPORTED,
            },
            ffi::PyModuleDef_Slot { slot: 0, value: std::ptr::null_mut() },
        ];
        // Safety: called from the #[pymodule] init (main GIL held), before workers.
        unsafe {
            leak_module_def(
                c"interloop._interloop",
                c"interloop's worker-side native module (raw FFI, one per sub-interpreter)",
                std::mem::size_of::<*const WorkerCtx>() as ffi::Py_ssize_t,
                methods,
                Some(slots),
            )
        }
    });
}

/// Creates the module in the current (worker) interpreter, points its state at
/// `ctx` and registers it in `sys.modules`. Returns a new reference or NULL.
///
/// # Safety
/// The worker's GIL must be held; `ctx` must outlive every call into the module
/// (the worker clears the state with [`detach`] before `ctx` is dropped).
pub(crate) unsafe fn create(ctx: *const WorkerCtx) -> *mut ffi::PyObject {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        let Some(def) = DEF.get() else {
            return set_error(
                ffi::PyExc_SystemError,
                "interloop worker module not initialised",
            );
        };
        let def = def.0;
        let globals = ffi::PyDict_New();
        if globals.is_null() {
            return globals;
        }
        ffi::PyDict_SetItemString(globals, c"__builtins__".as_ptr(), ffi::PyEval_GetBuiltins());
        let spec = ffi::PyRun_String(
            c"__import__('importlib.machinery').machinery.ModuleSpec('interloop._interloop', None)"
                .as_ptr(),
            ffi::Py_eval_input,
            globals,
            globals,
        );
        ffi::Py_DecRef(globals);
        if spec.is_null() {
            return spec;
        }
        let m = ffi::PyModule_FromDefAndSpec2(def, spec, ffi::PYTHON_API_VERSION);
        ffi::Py_DecRef(spec);
        if m.is_null() {
            return m;
        }
        // The state is allocated (zeroed) by `PyModule_ExecDef`, so set it afterwards.
        if ffi::PyModule_ExecDef(m, def) != 0 {
            ffi::Py_DecRef(m);
            return std::ptr::null_mut();
        }
        let state = ffi::PyModule_GetState(m) as *mut *const WorkerCtx;
        if state.is_null() {
            ffi::Py_DecRef(m);
            set_error(
                ffi::PyExc_SystemError,
                "interloop worker module has no state",
            );
            return std::ptr::null_mut();
        }
        *state = ctx;
        let modules = ffi::PyImport_GetModuleDict();
        if ffi::PyDict_SetItemString(modules, c"interloop._interloop".as_ptr(), m) != 0 {
            ffi::Py_DecRef(m);
            return std::ptr::null_mut();
        }
        m
    }
}

/// Points the module state at nothing: later calls raise `RuntimeError`.
///
/// # Safety
/// `m` is a module made by [`create`]; the worker's GIL is held.
pub(crate) unsafe fn detach(m: *mut ffi::PyObject) {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        let state = ffi::PyModule_GetState(m) as *mut *const WorkerCtx;
        if !state.is_null() {
            *state = std::ptr::null();
        }
    }
}

// Safety of the `w_*` functions: CPython calls them with the worker interpreter's GIL
// held, on a thread of that interpreter, with `m` the module object and `a[..n]`
// valid borrowed arguments (METH_FASTCALL). `ctx()` refuses calls from any thread but
// the worker's own and after `detach`, so the `WorkerCtx` they reach is alive and not
// shared with another thread (its `crossbeam_deque::Worker` is single-threaded).

/// # Safety
/// `Py_mod_exec`: called by CPython with the worker's GIL held, `m` the new module.
unsafe extern "C" fn w_exec(m: *mut ffi::PyObject) -> c_int {
    // Safety: CPython runs `Py_mod_exec` with the worker's GIL held and `m` the new module.
    unsafe {
        crate::capi::entry(c"worker module exec", || {
            let v = ffi::PyUnicode_FromString(c"0.1.0".as_ptr());
            if v.is_null() || ffi::PyModule_AddObjectRef(m, c"__version__".as_ptr(), v) != 0 {
                return -1;
            }
            ffi::Py_DecRef(v);
            if ffi::PyModule_AddIntConstant(m, c"_IS_WORKER".as_ptr(), 1) != 0
                || !crate::wire::add_constants(m)
            {
                return -1;
            }
            0
        })
    }
}

/// The worker context of module `m`, or a Python `RuntimeError`.
///
/// [`ctx`], after checking a `w_*` function's argument count.
///
/// # Safety
/// As [`ctx`].
unsafe fn ctx_with_args<'a>(
    m: *mut ffi::PyObject,
    n: ffi::Py_ssize_t,
    want: ffi::Py_ssize_t,
    name: &str,
) -> Option<&'a WorkerCtx> {
    // Safety: as `ctx` (this function's contract).
    unsafe {
        let c = ctx(m)?;
        nargs(n, want, name).then_some(c)
    }
}

/// # Safety
/// The worker's GIL is held; `m` is a module made by [`create`].
unsafe fn ctx<'a>(m: *mut ffi::PyObject) -> Option<&'a WorkerCtx> {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        let state = ffi::PyModule_GetState(m) as *mut *const WorkerCtx;
        if state.is_null() || (*state).is_null() {
            set_error(
                ffi::PyExc_RuntimeError,
                "the interloop worker is shutting down",
            );
            return None;
        }
        let c = &**state;
        if !c.on_own_thread() {
            set_error(
                ffi::PyExc_RuntimeError,
                "interloop worker functions must be called from the worker's own thread",
            );
            return None;
        }
        Some(c)
    }
}

/// # Safety
/// The contract of the `w_*` functions (above). Needs no worker context: any thread
/// of the worker's interpreter may call it, as it may call `sys._current_frames`.
unsafe fn w_current_frames(
    _m: *mut ffi::PyObject,
    _a: Args,
    _n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: the caller holds this interpreter's GIL (the contract above).
    unsafe { super::frames::current_frames() }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_wake_fd(m: *mut ffi::PyObject, _a: Args, _n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx(m) else {
            return std::ptr::null_mut();
        };
        ffi::PyLong_FromLong(c.slot().wake.raw() as _)
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_index(m: *mut ffi::PyObject, _a: Args, _n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx(m) else {
            return std::ptr::null_mut();
        };
        u64_(c.me as u64)
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_ready(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx_with_args(m, n, 1, "ready") else {
            return std::ptr::null_mut();
        };
        c.start.pass(c.me);
        let err = *a;
        let (k, data) = if err == ffi::Py_None() {
            (kind::WORKER_READY, Vec::new())
        } else {
            let mut len: ffi::Py_ssize_t = 0;
            let p = ffi::PyUnicode_AsUTF8AndSize(err, &mut len);
            if p.is_null() {
                return std::ptr::null_mut();
            }
            (
                kind::WORKER_FAILED,
                std::slice::from_raw_parts(p as *const u8, len as usize).to_vec(),
            )
        };
        c.sched.route(
            Origin::Caller,
            Completion {
                job: c.me as u64,
                kind: k,
                data,
            },
        );
        none()
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_poll(m: *mut ffi::PyObject, _a: Args, _n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx(m) else {
            return std::ptr::null_mut();
        };
        c.slot().wake.clear();
        c.sched.clear_notified(c.me);
        let inbox = c.sched.take_inbox(c.me);
        let cancels = list(
            inbox
                .cancels
                .iter()
                .map(|&(id, intr)| tuple(&[u64_(id), bool_(intr)]))
                .collect(),
        );
        let done = list(
            inbox
                .completions
                .iter()
                .map(|x| {
                    tuple(&[
                        u64_(x.job),
                        ffi::PyLong_FromLong(x.kind as _),
                        bytes(&x.data),
                    ])
                })
                .collect(),
        );
        tuple(&[bool_(inbox.shutdown), cancels, done])
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_take(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx(m) else {
            return std::ptr::null_mut();
        };
        // Optional argument: how long (µs) to spin for a job before registering for a
        // wake-up. Granted only once per job taken (right after activity, never idle).
        let spin_us = if n >= 1 {
            let Some(v) = arg_u64(*a) else {
                return std::ptr::null_mut();
            };
            v
        } else {
            0
        };
        let spin = if spin_us > 0 && c.took.replace(false) {
            std::time::Duration::from_micros(spin_us)
        } else {
            Default::default()
        };
        let Some(job) = c.sched.take_spinning(c.me, &c.local, spin) else {
            return none();
        };
        c.took.set(true);
        let (fnb, argsb) = split_payload(&job.payload);
        tuple(&[
            u64_(job.ctl.id),
            bytes(fnb),
            bytes(argsb),
            ffi::PyLong_FromLong(job.flags as _),
            // spawned by this very worker: the driver resolves it in place
            bool_(job.ctl.origin == Origin::Worker(c.me)),
        ])
    }
}

/// Wire format (`_wire.dumps_job`): u32 LE length, the pickled function, then the
/// pickled `(args, kwargs)` or nothing. Split here: two slices in Rust cost less than
/// slicing and `int.from_bytes` in the driver. A payload not made by `dumps_job`
/// gives an empty function part, which fails that job (unpickling), not the worker.
fn split_payload(p: &[u8]) -> (&[u8], &[u8]) {
    let Some((head, rest)) = p.split_first_chunk::<4>() else {
        return (&[], p);
    };
    let n = u32::from_le_bytes(*head) as usize;
    if n > rest.len() {
        return (&[], p);
    }
    rest.split_at(n)
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_busy(m: *mut ffi::PyObject, _a: Args, _n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx(m) else {
            return std::ptr::null_mut();
        };
        c.sched.set_busy(c.me);
        none()
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_has_work(m: *mut ffi::PyObject, _a: Args, _n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx(m) else {
            return std::ptr::null_mut();
        };
        bool_(c.sched.has_work())
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_complete(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx_with_args(m, n, 3, "complete") else {
            return std::ptr::null_mut();
        };
        // A job done before the worker reported ready (a plain function run while
        // the loop does not exist yet): it is serving already, the next worker may
        // start.
        c.start.pass(c.me);
        let (Some(id), Some(k), Some(data)) =
            (arg_u64(*a), arg_u64(*a.add(1)), arg_bytes(*a.add(2)))
        else {
            return std::ptr::null_mut();
        };
        c.sched.complete(c.me, id, k as u8, data.to_vec());
        none()
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_spawn(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx_with_args(m, n, 2, "spawn") else {
            return std::ptr::null_mut();
        };
        let (Some(data), Some(flags)) = (arg_bytes(*a), arg_u64(*a.add(1))) else {
            return std::ptr::null_mut();
        };
        let id = c.sched.submit(
            data.to_vec(),
            flags as u32,
            Origin::Worker(c.me),
            Some(&c.local),
        );
        u64_(id)
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_cancel(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx_with_args(m, n, 2, "cancel") else {
            return std::ptr::null_mut();
        };
        let Some(id) = arg_u64(*a) else {
            return std::ptr::null_mut();
        };
        let intr = ffi::PyObject_IsTrue(*a.add(1)) == 1;
        let running = c.sched.cancel(id, intr);
        if let (Some(w), true) = (running, intr) {
            interrupt(&c.sched, w, id);
        }
        bool_(running.is_some())
    }
}

/// # Safety
/// The contract of the `w_*` functions (above).
unsafe fn w_set_interrupt_handler(
    m: *mut ffi::PyObject,
    a: Args,
    n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // Safety: the contract of the `w_*` functions, above.
    unsafe {
        let Some(c) = ctx_with_args(m, n, 1, "set_interrupt_handler") else {
            return std::ptr::null_mut();
        };
        c.set_interrupt_handler(*a);
        none()
    }
}
