//! Raw-FFI helpers: building return values, reading arguments, static method
//! and module definitions (see the module docs of `capi`).
use pyo3::ffi;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

extern "C" {
    /// Schedules `func(arg)` in `interp`: one of its threads runs it with its GIL
    /// held at the next eval-breaker check. Callable from any thread, without a
    /// GIL (it takes the interpreter's pending-calls lock); -1 when the queue is
    /// full. Exported by libpython 3.12 and 3.13 (for `_testinternalcapi`), same ABI
    /// on both: (interp, int (*)(void *), void *, int flags/mainthreadonly) -> int.
    pub(crate) fn _PyEval_AddPendingCall(
        interp: *mut ffi::PyInterpreterState,
        func: unsafe extern "C" fn(*mut c_void) -> c_int,
        arg: *mut c_void,
        flags: c_int,
    ) -> c_int;
}

/// A module definition built once and shared by every interpreter that creates the
/// module (the worker module, the channel module).
pub(crate) struct DefPtr(pub(crate) *mut ffi::PyModuleDef);
// Safety: the definition is written once (under the main GIL, before any worker
// starts) and only read afterwards; CPython treats it as immutable after init.
unsafe impl Send for DefPtr {}
// Safety: as for `Send`.
unsafe impl Sync for DefPtr {}

/// A `PyMethodDef` that can live in a `static`: CPython keeps a pointer to it for as
/// long as the functions made from it live, so it must never move nor be freed.
pub(crate) struct MethodDef(pub(crate) ffi::PyMethodDef);
// Safety: written once (at initialisation) and only read by CPython afterwards; the
// pointers in it are 'static (C string literals and `extern "C"` functions).
unsafe impl Send for MethodDef {}
// Safety: as for `Send`.
unsafe impl Sync for MethodDef {}

/// Adds `(name, value)` int attributes to module `m`; false with a Python
/// exception set on failure.
///
/// # Safety
/// The GIL of `m`'s interpreter is held and `m` is a live module object.
pub(crate) unsafe fn add_int_constants(m: *mut ffi::PyObject, table: &[(&CStr, i64)]) -> bool {
    table.iter().all(|(name, v)| {
        // Safety: the caller holds `m`'s GIL; `name` is a NUL-terminated static.
        unsafe { ffi::PyModule_AddIntConstant(m, name.as_ptr(), *v as _) == 0 }
    })
}

/// New reference to `None`.
///
/// # Safety
/// The GIL of the current interpreter is held.
pub(crate) unsafe fn none() -> *mut ffi::PyObject {
    // Safety: GIL held (contract); `Py_None` is the interpreter's singleton.
    unsafe {
        let n = ffi::Py_None();
        ffi::Py_IncRef(n);
        n
    }
}

/// `True` or `False` (new reference).
///
/// # Safety
/// The GIL of the current interpreter is held.
pub(crate) unsafe fn bool_(v: bool) -> *mut ffi::PyObject {
    // Safety: GIL held (contract).
    unsafe { ffi::PyBool_FromLong(v as _) }
}

/// An `int` (new reference) or NULL.
///
/// # Safety
/// The GIL of the current interpreter is held.
pub(crate) unsafe fn u64_(v: u64) -> *mut ffi::PyObject {
    // Safety: GIL held (contract).
    unsafe { ffi::PyLong_FromUnsignedLongLong(v) }
}

/// A `bytes` copy of `b` (new reference) or NULL.
///
/// # Safety
/// The GIL of the current interpreter is held.
pub(crate) unsafe fn bytes(b: &[u8]) -> *mut ffi::PyObject {
    // Safety: GIL held (contract); `b` is valid for `b.len()` bytes.
    unsafe {
        ffi::PyBytes_FromStringAndSize(b.as_ptr() as *const c_char, b.len() as ffi::Py_ssize_t)
    }
}

/// A `str` copy of `s` (new reference) or NULL.
///
/// # Safety
/// The GIL of the current interpreter is held.
pub(crate) unsafe fn str_(s: &str) -> *mut ffi::PyObject {
    // Safety: GIL held (contract); `s` is valid UTF-8 for `s.len()` bytes.
    unsafe {
        ffi::PyUnicode_FromStringAndSize(s.as_ptr() as *const c_char, s.len() as ffi::Py_ssize_t)
    }
}

/// A tuple from new references (stolen); NULL if any item or the tuple is NULL.
///
/// # Safety
/// The GIL of the current interpreter is held; each item is NULL or a new
/// reference the caller gives up.
pub(crate) unsafe fn tuple(items: &[*mut ffi::PyObject]) -> *mut ffi::PyObject {
    // Safety: GIL held and items owned (contract); `PyTuple_SetItem` steals each
    // item into a fresh tuple of the right size.
    unsafe {
        if items.iter().any(|p| p.is_null()) {
            for p in items {
                if !p.is_null() {
                    ffi::Py_DecRef(*p);
                }
            }
            return std::ptr::null_mut();
        }
        let t = ffi::PyTuple_New(items.len() as ffi::Py_ssize_t);
        if t.is_null() {
            for p in items {
                ffi::Py_DecRef(*p);
            }
            return t;
        }
        for (i, p) in items.iter().enumerate() {
            ffi::PyTuple_SetItem(t, i as ffi::Py_ssize_t, *p);
        }
        t
    }
}

