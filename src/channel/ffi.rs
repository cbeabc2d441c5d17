//! The channel's native functions, as one raw-FFI module object usable in *every*
//! interpreter: the main interpreter gets it as `interloop._interloop._chan`, a
//! worker gets it from its worker module (`channel_module()`). Raw `pyo3::ffi` only
//! (PyO3's safe API must not run on a worker thread), so both sides share one
//! implementation.
//!
//! Handles are capsules owning an `Arc`: a channel capsule (`Arc<Channel>`) and a
//! notifier capsule (`Arc<Notifier>`, one per waiting loop). A capsule belongs to
//! the interpreter that made it; only the Rust state behind it is shared.
use super::state::{self, Channel, Message, Notifier, RecvResult, SendResult, Side};
use crate::buffer::{self, Region};
use crate::capi::{arg_u64, leak_module_def, list, method, nargs, none, set_error, DefPtr};
use pyo3::ffi;
use std::ffi::CStr;
use std::os::raw::{c_char, c_void};
use std::sync::{Arc, OnceLock};

type Args = *mut *mut ffi::PyObject;

const CHAN: &CStr = c"interloop.channel";
pub(super) const NOTIFIER: &CStr = c"interloop.channel.notifier";

/// First byte of every queued message: how the receiver rebuilds it.
const TAG_PICKLE: u8 = 0;
const TAG_RAW: u8 = 1; // a `bytes` object, sent as is
const TAG_BUFFER: u8 = 2; // one buffer, by reference: the receiver gets a memoryview
const TAG_PICKLE_OOB: u8 = 3; // a pickle whose out-of-band buffers travel by reference

/// The side argument of `wait`, `unwait` and `wake`.
const SIDE_SEND: u64 = 0;
const SIDE_RECV: u64 = 1;

/// What `send` returns.
const SENT: i64 = 0;
const FULL: i64 = 1;
const CLOSED: i64 = 2;

/// The numbers above, exported on the channel module (so `_channel.py` does not
/// redefine them).
const CONSTANTS: &[(&CStr, i64)] = &[
    (c"SEND", SIDE_SEND as i64),
    (c"RECV", SIDE_RECV as i64),
    (c"SENT", SENT),
    (c"FULL", FULL),
    (c"CLOSED", CLOSED),
    (c"TAG_PICKLE", TAG_PICKLE as i64),
    (c"TAG_RAW", TAG_RAW as i64),
    (c"TAG_BUFFER", TAG_BUFFER as i64),
    (c"TAG_PICKLE_OOB", TAG_PICKLE_OOB as i64),
];

static DEF: OnceLock<DefPtr> = OnceLock::new();

