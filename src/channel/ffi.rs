//! The channel's native functions, as one raw-FFI module object usable in *every*
//! interpreter: the main interpreter gets it as `interloop._interloop._chan`, a
//! worker gets it from its worker module (`channel_module()`). Raw `pyo3::ffi` only
//! (PyO3's safe API must not run on a worker thread), so both sides share one
//! implementation.
//!
//! Handles are capsules owning an `Arc`: a channel capsule (`Arc<Channel>`) and a
//! notifier capsule (`Arc<Notifier>`, one per waiting loop). A capsule belongs to
//! the interpreter that made it; only the Rust state behind it is shared.
use super::state::{self, Channel, Notifier, RecvResult, SendResult, Side};
use crate::interp::ffi_util::{arg_u64, leak_module_def, method, nargs, none, set_error, DefPtr};
use pyo3::ffi;
use std::os::raw::{c_char, c_void};
use std::sync::{Arc, OnceLock};

type Args = *mut *mut ffi::PyObject;

const CHAN: &std::ffi::CStr = c"interloop.channel";
pub(super) const NOTIFIER: &std::ffi::CStr = c"interloop.channel.notifier";

/// First byte of every queued message: how the receiver rebuilds it.
const TAG_PICKLE: u8 = 0;
const TAG_RAW: u8 = 1; // a `bytes` object, sent as is

static DEF: OnceLock<DefPtr> = OnceLock::new();

