//! `interloop.SharedBuffer`: the buffer exporter through which an interpreter reads
//! a [`Region`]. One heap type per interpreter (made from one shared spec with
//! `PyType_FromSpec`, raw FFI, so workers can make theirs); instances are created
//! only by interloop and hold one `Arc<Region>`. Receivers see a read-only
//! `memoryview` whose `.obj` is such an instance.
use super::region::{Region, RegionObject};
use crate::capi::set_error;
use pyo3::ffi;
use std::os::raw::{c_int, c_void};
use std::sync::{Arc, OnceLock};

struct SpecPtr(*mut ffi::PyType_Spec);
// Safety: written once under the main GIL before any worker exists, then only read
// (by `PyType_FromSpec`, which copies what it keeps).
unsafe impl Send for SpecPtr {}
unsafe impl Sync for SpecPtr {}

static SPEC: OnceLock<SpecPtr> = OnceLock::new();

const DOC: &std::ffi::CStr =
    c"Read-only bytes shared between interpreters by interloop (channels, \
pool arguments and results). Use it through memoryview(); it cannot be created directly.";

/// Builds the type spec once (call with the main GIL held, before workers start).
pub(crate) fn init_spec() {
    SPEC.get_or_init(|| {
        let slots = vec![
            ffi::PyType_Slot {
                slot: ffi::Py_bf_getbuffer,
                pfunc: getbuffer as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_dealloc,
                pfunc: dealloc as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: DOC.as_ptr() as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: std::ptr::null_mut(),
            },
        ];
        let spec = Box::new(ffi::PyType_Spec {
            name: c"interloop.SharedBuffer".as_ptr(),
            basicsize: std::mem::size_of::<RegionObject>() as c_int,
            itemsize: 0,
            flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION) as _,
            slots: Box::leak(slots.into_boxed_slice()).as_mut_ptr(),
        });
        SpecPtr(Box::leak(spec))
    });
}

/// A new exporter type for the current interpreter; new reference or NULL.
///
/// # Safety
/// The current interpreter's GIL is held and `init_spec` has run.
pub(crate) unsafe fn new_type() -> *mut ffi::PyObject {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        match SPEC.get() {
            Some(s) => ffi::PyType_FromSpec(s.0),
            None => set_error(
                ffi::PyExc_SystemError,
                "interloop buffer type not initialised",
            ),
        }
    }
}

/// A read-only `memoryview` over `region`; new reference or NULL.
///
/// # Safety
/// The current interpreter's GIL is held; `tp` is its exporter type.
pub(crate) unsafe fn memoryview(
    tp: *mut ffi::PyTypeObject,
    region: Arc<Region>,
) -> *mut ffi::PyObject {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        let o = ffi::PyType_GenericAlloc(tp, 0);
        if o.is_null() {
            return o;
        }
        (*(o as *mut RegionObject)).region = Arc::into_raw(region);
        let mv = ffi::PyMemoryView_FromObject(o);
        ffi::Py_DecRef(o);
        mv
    }
}

/// # Safety
/// `bf_getbuffer` of the exporter type: called by CPython with the GIL held, `o`
/// an instance of this type and `view` writable.
unsafe extern "C" fn getbuffer(
    o: *mut ffi::PyObject,
    view: *mut ffi::Py_buffer,
    flags: c_int,
) -> c_int {
    // Safety: CPython calls `bf_getbuffer` with the GIL held, `o` an instance of this type and `view` writable.
    unsafe {
        crate::capi::entry(c"SharedBuffer getbuffer", || {
            // Safety: CPython calls this with the GIL held and `o` of our type.
            let r = (*(o as *mut RegionObject)).region;
            if r.is_null() {
                set_error(ffi::PyExc_BufferError, "empty interloop.SharedBuffer");
                return -1;
            }
            let r = &*r;
            // Read-only: a request for a writable buffer fails with BufferError.
            ffi::PyBuffer_FillInfo(
                view,
                o,
                r.as_ptr() as *mut c_void,
                r.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        })
    }
}

/// # Safety
/// `tp_dealloc` of the exporter type: called by CPython with the GIL held, once, on
/// an instance of this type.
unsafe extern "C" fn dealloc(o: *mut ffi::PyObject) {
    // Safety: CPython calls `tp_dealloc` with the GIL held, once, on an instance of this type.
    unsafe {
        crate::capi::entry(c"SharedBuffer dealloc", || {
            // Safety: called once by CPython when the last reference goes, GIL held. The
            // type is a heap type: each instance holds a reference to it.
            let tp = ffi::Py_TYPE(o);
            let r = std::mem::replace(&mut (*(o as *mut RegionObject)).region, std::ptr::null());
            if !r.is_null() {
                // Dropping may release a foreign `Py_buffer` (GIL-aware, see `Region`).
                drop(Arc::from_raw(r));
            }
            ffi::PyObject_Free(o as *mut c_void);
            ffi::Py_DecRef(tp as *mut ffi::PyObject);
        })
    }
}
