//! The serve functions as one raw-FFI module object usable in every interpreter:
//! the main interpreter gets it as `interloop._interloop._serve`, a pool worker
//! from its worker module (`serve_module()`). Raw `pyo3::ffi` only (PyO3's safe
//! API must not run in a sub-interpreter). Every entry runs through
//! `capi::entry` (the `method!` table and the capsule destructor), which turns a
//! panic into a Python `SystemError`.
//!
//! A server handle is a capsule owning one worker's [`Server`]; it is used only by
//! the interpreter (and thread) that made it, under that interpreter's GIL. A
//! group is named by its process-wide id.
use super::group;
use super::http::RespHead;
use super::server::{Event, Limits, Listener, Recv, Server};
use crate::capi::{
    arg_bytes, arg_str, arg_u64, bool_, bytes, entry, leak_module_def, list, method, nargs, none, set_error,
    str_, tuple, u64_, DefPtr,
};
use pyo3::ffi;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::os::raw::{c_char, c_void};
use std::sync::OnceLock;
use std::time::Duration;

type Args = *mut *mut ffi::PyObject;
type Obj = *mut ffi::PyObject;

const SERVER: &std::ffi::CStr = c"interloop.serve.server";

static DEF: OnceLock<DefPtr> = OnceLock::new();

/// Builds and initialises the module definition once; call with the main GIL held
/// before any worker starts.
pub fn init_def() {
    DEF.get_or_init(|| {
        let methods = vec![
            method!(c"group_new", s_group_new, c"group_new(workers) -> group id"),
            method!(c"group_stop", s_group_stop, c"group_stop(gid): ask every worker to shut down gracefully"),
            method!(c"group_stats", s_group_stats, c"group_stats(gid) -> list per worker of (requests, failed, inflight, connections, (count, mean, p50, p90, p99, max) us)"),
            method!(c"group_set_tls", s_group_set_tls, c"group_set_tls(gid, certfile, keyfile, ca_certs or None, cert_reqs 0|1|2): load the PEM certificate chain and key (and the CAs of client certificates); every worker's server then speaks TLS (ValueError naming the file at fault)"),
            method!(c"group_remove", s_group_remove, c"group_remove(gid) -> bool"),
            method!(c"server_new", s_server_new, c"server_new(gid, index, listeners [(fd, is_unix)], (max_head, max_body, keep_alive_s, slow_client_s, max_inflight)) -> server capsule; fds are duplicated"),
            method!(c"server_fd", s_server_fd, c"server_fd(s) -> int: readable when poll() has work"),
            method!(c"server_poll", s_server_poll, c"server_poll(s, timers) -> list of events"),
            method!(c"server_recv", s_server_recv, c"server_recv(s, token) -> (bytes, more_body) | None (wait for a BODY event) | False (gone)"),
            method!(c"server_start", s_server_start, c"server_start(s, token, status, headers) -> bool (False: gone)"),
            method!(c"server_upgrade", s_server_upgrade, c"server_upgrade(s, token, head: bytes) -> bool (False: gone): write the 101 response, then pass bytes through unframed"),
            method!(c"server_body", s_server_body, c"server_body(s, token, data, more_body) -> flags (1 gone, 2 wait for DRAIN, 4 events pending)"),
            method!(c"server_abort", s_server_abort, c"server_abort(s, token): drop the request's connection"),
            method!(c"server_drain", s_server_drain, c"server_drain(s): stop accepting, close idle connections"),
            method!(c"server_load", s_server_load, c"server_load(s) -> (requests in flight, connections)"),
            method!(c"server_close", s_server_close, c"server_close(s): close every connection and the listeners"),
            ffi::PyMethodDef::zeroed(),
        ];
        // Safety: called from the #[pymodule] init (main GIL held), before workers.
        unsafe {
            leak_module_def(
                c"interloop._serve",
                c"interloop's HTTP/1.1 server functions (raw FFI, usable in any interpreter)",
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
pub unsafe fn create_module() -> Obj {
    let Some(def) = DEF.get() else {
        // Safety: GIL held (caller's contract).
        return unsafe { set_error(ffi::PyExc_SystemError, "interloop serve module not initialised") };
    };
    // Safety: GIL held; `def` is initialised and lives forever.
    unsafe { ffi::PyModule_Create2(def.0, ffi::PYTHON_API_VERSION) }
}

/// `serve_module()` of the worker module.
///
/// # Safety
/// As a METH_FASTCALL function (`capi::method!`): the calling interpreter's GIL is
/// held.
pub(crate) unsafe fn serve_module(_m: Obj, _a: Args, _n: ffi::Py_ssize_t) -> Obj {
    // Safety: GIL held (this function's contract); `init_def` ran at start-up.
    unsafe { create_module() }
}

type Cell = RefCell<Option<Server>>;

unsafe extern "C" fn drop_server(cap: Obj) {
    // Safety: CPython calls a capsule destructor with the GIL held; the pointer
    // came from `Box::into_raw` in `s_server_new` and the destructor runs once.
    // Dropping the server touches no Python object.
    unsafe {
        entry(c"serve server capsule destructor", || {
            let p = ffi::PyCapsule_GetPointer(cap, SERVER.as_ptr());
            if p.is_null() {
                ffi::PyErr_Clear();
                return;
            }
            drop(Box::from_raw(p as *mut Cell));
        })
    }
}

/// Runs `f` on the server behind capsule `o`, or sets a Python error.
///
/// # Safety
/// GIL held; `o` is a borrowed object alive for the call.
unsafe fn with_server(o: Obj, f: impl FnOnce(&mut Server) -> Obj) -> Obj {
    // Safety: GIL held; a capsule named `SERVER` holds a `Box<Cell>` alive while
    // the capsule is, and the caller's argument keeps the capsule alive.
    let cell = unsafe {
        let p = ffi::PyCapsule_GetPointer(o, SERVER.as_ptr());
        if p.is_null() {
            ffi::PyErr_Clear();
            return set_error(ffi::PyExc_TypeError, "expected an interloop server handle");
        }
        &*(p as *const Cell)
    };
    let Ok(mut g) = cell.try_borrow_mut() else {
        // Safety: GIL held.
        return unsafe { set_error(ffi::PyExc_RuntimeError, "interloop server used re-entrantly") };
    };
    match g.as_mut() {
        Some(s) => f(s),
        // Safety: GIL held.
        None => unsafe { set_error(ffi::PyExc_RuntimeError, "interloop server is closed") },
    }
}

/// The common head of a server entry: checks the argument count, reads the token
/// (second argument) when `token` is set, and runs `f` on the server (first
/// argument).
///
/// # Safety
/// Called from a module entry: GIL held, `a[..n]` valid borrowed arguments.
unsafe fn server_entry(
    name: &str,
    a: Args,
    n: ffi::Py_ssize_t,
    want: ffi::Py_ssize_t,
    token: bool,
    f: impl FnOnce(&mut Server, u64) -> Obj,
) -> Obj {
    // Safety: GIL held and arguments valid (caller's contract); `nargs` is checked
    // before any argument is read.
    unsafe {
        if !nargs(n, want, name) {
            return std::ptr::null_mut();
        }
        let t = if token {
            match arg_u64(*a.add(1)) {
                Some(t) => t,
                None => return std::ptr::null_mut(),
            }
        } else {
            0
        };
        with_server(*a, |s| f(s, t))
    }
}

fn gid_of(o: Obj) -> Option<std::sync::Arc<group::Group>> {
    // Safety: GIL held by every caller (module entries).
    unsafe {
        let id = arg_u64(o)?;
        let g = group::get(id);
        if g.is_none() {
            set_error(ffi::PyExc_ValueError, &format!("no interloop serve group {id}"));
        }
        g
    }
}

// Safety of the `s_*` entries: `capi::method!` runs them (through `capi::entry`)
// with the calling interpreter's GIL held and `a[..n]` valid borrowed arguments
// (METH_FASTCALL); `nargs` is checked before any argument is read.

unsafe fn s_group_new(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above.
    unsafe {
        if !nargs(n, 1, "group_new") {
            return std::ptr::null_mut();
        }
        let Some(w) = arg_u64(*a) else {
            return std::ptr::null_mut();
        };
        if w == 0 || w > 4096 {
            return set_error(ffi::PyExc_ValueError, "workers must be in 1..4096");
        }
        u64_(group::create(w as usize).id)
    }
}

unsafe fn s_group_stop(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above.
    unsafe {
        if !nargs(n, 1, "group_stop") {
            return std::ptr::null_mut();
        }
        let Some(g) = gid_of(*a) else {
            return std::ptr::null_mut();
        };
        g.stop();
        none()
    }
}

unsafe fn s_group_set_tls(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above.
    unsafe {
        if !nargs(n, 5, "group_set_tls") {
            return std::ptr::null_mut();
        }
        let Some(g) = gid_of(*a) else {
            return std::ptr::null_mut();
        };
        let (Some(cert), Some(key)) = (arg_str(*a.add(1)), arg_str(*a.add(2))) else {
            return std::ptr::null_mut();
        };
        let ca = if *a.add(3) == ffi::Py_None() {
            None
        } else {
            match arg_str(*a.add(3)) {
                Some(s) => Some(s),
                None => return std::ptr::null_mut(),
            }
        };
        let Some(reqs) = arg_u64(*a.add(4)) else {
            return std::ptr::null_mut();
        };
        let auth = match reqs {
            0 => super::tls::ClientAuth::None,
            1 => super::tls::ClientAuth::Optional,
            2 => super::tls::ClientAuth::Required,
            _ => return set_error(ffi::PyExc_ValueError, "--ssl-cert-reqs must be 0, 1 or 2"),
        };
        let cfg = match super::tls::load_config(&cert, &key, ca.as_deref(), auth) {
            Ok(c) => c,
            Err(m) => return set_error(ffi::PyExc_ValueError, &m),
        };
        if !g.set_tls(cfg) {
            return set_error(ffi::PyExc_RuntimeError, "the group's TLS configuration is already set");
        }
        none()
    }
}

unsafe fn s_group_remove(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above.
    unsafe {
        if !nargs(n, 1, "group_remove") {
            return std::ptr::null_mut();
        }
        let Some(id) = arg_u64(*a) else {
            return std::ptr::null_mut();
        };
        bool_(group::remove(id))
    }
}

unsafe fn s_group_stats(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above.
    unsafe {
        use std::sync::atomic::Ordering::Relaxed;
        if !nargs(n, 1, "group_stats") {
            return std::ptr::null_mut();
        }
        let Some(g) = gid_of(*a) else {
            return std::ptr::null_mut();
        };
        let items = g
            .workers
            .iter()
            .map(|w| {
                let s = w.stats.snapshot(0, Vec::new());
                let (c, mean, p50, p90, p99, max) = s.latency;
                let lat = tuple(&[
                    u64_(c),
                    ffi::PyFloat_FromDouble(mean),
                    ffi::PyFloat_FromDouble(p50),
                    ffi::PyFloat_FromDouble(p90),
                    ffi::PyFloat_FromDouble(p99),
                    ffi::PyFloat_FromDouble(max),
                ]);
                tuple(&[
                    u64_(s.completed),
                    u64_(s.failed),
                    u64_(w.inflight.load(Relaxed)),
                    u64_(w.connections.load(Relaxed)),
                    lat,
                ])
            })
            .collect();
        list(items)
    }
}

/// A duplicate of listening socket `fd`, non-blocking, as a mio listener.
fn listener_of(fd: i32, unix: bool) -> std::io::Result<Listener> {
    // Safety: `fcntl(F_DUPFD_CLOEXEC)` only reads `fd`; a failure is reported.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(if unix {
        // Safety: `dup` is a fresh descriptor that we own from here on.
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(dup) };
        l.set_nonblocking(true)?;
        Listener::Unix(mio::net::UnixListener::from_std(l))
    } else {
        // Safety: as above.
        let l = unsafe { std::net::TcpListener::from_raw_fd(dup) };
        l.set_nonblocking(true)?;
        Listener::Tcp(mio::net::TcpListener::from_std(l))
    })
}

/// Reads a float of seconds into a duration, or sets an error.
///
/// # Safety
/// GIL held.
unsafe fn arg_secs(o: Obj, what: &str) -> Option<Duration> {
    // Safety: GIL held (caller's contract).
    unsafe {
        let v = ffi::PyFloat_AsDouble(o);
        if v == -1.0 && !ffi::PyErr_Occurred().is_null() {
            return None;
        }
        if !(v > 0.0 && v < 1e9) {
            set_error(ffi::PyExc_ValueError, &format!("{what} must be a positive number of seconds"));
            return None;
        }
        Some(Duration::from_secs_f64(v))
    }
}

unsafe fn s_server_new(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above; sequence items are borrowed from the argument's fast
    // sequence, which we hold for the loop.
    unsafe {
        if !nargs(n, 4, "server_new") {
            return std::ptr::null_mut();
        }
        let Some(g) = gid_of(*a) else {
            return std::ptr::null_mut();
        };
        let Some(index) = arg_u64(*a.add(1)) else {
            return std::ptr::null_mut();
        };
        let fast = ffi::PySequence_Fast(*a.add(2), c"listeners must be a sequence".as_ptr());
        if fast.is_null() {
            return fast;
        }
        let mut listeners = Vec::new();
        for i in 0..ffi::PySequence_Fast_GET_SIZE(fast) {
            let item = ffi::PySequence_Fast_GET_ITEM(fast, i);
            let (mut fd, mut unix): (i32, i32) = (0, 0);
            if ffi::PyArg_ParseTuple(item, c"ip".as_ptr(), &mut fd as *mut i32, &mut unix as *mut i32) == 0 {
                ffi::Py_DecRef(fast);
                return std::ptr::null_mut();
            }
            match listener_of(fd, unix != 0) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    ffi::Py_DecRef(fast);
                    return set_error(ffi::PyExc_OSError, &format!("listening socket {fd}: {e}"));
                }
            }
        }
        ffi::Py_DecRef(fast);
        let o = *a.add(3);
        if ffi::PyTuple_Check(o) == 0 || ffi::PyTuple_Size(o) != 5 {
            return set_error(ffi::PyExc_TypeError, "server options must be a 5-tuple");
        }
        let item = |i| ffi::PyTuple_GetItem(o, i);
        let (Some(max_head), Some(max_body)) = (arg_u64(item(0)), arg_u64(item(1))) else {
            return std::ptr::null_mut();
        };
        let Some(keep_alive) = arg_secs(item(2), "timeout_keep_alive") else {
            return std::ptr::null_mut();
        };
        let Some(slow_client) = arg_secs(item(3), "timeout_slow_client") else {
            return std::ptr::null_mut();
        };
        let Some(max_inflight) = arg_u64(item(4)) else {
            return std::ptr::null_mut();
        };
        if max_head < 256 {
            return set_error(ffi::PyExc_ValueError, "the request head limit must be at least 256 bytes");
        }
        let limits = Limits {
            max_head: max_head as usize,
            max_body,
            keep_alive,
            slow_client,
            max_inflight: max_inflight as usize,
        };
        let server = match Server::new(g, index as usize, listeners, limits) {
            Ok(s) => s,
            Err(e) => return set_error(ffi::PyExc_OSError, &format!("interloop server: {e}")),
        };
        let p = Box::into_raw(Box::new(RefCell::new(Some(server))));
        let cap = ffi::PyCapsule_New(p as *mut c_void, SERVER.as_ptr(), Some(drop_server));
        if cap.is_null() {
            drop(Box::from_raw(p));
        }
        cap
    }
}