/// Builds and initialises the module definition once; call with the main GIL held
/// before any worker starts (so workers never race on `PyModuleDef_Init`).
pub fn init_def() {
    DEF.get_or_init(|| {
        let methods = vec![
            method!(c"new", c_new, c"new(maxsize) -> channel capsule"),
            method!(c"open", c_open, c"open(id, unpin) -> channel capsule; ValueError if it no longer exists"),
            method!(c"id", c_id, c"id(ch) -> int"),
            method!(c"pin", c_pin, c"pin(ch): a pickled copy is in flight (kept alive until opened with unpin)"),
            method!(c"send", c_send, c"send(ch, data: bytes, raw: bool) -> 0 sent | 1 full | 2 closed; raw: data is the message itself, else its pickle"),
            method!(c"recv", c_recv, c"recv(ch, loads, empty, closed) -> the next message (pickles rebuilt with loads), or empty / closed"),
            method!(c"wait", c_wait, c"wait(ch, side, notifier, token) -> bool: queued (False: proceed now)"),
            method!(c"unwait", c_unwait, c"unwait(ch, side, notifier, token) -> bool: removed (False: already woken)"),
            method!(c"wake", c_wake, c"wake(ch, side): wake one waiter of that side"),
            method!(c"close", c_close, c"close(ch) -> bool: it was open"),
            method!(c"info", c_info, c"info(ch) -> (queued, maxsize, closed, waiting receivers, waiting senders)"),
            method!(c"notifier", c_notifier, c"notifier() -> notifier capsule (one per waiting loop)"),
            method!(c"notifier_fd", c_notifier_fd, c"notifier_fd(n) -> int: readable when tokens are queued"),
            method!(c"notifier_drain", c_notifier_drain, c"notifier_drain(n) -> list of woken tokens"),
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

/// A new module object in the current interpreter; new reference or NULL.
///
/// # Safety
/// The current interpreter's GIL is held and `init_def` has run.
pub unsafe fn create_module() -> *mut ffi::PyObject {
    let Some(def) = DEF.get() else {
        return set_error(ffi::PyExc_SystemError, "interloop channel module not initialised");
    };
    ffi::PyModule_Create2(def.0, ffi::PYTHON_API_VERSION)
}

/// `channel_module()` of the worker module (METH_FASTCALL signature).
///
/// # Safety
/// Called by CPython with the calling interpreter's GIL held.
pub unsafe extern "C" fn channel_module(
    _m: *mut ffi::PyObject,
    _a: *mut *mut ffi::PyObject,
    _n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    create_module()
}

// --- helpers (every one requires the calling interpreter's GIL) --------------------

unsafe fn arg_side(o: *mut ffi::PyObject) -> Option<Side> {
    match arg_u64(o)? {
        0 => Some(Side::Send),
        1 => Some(Side::Recv),
        _ => {
            set_error(ffi::PyExc_ValueError, "side must be 0 (send) or 1 (recv)");
            None
        }
    }
}

unsafe extern "C" fn drop_chan(cap: *mut ffi::PyObject) {
    let p = ffi::PyCapsule_GetPointer(cap, CHAN.as_ptr());
    if !p.is_null() {
        // Safety: the pointer came from `Box::into_raw` in `chan_capsule`; the
        // destructor runs once. Dropping an `Arc` touches no Python object.
        drop(Box::from_raw(p as *mut Arc<Channel>));
    } else {
        ffi::PyErr_Clear();
    }
}

unsafe extern "C" fn drop_notifier(cap: *mut ffi::PyObject) {
    let p = ffi::PyCapsule_GetPointer(cap, NOTIFIER.as_ptr());
    if !p.is_null() {
        // Safety: as in `drop_chan`.
        drop(Box::from_raw(p as *mut Arc<Notifier>));
    } else {
        ffi::PyErr_Clear();
    }
}

unsafe fn chan_capsule(ch: Arc<Channel>) -> *mut ffi::PyObject {
    let p = Box::into_raw(Box::new(ch));
    let cap = ffi::PyCapsule_New(p as *mut c_void, CHAN.as_ptr(), Some(drop_chan));
    if cap.is_null() {
        drop(Box::from_raw(p));
    }
    cap
}

/// The channel behind a capsule (borrowed for the call), or a `TypeError`.
unsafe fn chan<'a>(o: *mut ffi::PyObject) -> Option<&'a Arc<Channel>> {
    let p = ffi::PyCapsule_GetPointer(o, CHAN.as_ptr());
    if p.is_null() {
        ffi::PyErr_Clear();
        set_error(ffi::PyExc_TypeError, "expected a channel handle");
        return None;
    }
    Some(&*(p as *const Arc<Channel>))
}

unsafe fn notifier<'a>(o: *mut ffi::PyObject) -> Option<&'a Arc<Notifier>> {
    let p = ffi::PyCapsule_GetPointer(o, NOTIFIER.as_ptr());
    if p.is_null() {
        ffi::PyErr_Clear();
        set_error(ffi::PyExc_TypeError, "expected a channel notifier handle");
        return None;
    }
    Some(&*(p as *const Arc<Notifier>))
}

// Safety of the `c_*` functions: CPython calls them with the calling interpreter's
// GIL held and `a[..n]` valid borrowed arguments (METH_FASTCALL); `nargs` is checked
// before any argument is read. A capsule's `Arc` lives at least as long as the
// capsule, which the caller's argument keeps alive for the call. Channel locks are
// short and never held while calling into Python.

unsafe extern "C" fn c_new(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "new") {
        return std::ptr::null_mut();
    }
    let Some(maxsize) = arg_u64(*a) else { return std::ptr::null_mut() };
    chan_capsule(state::create(maxsize as usize))
}

unsafe extern "C" fn c_open(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 2, "open") {
        return std::ptr::null_mut();
    }
    let Some(id) = arg_u64(*a) else { return std::ptr::null_mut() };
    let unpin = ffi::PyObject_IsTrue(*a.add(1)) == 1;
    match state::open(id, unpin) {
        Some(ch) => chan_capsule(ch),
        None => set_error(
            ffi::PyExc_ValueError,
            &format!("interloop channel {id} no longer exists (every handle on it was dropped)"),
        ),
    }
}

unsafe extern "C" fn c_id(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "id") {
        return std::ptr::null_mut();
    }
    let Some(ch) = chan(*a) else { return std::ptr::null_mut() };
    ffi::PyLong_FromUnsignedLongLong(ch.id)
}

unsafe extern "C" fn c_pin(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "pin") {
        return std::ptr::null_mut();
    }
    let Some(ch) = chan(*a) else { return std::ptr::null_mut() };
    state::pin(ch);
    none()
}

unsafe extern "C" fn c_send(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 3, "send") {
        return std::ptr::null_mut();
    }
    let Some(ch) = chan(*a) else { return std::ptr::null_mut() };
    let mut p: *mut c_char = std::ptr::null_mut();
    let mut len: ffi::Py_ssize_t = 0;
    if ffi::PyBytes_AsStringAndSize(*a.add(1), &mut p, &mut len) != 0 {
        return std::ptr::null_mut();
    }
    let tag = if ffi::PyObject_IsTrue(*a.add(2)) == 1 { TAG_RAW } else { TAG_PICKLE };
    // Copied into Rust-owned memory (one tag byte, then the data): only Rust data
    // crosses between interpreters.
    let src = std::slice::from_raw_parts(p as *const u8, len as usize);
    let mut data = Vec::with_capacity(src.len() + 1);
    data.push(tag);
    data.extend_from_slice(src);
    let r = match ch.try_send(data) {
        SendResult::Sent => 0,
        SendResult::Full => 1,
        SendResult::Closed => 2,
    };
    ffi::PyLong_FromLong(r)
}