/// Builds and initialises the module definition once; call with the main GIL held
/// before any worker starts (so workers never race on `PyModuleDef_Init`).
pub(crate) fn init_def() {
    buffer::view::init_spec();
    DEF.get_or_init(|| {
        let methods = vec![
            method!(c"new", c_new, c"new(maxsize) -> channel capsule"),
            method!(c"open", c_open, c"open(id, unpin) -> channel capsule; ValueError if it no longer exists"),
            method!(c"id", c_id, c"id(ch) -> int"),
            method!(c"pin", c_pin, c"pin(ch): a pickled copy is in flight (kept alive until opened with unpin)"),
            method!(c"send", c_send, c"send(ch, data: bytes, tag: int, bufs: sequence|None) -> 0 sent | 1 full | 2 closed; tag 0 pickle, 1 raw bytes, 2 one buffer (bufs[0]), 3 pickle with out-of-band bufs"),
            method!(c"recv", c_recv, c"recv(ch, loads, empty, closed) -> the next message (pickles rebuilt with loads), or empty / closed"),
            method!(c"spin_recv", c_spin_recv, c"spin_recv(ch, us) -> bool: spin (GIL released) up to us microseconds until a receive could proceed"),
            method!(c"wait", c_wait, c"wait(ch, side, notifier, token) -> bool: queued (False: proceed now)"),
            method!(c"unwait", c_unwait, c"unwait(ch, side, notifier, token) -> bool: removed (False: already woken)"),
            method!(c"wake", c_wake, c"wake(ch, side): wake one waiter of that side"),
            method!(c"close", c_close, c"close(ch) -> bool: it was open"),
            method!(c"info", c_info, c"info(ch) -> (queued, maxsize, closed, waiting receivers, waiting senders)"),
            method!(c"notifier", c_notifier, c"notifier() -> notifier capsule (one per waiting loop)"),
            method!(c"notifier_fd", c_notifier_fd, c"notifier_fd(n) -> int: readable when tokens are queued"),
            method!(c"notifier_drain", c_notifier_drain, c"notifier_drain(n) -> list of woken tokens"),
            method!(c"stash", c_stash, c"stash(bufs) -> id: park regions over these buffers until unstash(id)"),
            method!(c"unstash", c_unstash, c"unstash(id) -> list of read-only memoryviews, or None if already taken"),
            method!(c"stash_len", c_stash_len, c"stash_len() -> int: stash entries waiting to be taken (for tests)"),
            method!(c"buffer_address", c_buffer_address, c"buffer_address(obj) -> int: address of obj's buffer (to check zero-copy)"),
            method!(c"_test_panic", crate::capi::entry::test_panic, c"_test_panic(message): test-only, panics in Rust with message"),
            method!(c"notifier_close", c_notifier_close, c"notifier_close(n): its loop is gone; channels skip its waiters"),
            ffi::PyMethodDef::zeroed(),
        ];
        // Safety: called from the #[pymodule] init (main GIL held), before workers.
        unsafe {
            leak_module_def(
                c"interloop._chan",
                c"interloop's channel functions (raw FFI, usable in any interpreter)",
                0,
                methods,
                None,
            )
        }
    });
}

/// A new module object in the current interpreter; new reference or NULL. It
/// carries this interpreter's `SharedBuffer` type (the exporter of received
/// buffers) as an attribute.
///
/// # Safety
/// The current interpreter's GIL is held and `init_def` has run.
pub(crate) unsafe fn create_module() -> *mut ffi::PyObject {
    // Safety: GIL held and `init_def` ran (this function's contract).
    unsafe {
        let Some(def) = DEF.get() else {
            return set_error(
                ffi::PyExc_SystemError,
                "interloop channel module not initialised",
            );
        };
        let m = ffi::PyModule_Create2(def.0, ffi::PYTHON_API_VERSION);
        if m.is_null() {
            return m;
        }
        if !crate::capi::add_int_constants(m, CONSTANTS) {
            ffi::Py_DecRef(m);
            return std::ptr::null_mut();
        }
        let tp = buffer::view::new_type();
        if tp.is_null() || ffi::PyModule_AddObject(m, c"SharedBuffer".as_ptr(), tp) != 0 {
            if !tp.is_null() {
                ffi::Py_DecRef(tp);
            }
            ffi::Py_DecRef(m);
            return std::ptr::null_mut();
        }
        m
    }
}

/// This interpreter's exporter type, from the module (new reference) or NULL.
///
/// # Safety
/// The calling interpreter's GIL is held; `m` is a channel module of it.
unsafe fn view_type(m: *mut ffi::PyObject) -> *mut ffi::PyTypeObject {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe { ffi::PyObject_GetAttrString(m, c"SharedBuffer".as_ptr()) as *mut ffi::PyTypeObject }
}

/// A list of read-only memoryviews over `bufs` (new reference) or NULL.
///
/// # Safety
/// As [`view_type`].
unsafe fn views_of(m: *mut ffi::PyObject, bufs: Vec<Arc<Region>>) -> *mut ffi::PyObject {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        let tp = view_type(m);
        if tp.is_null() {
            return std::ptr::null_mut();
        }
        let items = bufs
            .into_iter()
            .map(|r| buffer::view::memoryview(tp, r))
            .collect();
        ffi::Py_DecRef(tp as *mut ffi::PyObject);
        list(items)
    }
}