/// A list built from new references (stolen); NULL on failure.
///
/// # Safety
/// As [`tuple()`].
pub(crate) unsafe fn list(items: Vec<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    // Safety: as in `tuple`, with `PyList_SetItem`.
    unsafe {
        let l = ffi::PyList_New(items.len() as ffi::Py_ssize_t);
        let mut ok = !l.is_null();
        for (i, p) in items.into_iter().enumerate() {
            if p.is_null() || !ok {
                ok = false;
                if !p.is_null() {
                    ffi::Py_DecRef(p);
                }
                continue;
            }
            ffi::PyList_SetItem(l, i as ffi::Py_ssize_t, p);
        }
        if !ok {
            if !l.is_null() {
                ffi::Py_DecRef(l);
            }
            return std::ptr::null_mut();
        }
        l
    }
}

/// The value of an `int` argument, or `None` with an exception set.
///
/// # Safety
/// The GIL of `o`'s interpreter is held and `o` is a live object.
pub(crate) unsafe fn arg_u64(o: *mut ffi::PyObject) -> Option<u64> {
    // Safety: contract.
    unsafe {
        let v = ffi::PyLong_AsUnsignedLongLong(o);
        if v == u64::MAX && !ffi::PyErr_Occurred().is_null() {
            return None;
        }
        Some(v)
    }
}

/// Borrowed view of a `bytes` object's data (valid while the object lives).
///
/// # Safety
/// As [`arg_u64`]; the slice must not outlive `o`.
pub(crate) unsafe fn arg_bytes<'a>(o: *mut ffi::PyObject) -> Option<&'a [u8]> {
    // Safety: contract; on success CPython gives the object's own buffer of `n`
    // bytes, immutable and alive as long as the object.
    unsafe {
        let mut p: *mut c_char = std::ptr::null_mut();
        let mut n: ffi::Py_ssize_t = 0;
        if ffi::PyBytes_AsStringAndSize(o, &mut p, &mut n) != 0 {
            return None;
        }
        Some(std::slice::from_raw_parts(p as *const u8, n as usize))
    }
}

/// A copy of a `str` argument, or `None` with an exception set.
///
/// # Safety
/// As [`arg_u64`].
pub(crate) unsafe fn arg_str(o: *mut ffi::PyObject) -> Option<String> {
    // Safety: contract; on success CPython gives `len` bytes of UTF-8 owned by the
    // string, copied here before anything can free them.
    unsafe {
        let mut len: ffi::Py_ssize_t = 0;
        let p = ffi::PyUnicode_AsUTF8AndSize(o, &mut len);
        if p.is_null() {
            return None;
        }
        let b = std::slice::from_raw_parts(p as *const u8, len as usize);
        Some(String::from_utf8_lossy(b).into_owned())
    }
}

/// Sets `exc(msg)` as the current exception; returns NULL (for `return set_error(..)`).
///
/// # Safety
/// The GIL of the current interpreter is held; `exc` is an exception type.
pub(crate) unsafe fn set_error(exc: *mut ffi::PyObject, msg: &str) -> *mut ffi::PyObject {
    let c = std::ffi::CString::new(msg.replace('\0', " ")).expect("NULs were replaced");
    // Safety: contract; `c` lives for the call.
    unsafe { ffi::PyErr_SetString(exc, c.as_ptr()) };
    std::ptr::null_mut()
}

/// Checks a METH_FASTCALL call's positional count; sets TypeError and returns false
/// when it is not `want`.
///
/// # Safety
/// The GIL of the current interpreter is held.
pub(crate) unsafe fn nargs(n: ffi::Py_ssize_t, want: ffi::Py_ssize_t, name: &str) -> bool {
    // Safety: `PyVectorcall_NARGS` only masks the flag bit off.
    let n = unsafe { ffi::PyVectorcall_NARGS(n as usize) };
    if n != want {
        // Safety: GIL held (contract).
        unsafe {
            set_error(
                ffi::PyExc_TypeError,
                &format!("{name}() takes {want} arguments ({n} given)"),
            )
        };
        return false;
    }
    true
}

/// Leaks `methods` (and `slots`, if any) into a static module definition and stamps
/// it with `PyModuleDef_Init`, once.
///
/// # Safety
/// The main interpreter's GIL is held (called from the `#[pymodule]` init), before
/// any worker exists, so no interpreter races on `PyModuleDef_Init`. `methods` and
/// `slots` end with their zeroed sentinels.
pub(crate) unsafe fn leak_module_def(
    name: &'static CStr,
    doc: &'static CStr,
    state_size: ffi::Py_ssize_t,
    methods: Vec<ffi::PyMethodDef>,
    slots: Option<Vec<ffi::PyModuleDef_Slot>>,
) -> DefPtr {
    let def = Box::new(ffi::PyModuleDef {
        m_base: ffi::PyModuleDef_HEAD_INIT,
        m_name: name.as_ptr(),
        m_doc: doc.as_ptr(),
        m_size: state_size,
        m_methods: Box::leak(methods.into_boxed_slice()).as_mut_ptr(),
        m_slots: slots.map_or(std::ptr::null_mut(), |s| {
            Box::leak(s.into_boxed_slice()).as_mut_ptr()
        }),
        m_traverse: None,
        m_clear: None,
        m_free: None,
    });
    let def = Box::leak(def) as *mut ffi::PyModuleDef;
    // Safety: contract (main GIL, no worker yet); `def` is leaked, so 'static.
    unsafe { ffi::PyModuleDef_Init(def) };
    DefPtr(def)
}