unsafe fn s_server_fd(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`).
    unsafe { server_entry("server_fd", a, n, 1, false, |s, _| ffi::PyLong_FromLong(s.fd() as _)) }
}

/// `(host, port)` or None.
///
/// # Safety
/// GIL held.
unsafe fn addr(a: Option<SocketAddr>) -> Obj {
    // Safety: GIL held (caller's contract).
    unsafe {
        match a {
            None => none(),
            Some(a) => {
                tuple(&[str_(&a.ip().to_string()), ffi::PyLong_FromLong(a.port() as _)])
            }
        }
    }
}

/// The Python tuple of one event (new reference or NULL).
///
/// # Safety
/// GIL held.
unsafe fn event_obj(e: Event) -> Obj {
    // Safety: GIL held (caller's contract); every helper returns a new reference
    // or NULL, and `tuple`/`list` steal them (releasing all on failure).
    unsafe {
        match e {
            Event::Request {
                token,
                head,
                client,
                server,
                tls,
            } => {
                let headers = list(
                    head.headers
                        .iter()
                        .map(|(k, v)| tuple(&[bytes(k), bytes(v)]))
                        .collect(),
                );
                let path = super::http::decode_path(&head.raw_path);
                tuple(&[
                    ffi::PyLong_FromLong(0),
                    u64_(token),
                    str_(&head.method),
                    str_(&path),
                    bytes(&head.raw_path),
                    bytes(&head.query),
                    str_(if head.http10 { "1.0" } else { "1.1" }),
                    headers,
                    addr(client),
                    addr(server),
                    bool_(head.websocket),
                    match tls {
                        None => none(),
                        Some(t) if t.client_chain.is_empty() => {
                            tuple(&[u64_(t.version as u64), u64_(t.suite as u64)])
                        }
                        Some(t) => tuple(&[
                            u64_(t.version as u64),
                            u64_(t.suite as u64),
                            tuple(&t.client_chain.iter().map(|d| bytes(d)).collect::<Vec<_>>()),
                        ]),
                    },
                ])
            }
            Event::Body(t) => tuple(&[ffi::PyLong_FromLong(1), u64_(t)]),
            Event::Disconnect(t) => tuple(&[ffi::PyLong_FromLong(2), u64_(t)]),
            Event::Drain(t) => tuple(&[ffi::PyLong_FromLong(3), u64_(t)]),
            Event::Stop => tuple(&[ffi::PyLong_FromLong(4), u64_(0)]),
        }
    }
}

unsafe fn s_server_poll(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above.
    unsafe {
        if !nargs(n, 2, "server_poll") {
            return std::ptr::null_mut();
        }
        let timers = ffi::PyObject_IsTrue(*a.add(1)) == 1;
        let mut events = Vec::new();
        let r = with_server(*a, |s| {
            s.poll(&mut events, timers);
            none()
        });
        if r.is_null() {
            return r;
        }
        ffi::Py_DecRef(r);
        list(events.into_iter().map(|e| event_obj(e)).collect())
    }
}

unsafe fn s_server_recv(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`); the closure runs with the GIL held.
    unsafe {
        server_entry("server_recv", a, n, 2, true, |s, token| match s.recv(token) {
            Recv::Gone => bool_(false),
            Recv::Wait => none(),
            Recv::Data(d, more) => tuple(&[bytes(&d), bool_(more)]),
        })
    }
}