/// Regions over each object of the sequence `seq` (None: no regions).
///
/// # Safety
/// As [`view_type`]; `seq` is a live object.
unsafe fn regions_of(m: *mut ffi::PyObject, seq: *mut ffi::PyObject) -> Option<Vec<Arc<Region>>> {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        if seq == ffi::Py_None() {
            return Some(Vec::new());
        }
        let fast = ffi::PySequence_Fast(seq, c"bufs must be a sequence".as_ptr());
        if fast.is_null() {
            return None;
        }
        let tp = view_type(m);
        if tp.is_null() {
            ffi::Py_DecRef(fast);
            return None;
        }
        let n = ffi::PySequence_Fast_GET_SIZE(fast);
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            match Region::from_object(ffi::PySequence_Fast_GET_ITEM(fast, i), tp) {
                Some(r) => out.push(r),
                None => {
                    out.clear();
                    ffi::Py_DecRef(tp as *mut ffi::PyObject);
                    ffi::Py_DecRef(fast);
                    return None;
                }
            }
        }
        ffi::Py_DecRef(tp as *mut ffi::PyObject);
        ffi::Py_DecRef(fast);
        Some(out)
    }
}

/// `channel_module()` of the worker module (a METH_FASTCALL function).
///
/// # Safety
/// The calling interpreter's GIL is held.
pub(crate) unsafe fn channel_module(
    _m: *mut ffi::PyObject,
    _a: *mut *mut ffi::PyObject,
    _n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // Safety: GIL held (contract); `init_def` ran when the main module loaded.
    unsafe { create_module() }
}

// --- helpers (every one requires the calling interpreter's GIL) --------------------

/// # Safety
/// The calling interpreter's GIL is held; `o` is a live object.
unsafe fn arg_side(o: *mut ffi::PyObject) -> Option<Side> {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        match arg_u64(o)? {
            SIDE_SEND => Some(Side::Send),
            SIDE_RECV => Some(Side::Recv),
            _ => {
                set_error(ffi::PyExc_ValueError, "side must be 0 (send) or 1 (recv)");
                None
            }
        }
    }
}

/// What a capsule of this module holds: an `Arc<Self>`, under a capsule name.
trait Capsuled: Send + Sync + 'static {
    /// The capsule's name (checked on every use).
    const NAME: &'static CStr;
    /// What the `TypeError` for a wrong argument says was expected.
    const EXPECTED: &'static str;
}

impl Capsuled for Channel {
    const NAME: &'static CStr = CHAN;
    const EXPECTED: &'static str = "expected a channel handle";
}

impl Capsuled for Notifier {
    const NAME: &'static CStr = NOTIFIER;
    const EXPECTED: &'static str = "expected a channel notifier handle";
}

/// # Safety
/// A capsule destructor: called by CPython with the GIL held, once, for a capsule
/// made by `capsule::<T>`.
unsafe extern "C" fn drop_capsule<T: Capsuled>(cap: *mut ffi::PyObject) {
    // Safety: CPython runs a capsule's destructor with the GIL held, once, with the capsule.
    unsafe {
        crate::capi::entry(c"channel capsule destructor", || {
            let p = ffi::PyCapsule_GetPointer(cap, T::NAME.as_ptr());
            if !p.is_null() {
                // Safety: the pointer came from `Box::into_raw` in `capsule`; the
                // destructor runs once. Dropping an `Arc` touches no Python object.
                drop(Box::from_raw(p as *mut Arc<T>));
            } else {
                ffi::PyErr_Clear();
            }
        })
    }
}

/// A new capsule owning `handle` (new reference) or NULL.
///
/// # Safety
/// The calling interpreter's GIL is held.
unsafe fn capsule<T: Capsuled>(handle: Arc<T>) -> *mut ffi::PyObject {
    // Safety: GIL held (this function's contract); `p` is ours until the capsule
    // owns it, and freed here if it could not be made.
    unsafe {
        let p = Box::into_raw(Box::new(handle));
        let cap = ffi::PyCapsule_New(p as *mut c_void, T::NAME.as_ptr(), Some(drop_capsule::<T>));
        if cap.is_null() {
            drop(Box::from_raw(p));
        }
        cap
    }
}