/// `recv(ch, loads, empty, closed)`: the next message (raw bytes as they were,
/// pickles through `loads`), else the `empty` or `closed` object given.
unsafe extern "C" fn c_recv(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 4, "recv") {
        return std::ptr::null_mut();
    }
    let Some(ch) = chan(*a) else { return std::ptr::null_mut() };
    let d = match ch.try_recv() {
        RecvResult::Item(d) => d,
        RecvResult::Empty => {
            ffi::Py_IncRef(*a.add(2));
            return *a.add(2);
        }
        RecvResult::Closed => {
            ffi::Py_IncRef(*a.add(3));
            return *a.add(3);
        }
    };
    let body = &d[1..];
    let b = ffi::PyBytes_FromStringAndSize(body.as_ptr() as *const c_char, body.len() as ffi::Py_ssize_t);
    if b.is_null() || d[0] == TAG_RAW {
        return b;
    }
    let r = ffi::PyObject_CallOneArg(*a.add(1), b);
    ffi::Py_DecRef(b);
    r
}

unsafe extern "C" fn c_wait(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 4, "wait") {
        return std::ptr::null_mut();
    }
    let (Some(ch), Some(side), Some(nt), Some(token)) =
        (chan(*a), arg_side(*a.add(1)), notifier(*a.add(2)), arg_u64(*a.add(3)))
    else {
        return std::ptr::null_mut();
    };
    ffi::PyBool_FromLong(ch.wait(side, nt, token) as _)
}

unsafe extern "C" fn c_unwait(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 4, "unwait") {
        return std::ptr::null_mut();
    }
    let (Some(ch), Some(side), Some(nt), Some(token)) =
        (chan(*a), arg_side(*a.add(1)), notifier(*a.add(2)), arg_u64(*a.add(3)))
    else {
        return std::ptr::null_mut();
    };
    ffi::PyBool_FromLong(ch.unwait(side, nt, token) as _)
}

unsafe extern "C" fn c_wake(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 2, "wake") {
        return std::ptr::null_mut();
    }
    let (Some(ch), Some(side)) = (chan(*a), arg_side(*a.add(1))) else { return std::ptr::null_mut() };
    ch.wake_one(side);
    none()
}

unsafe extern "C" fn c_close(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "close") {
        return std::ptr::null_mut();
    }
    let Some(ch) = chan(*a) else { return std::ptr::null_mut() };
    ffi::PyBool_FromLong(ch.close() as _)
}

unsafe extern "C" fn c_info(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "info") {
        return std::ptr::null_mut();
    }
    let Some(ch) = chan(*a) else { return std::ptr::null_mut() };
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

unsafe extern "C" fn c_notifier(_m: *mut ffi::PyObject, _a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 0, "notifier") {
        return std::ptr::null_mut();
    }
    let nt = match Notifier::new() {
        Ok(nt) => Arc::new(nt),
        Err(e) => return set_error(ffi::PyExc_OSError, &e.to_string()),
    };
    let p = Box::into_raw(Box::new(nt));
    let cap = ffi::PyCapsule_New(p as *mut c_void, NOTIFIER.as_ptr(), Some(drop_notifier));
    if cap.is_null() {
        drop(Box::from_raw(p));
    }
    cap
}

unsafe extern "C" fn c_notifier_fd(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "notifier_fd") {
        return std::ptr::null_mut();
    }
    let Some(nt) = notifier(*a) else { return std::ptr::null_mut() };
    ffi::PyLong_FromLong(nt.fd() as _)
}

unsafe extern "C" fn c_notifier_drain(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "notifier_drain") {
        return std::ptr::null_mut();
    }
    let Some(nt) = notifier(*a) else { return std::ptr::null_mut() };
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

unsafe extern "C" fn c_notifier_close(_m: *mut ffi::PyObject, a: Args, n: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    if !nargs(n, 1, "notifier_close") {
        return std::ptr::null_mut();
    }
    let Some(nt) = notifier(*a) else { return std::ptr::null_mut() };
    nt.close();
    none()
}