/// A `RespHead` from `status` and the ASGI headers iterable, or NULL with a
/// Python error naming the problem.
///
/// # Safety
/// GIL held; borrowed arguments.
unsafe fn resp_head(status: Obj, headers: Obj) -> Option<RespHead> {
    // Safety: GIL held (caller's contract); items are borrowed from `fast` and the
    // pairs' fast sequences, which we hold while reading them.
    unsafe {
        if ffi::PyLong_Check(status) == 0 {
            set_error(ffi::PyExc_TypeError, "http.response.start 'status' must be an int");
            return None;
        }
        let st = ffi::PyLong_AsLong(status);
        if st == -1 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
        }
        let mut h = match RespHead::new(if (0..=65535).contains(&st) { st as u16 } else { 0 }) {
            Ok(h) => h,
            Err(m) => {
                set_error(ffi::PyExc_ValueError, &format!("http.response.start: {m} (got {st})"));
                return None;
            }
        };
        let fast = ffi::PySequence_Fast(headers, c"http.response.start 'headers' must be an iterable of (name, value) pairs".as_ptr());
        if fast.is_null() {
            return None;
        }
        let mut ok = true;
        for i in 0..ffi::PySequence_Fast_GET_SIZE(fast) {
            let pair = ffi::PySequence_Fast_GET_ITEM(fast, i);
            let p = ffi::PySequence_Fast(pair, c"each response header must be a (name, value) pair".as_ptr());
            if p.is_null() {
                ok = false;
                break;
            }
            let bad = |msg: &str| {
                set_error(ffi::PyExc_TypeError, msg);
            };
            if ffi::PySequence_Fast_GET_SIZE(p) != 2 {
                bad("each response header must be a (name, value) pair");
                ffi::Py_DecRef(p);
                ok = false;
                break;
            }
            let (k, v) = (ffi::PySequence_Fast_GET_ITEM(p, 0), ffi::PySequence_Fast_GET_ITEM(p, 1));
            let as_bytes = |o: Obj| -> Option<&[u8]> {
                if ffi::PyBytes_Check(o) == 0 {
                    return None;
                }
                let mut ptr: *mut c_char = std::ptr::null_mut();
                let mut len: ffi::Py_ssize_t = 0;
                if ffi::PyBytes_AsStringAndSize(o, &mut ptr, &mut len) != 0 {
                    ffi::PyErr_Clear();
                    return None;
                }
                Some(std::slice::from_raw_parts(ptr as *const u8, len as usize))
            };
            let r = match (as_bytes(k), as_bytes(v)) {
                (Some(k), Some(v)) => h.header(k, v).map_err(|m| (ffi::PyExc_ValueError, m.to_string())),
                _ => Err((ffi::PyExc_TypeError, "response header names and values must be bytes".to_string())),
            };
            ffi::Py_DecRef(p);
            if let Err((exc, m)) = r {
                set_error(exc, &m);
                ok = false;
                break;
            }
        }
        ffi::Py_DecRef(fast);
        ok.then_some(h)
    }
}