/// The handle behind a capsule (borrowed for the call), or a `TypeError`.
///
/// # Safety
/// As [`arg_side`]; the reference must not outlive `o` (the capsule keeps the `Arc`).
unsafe fn handle<'a, T: Capsuled>(o: *mut ffi::PyObject) -> Option<&'a Arc<T>> {
    // Safety: GIL held and `o` live (this function's contract); a capsule with
    // `T::NAME` holds a `Box<Arc<T>>` made by `capsule`.
    unsafe {
        let p = ffi::PyCapsule_GetPointer(o, T::NAME.as_ptr());
        if p.is_null() {
            ffi::PyErr_Clear();
            set_error(ffi::PyExc_TypeError, T::EXPECTED);
            return None;
        }
        Some(&*(p as *const Arc<T>))
    }
}

/// The channel behind a capsule; see [`handle`].
///
/// # Safety
/// As [`handle`].
unsafe fn chan<'a>(o: *mut ffi::PyObject) -> Option<&'a Arc<Channel>> {
    // Safety: as `handle` (this function's contract).
    unsafe { handle(o) }
}

/// The handle that is a `c_*` function's first argument, after checking the
/// argument count.
///
/// # Safety
/// The contract of the `c_*` functions (below).
unsafe fn handle_arg<'a, T: Capsuled>(
    a: Args,
    n: ffi::Py_ssize_t,
    want: ffi::Py_ssize_t,
    name: &str,
) -> Option<&'a Arc<T>> {
    // Safety: `a[0]` is valid once the count is checked (this function's contract).
    unsafe {
        if nargs(n, want, name) {
            handle(*a)
        } else {
            None
        }
    }
}

