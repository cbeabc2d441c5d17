//! `ObjRef`: a strong reference for objects the loop holds on its hot path.
//!
//! PyO3's `Py<T>` checks a thread-local on every drop (to defer the decref when the GIL
//! is not held). A callback's handle holds four references and is created and dropped
//! once per callback, so those checks were a measurable share of a `call_soon`. An
//! `ObjRef` decrements directly. It is sound because every `ObjRef` lives inside a
//! `GilCell` (or a local on a thread holding the GIL) and is only ever dropped with
//! the main interpreter's GIL held: in our own methods (which hold it) or in the
//! owning object's `tp_dealloc` (which CPython calls with it).
use pyo3::ffi;
use pyo3::prelude::*;
use std::mem::ManuallyDrop;

/// A `Py<PyAny>` whose drop is ours (see the module docs).
pub(crate) struct ObjRef(ManuallyDrop<Py<PyAny>>);

// Safety: an ObjRef is moved between threads only inside objects that are themselves
// only touched with the GIL held (see the module docs); it is never dropped without it.
unsafe impl Send for ObjRef {}
unsafe impl Sync for ObjRef {}

impl ObjRef {
    #[inline]
    pub(crate) fn new(obj: Bound<'_, PyAny>) -> Self {
        ObjRef(ManuallyDrop::new(obj.unbind()))
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut ffi::PyObject {
        self.0.as_ptr()
    }

    /// The reference as a `Py`, for APIs such as `PyVisit::call` that want one.
    #[inline]
    pub(crate) fn as_py(&self) -> &Py<PyAny> {
        &self.0
    }

    #[inline]
    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        // `Py::clone_ref` only increments the count (no thread-local check).
        ObjRef(ManuallyDrop::new(self.0.clone_ref(py)))
    }

    /// A new strong reference as a PyO3 `Py`, for returning to Python.
    #[inline]
    pub(crate) fn to_py(&self, py: Python<'_>) -> Py<PyAny> {
        // Safety: live object, GIL held; from_borrowed_ptr increments the count.
        unsafe { Bound::from_borrowed_ptr(py, self.0.as_ptr()) }.unbind()
    }
}

impl Drop for ObjRef {
    #[inline]
    fn drop(&mut self) {
        // Safety: dropped only with the GIL held (module docs); we own one reference.
        unsafe { ffi::Py_DECREF(self.0.as_ptr()) }
    }
}

/// Drops a `Py<T>` without PyO3's thread-local check. The token proves the GIL is held.
#[inline]
pub(crate) fn release<T>(_py: Python<'_>, obj: Py<T>) {
    // Safety: GIL held (token); `into_ptr` gives up the reference we then release.
    unsafe { ffi::Py_DECREF(obj.into_ptr()) }
}

/// The reference count of `obj`.
#[inline]
pub(crate) fn refcnt<T>(_py: Python<'_>, obj: &Py<T>) -> isize {
    // Safety: GIL held; the pointer is a live object we hold a reference to.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// Whether any weak reference to `obj` is alive (a recycled object would otherwise
/// come back to life under an old weak reference).
#[inline]
pub(crate) fn has_weakrefs<T>(_py: Python<'_>, obj: &Py<T>) -> bool {
    let ptr = obj.as_ptr();
    // Safety: GIL held; `tp_weaklistoffset`, when positive, is the offset of the
    // object's weak-reference list head (a PyObject* that is NULL when empty), which
    // is how CPython itself finds it.
    unsafe {
        let off = (*ffi::Py_TYPE(ptr)).tp_weaklistoffset;
        off > 0 && !(*(ptr.cast::<u8>().offset(off).cast::<*mut ffi::PyObject>())).is_null()
    }
}