unsafe fn s_server_start(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`); the closure runs with the GIL held
    // and reads arguments 2 and 3, which `server_entry` counted.
    unsafe {
        server_entry("server_start", a, n, 4, true, |s, token| {
            let Some(head) = resp_head(*a.add(2), *a.add(3)) else {
                return std::ptr::null_mut();
            };
            match s.start(token, head) {
                Ok(alive) => bool_(alive),
                Err(m) => set_error(ffi::PyExc_RuntimeError, m),
            }
        })
    }
}

unsafe fn s_server_body(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`); the closure runs with the GIL held,
    // reads arguments 2 and 3, which `server_entry` counted, and holds the buffer
    // (released before returning) while the server writes from it.
    unsafe {
        server_entry("server_body", a, n, 4, true, |s, token| {
            let more = ffi::PyObject_IsTrue(*a.add(3));
            if more < 0 {
                return std::ptr::null_mut();
            }
            let mut pb: ffi::Py_buffer = std::mem::zeroed();
            if ffi::PyObject_GetBuffer(*a.add(2), &mut pb, ffi::PyBUF_SIMPLE) != 0 {
                ffi::PyErr_Clear();
                return set_error(
                    ffi::PyExc_TypeError,
                    "http.response.body 'body' must be bytes (or a bytes-like object)",
                );
            }
            let data = if pb.len > 0 {
                std::slice::from_raw_parts(pb.buf as *const u8, pb.len as usize)
            } else {
                &[][..]
            };
            let r = match s.body(token, data, more == 1) {
                Ok(flags) => ffi::PyLong_FromLong(flags as _),
                Err(m) => set_error(ffi::PyExc_RuntimeError, m),
            };
            ffi::PyBuffer_Release(&mut pb);
            r
        })
    }
}