// Safety of the `c_*` functions (each one's contract, as METH_FASTCALL functions
// called through `capi::method!`): CPython calls them with the calling interpreter's
// GIL held and `a[..n]` valid borrowed arguments; `nargs` is checked before any
// argument is read. A capsule's `Arc` lives at least as long as the
// capsule, which the caller's argument keeps alive for the call. Channel locks are
// short and never held while calling into Python.

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_new(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 1, "new") {
            return std::ptr::null_mut();
        }
        let Some(maxsize) = arg_u64(*a) else {
            return std::ptr::null_mut();
        };
        capsule(state::create(maxsize as usize))
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_open(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 2, "open") {
            return std::ptr::null_mut();
        }
        let Some(id) = arg_u64(*a) else {
            return std::ptr::null_mut();
        };
        let unpin = ffi::PyObject_IsTrue(*a.add(1)) == 1;
        match state::open(id, unpin) {
            Some(ch) => capsule(ch),
            None => set_error(
                ffi::PyExc_ValueError,
                &format!(
                    "interloop channel {id} no longer exists (every handle on it was dropped)"
                ),
            ),
        }
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_id(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(ch) = handle_arg::<Channel>(a, n, 1, "id") else {
            return std::ptr::null_mut();
        };
        ffi::PyLong_FromUnsignedLongLong(ch.id)
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_pin(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(ch) = handle_arg::<Channel>(a, n, 1, "pin") else {
            return std::ptr::null_mut();
        };
        state::pin(ch);
        none()
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_send(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(ch) = handle_arg::<Channel>(a, n, 4, "send") else {
            return std::ptr::null_mut();
        };
        let mut p: *mut c_char = std::ptr::null_mut();
        let mut len: ffi::Py_ssize_t = 0;
        if ffi::PyBytes_AsStringAndSize(*a.add(1), &mut p, &mut len) != 0 {
            return std::ptr::null_mut();
        }
        let Some(tag) = arg_u64(*a.add(2)) else {
            return std::ptr::null_mut();
        };
        if tag > TAG_PICKLE_OOB as u64 {
            return set_error(ffi::PyExc_ValueError, "unknown message tag");
        }
        let Some(bufs) = regions_of(m, *a.add(3)) else {
            return std::ptr::null_mut();
        };
        if tag == TAG_BUFFER as u64 && bufs.len() != 1 {
            return set_error(
                ffi::PyExc_ValueError,
                "a buffer message carries exactly one buffer",
            );
        }
        // The bytes are copied into Rust-owned memory (one tag byte, then the data);
        // buffers travel as regions: only Rust data crosses between interpreters.
        let src = std::slice::from_raw_parts(p as *const u8, len as usize);
        let mut data = Vec::with_capacity(src.len() + 1);
        data.push(tag as u8);
        data.extend_from_slice(src);
        // A refused message drops its regions here, in the sender (released at once).
        let r = match ch.try_send(Message { data, bufs }) {
            SendResult::Sent => SENT,
            SendResult::Full => FULL,
            SendResult::Closed => CLOSED,
        };
        ffi::PyLong_FromLong(r as _)
    }
}

/// `recv(ch, loads, empty, closed)`: the next message (raw bytes as they were, a
/// buffer as a read-only memoryview, pickles through `loads(data)` or, with
/// out-of-band buffers, `loads(data, memoryviews)`), else the `empty` or `closed`
/// object given.
///
/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_recv(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(ch) = handle_arg::<Channel>(a, n, 4, "recv") else {
            return std::ptr::null_mut();
        };
        let Message { data: d, bufs } = match ch.try_recv() {
            RecvResult::Item(msg) => msg,
            RecvResult::Empty => {
                ffi::Py_IncRef(*a.add(2));
                return *a.add(2);
            }
            RecvResult::Closed => {
                ffi::Py_IncRef(*a.add(3));
                return *a.add(3);
            }
        };
        let tag = d[0];
        let views = if bufs.is_empty() {
            std::ptr::null_mut()
        } else {
            let l = views_of(m, bufs);
            if l.is_null() {
                return l;
            }
            l
        };
        if tag == TAG_BUFFER {
            let mv = ffi::PyList_GetItem(views, 0); // borrowed; the list has one item
            ffi::Py_IncRef(mv);
            ffi::Py_DecRef(views);
            return mv;
        }
        let body = &d[1..];
        let b = ffi::PyBytes_FromStringAndSize(
            body.as_ptr() as *const c_char,
            body.len() as ffi::Py_ssize_t,
        );
        if b.is_null() || tag == TAG_RAW {
            if !views.is_null() {
                ffi::Py_DecRef(views);
            }
            return b;
        }
        let r = if views.is_null() {
            ffi::PyObject_CallOneArg(*a.add(1), b)
        } else {
            let args = [b, views];
            let r = ffi::PyObject_Vectorcall(*a.add(1), args.as_ptr(), 2, std::ptr::null_mut());
            ffi::Py_DecRef(views);
            r
        };
        ffi::Py_DecRef(b);
        r
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_stash(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 1, "stash") {
            return std::ptr::null_mut();
        }
        let Some(bufs) = regions_of(m, *a) else {
            return std::ptr::null_mut();
        };
        ffi::PyLong_FromUnsignedLongLong(buffer::stash(bufs))
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_unstash(m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 1, "unstash") {
            return std::ptr::null_mut();
        }
        let Some(id) = arg_u64(*a) else {
            return std::ptr::null_mut();
        };
        match buffer::unstash(id) {
            Some(bufs) => views_of(m, bufs),
            None => none(),
        }
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_stash_len(_m: *mut ffi::PyObject, _a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 0, "stash_len") {
            return std::ptr::null_mut();
        }
        ffi::PyLong_FromSize_t(buffer::stash_len())
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_buffer_address(
    _m: *mut ffi::PyObject,
    a: Args,
    n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 1, "buffer_address") {
            return std::ptr::null_mut();
        }
        let mut pb: ffi::Py_buffer = std::mem::zeroed();
        if ffi::PyObject_GetBuffer(*a, &mut pb, ffi::PyBUF_FULL_RO) != 0 {
            return std::ptr::null_mut();
        }
        let addr = pb.buf as usize;
        ffi::PyBuffer_Release(&mut pb);
        ffi::PyLong_FromSize_t(addr)
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_spin_recv(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 2, "spin_recv") {
            return std::ptr::null_mut();
        }
        let (Some(ch), Some(us)) = (chan(*a), arg_u64(*a.add(1))) else {
            return std::ptr::null_mut();
        };
        let ch = ch.clone();
        // The GIL is released while spinning: a producer in this interpreter (another
        // thread) can run. The channel is plain Rust data; `ch` is our own `Arc`.
        let ts = ffi::PyEval_SaveThread();
        let ok = ch.spin_until_receivable(std::time::Duration::from_micros(us.min(1000)));
        ffi::PyEval_RestoreThread(ts);
        ffi::PyBool_FromLong(ok as _)
    }
}

/// `wait` and `unwait`: reads (channel, side, notifier, token) and returns
/// `op(...)` as a bool, or NULL with an exception set.
///
/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn wait_call(
    a: Args,
    n: ffi::Py_ssize_t,
    name: &str,
    op: fn(&Channel, Side, &Arc<Notifier>, u64) -> bool,
) -> *mut ffi::PyObject {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        if !nargs(n, 4, name) {
            return std::ptr::null_mut();
        }
        // All four are read, as before, whatever the first ones gave.
        let (ch, side, nt, token) = (
            chan(*a),
            arg_side(*a.add(1)),
            handle::<Notifier>(*a.add(2)),
            arg_u64(*a.add(3)),
        );
        match (ch, side, nt, token) {
            (Some(ch), Some(side), Some(nt), Some(token)) => {
                ffi::PyBool_FromLong(op(ch, side, nt, token) as _)
            }
            _ => std::ptr::null_mut(),
        }
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_wait(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe { wait_call(a, n, "wait", Channel::wait) }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_unwait(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe { wait_call(a, n, "unwait", Channel::unwait) }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_wake(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 2, "wake") {
            return std::ptr::null_mut();
        }
        let (Some(ch), Some(side)) = (chan(*a), arg_side(*a.add(1))) else {
            return std::ptr::null_mut();
        };
        ch.wake_one(side);
        none()
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_close(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(ch) = handle_arg::<Channel>(a, n, 1, "close") else {
            return std::ptr::null_mut();
        };
        ffi::PyBool_FromLong(ch.close() as _)
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_info(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(ch) = handle_arg::<Channel>(a, n, 1, "info") else {
            return std::ptr::null_mut();
        };
        let (len, closed, recvs, sends) = ch.info();
        let t = ffi::PyTuple_New(5);
        if t.is_null() {
            return t;
        }
        let items = [
            ffi::PyLong_FromSize_t(len),
            ffi::PyLong_FromSize_t(ch.maxsize),
            ffi::PyBool_FromLong(closed as _),
            ffi::PyLong_FromSize_t(recvs),
            ffi::PyLong_FromSize_t(sends),
        ];
        for (i, it) in items.into_iter().enumerate() {
            if it.is_null() {
                ffi::Py_DecRef(t);
                return std::ptr::null_mut();
            }
            ffi::PyTuple_SetItem(t, i as ffi::Py_ssize_t, it); // steals `it`
        }
        t
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_notifier(_m: *mut ffi::PyObject, _a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        if !nargs(n, 0, "notifier") {
            return std::ptr::null_mut();
        }
        let nt = match Notifier::new() {
            Ok(nt) => Arc::new(nt),
            Err(e) => return set_error(ffi::PyExc_OSError, &e.to_string()),
        };
        capsule(nt)
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_notifier_fd(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(nt) = handle_arg::<Notifier>(a, n, 1, "notifier_fd") else {
            return std::ptr::null_mut();
        };
        ffi::PyLong_FromLong(nt.fd() as _)
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_notifier_drain(
    _m: *mut ffi::PyObject,
    a: Args,
    n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(nt) = handle_arg::<Notifier>(a, n, 1, "notifier_drain") else {
            return std::ptr::null_mut();
        };
        let tokens = nt.drain();
        let l = ffi::PyList_New(tokens.len() as ffi::Py_ssize_t);
        if l.is_null() {
            return l;
        }
        for (i, t) in tokens.into_iter().enumerate() {
            let v = ffi::PyLong_FromUnsignedLongLong(t);
            if v.is_null() {
                ffi::Py_DecRef(l);
                return std::ptr::null_mut();
            }
            ffi::PyList_SetItem(l, i as ffi::Py_ssize_t, v); // steals `v`
        }
        l
    }
}

/// # Safety
/// The contract of the `c_*` functions (above).
unsafe fn c_notifier_close(
    _m: *mut ffi::PyObject,
    a: Args,
    n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // Safety: the contract of the `c_*` functions, above.
    unsafe {
        let Some(nt) = handle_arg::<Notifier>(a, n, 1, "notifier_close") else {
            return std::ptr::null_mut();
        };
        nt.close();
        none()
    }
}