unsafe fn s_server_upgrade(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`); the closure runs with the GIL held
    // and reads argument 2, which `server_entry` counted; the bytes object is
    // borrowed for the call.
    unsafe {
        server_entry("server_upgrade", a, n, 3, true, |s, token| {
            let Some(head) = arg_bytes(*a.add(2)) else {
                return std::ptr::null_mut();
            };
            match s.upgrade(token, head) {
                Ok(alive) => bool_(alive),
                Err(m) => set_error(ffi::PyExc_RuntimeError, m),
            }
        })
    }
}

unsafe fn s_server_abort(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`).
    unsafe {
        server_entry("server_abort", a, n, 2, true, |s, token| {
            s.abort(token);
            none()
        })
    }
}

unsafe fn s_server_drain(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`).
    unsafe {
        server_entry("server_drain", a, n, 1, false, |s, _| {
            s.drain();
            none()
        })
    }
}

unsafe fn s_server_load(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above (and `server_entry`).
    unsafe {
        server_entry("server_load", a, n, 1, false, |s, _| {
            let (r, c) = s.load();
            tuple(&[ffi::PyLong_FromSize_t(r), ffi::PyLong_FromSize_t(c)])
        })
    }
}

unsafe fn s_server_close(_m: Obj, a: Args, n: ffi::Py_ssize_t) -> Obj {
    // Safety: see above; the server is taken out of its cell and dropped (its
    // sockets closed) while no Python object is touched.
    unsafe {
        if !nargs(n, 1, "server_close") {
            return std::ptr::null_mut();
        }
        let p = ffi::PyCapsule_GetPointer(*a, SERVER.as_ptr());
        if p.is_null() {
            ffi::PyErr_Clear();
            return set_error(ffi::PyExc_TypeError, "expected an interloop server handle");
        }
        let cell = &*(p as *const Cell);
        match cell.try_borrow_mut() {
            Ok(mut g) => drop(g.take()),
            Err(_) => return set_error(ffi::PyExc_RuntimeError, "interloop server used re-entrantly"),
        }
        none()
    }
}
