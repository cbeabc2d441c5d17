//! A region of bytes readable from every interpreter, its owners, and the stash
//! (see the module docs of `buffer`).
#![cfg_attr(test, allow(dead_code))] // the Python side is not linked into unit tests

use crate::capi::_PyEval_AddPendingCall;
use parking_lot::Mutex;
use pyo3::ffi;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;

/// Buffers at least this large travel by reference; smaller ones are copied (a
/// copy of 64 KiB costs about what the bookkeeping of a foreign buffer does).
pub(crate) const ZERO_COPY_MIN: usize = 64 * 1024;

pub(crate) struct Region {
    ptr: *const u8,
    len: usize,
    keep: Keep,
}

enum Keep {
    Owned(#[allow(dead_code)] Box<[u8]>),
    Slice(#[allow(dead_code)] Arc<Region>),
    Foreign {
        view: Box<ffi::Py_buffer>,
        owner: Arc<Owner>,
    },
}

// Safety: a region's bytes are only read through it (every view is read-only);
// `ptr` stays valid while `keep` lives; the `Py_buffer` of a foreign region is only
// touched (released) with its owner's GIL held, see `Drop`.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    pub(crate) fn owned(data: Vec<u8>) -> Region {
        let b = data.into_boxed_slice();
        Region {
            ptr: b.as_ptr(),
            len: b.len(),
            keep: Keep::Owned(b),
        }
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A region over the bytes of `o` (anything with the buffer protocol). Shares
    /// the memory when `o` is large and contiguous (and, if `o` views a region that
    /// was received, shares that region); copies otherwise. `None` with a Python
    /// error set if `o` has no buffer.
    ///
    /// # Safety
    /// The current thread holds the GIL of the interpreter `o` belongs to;
    /// `view_type` is that interpreter's exporter type (see [`super::view`]).
    pub(crate) unsafe fn from_object(
        o: *mut ffi::PyObject,
        view_type: *mut ffi::PyTypeObject,
    ) -> Option<Arc<Region>> {
        // Safety: GIL held and arguments live (this function's contract).
        unsafe {
            // Boxed: the exporter may keep pointers into the struct (its shape/strides
            // fields), so it must not move until released.
            let mut pb: Box<ffi::Py_buffer> = Box::new(std::mem::zeroed());
            if ffi::PyObject_GetBuffer(o, &mut *pb, ffi::PyBUF_FULL_RO) != 0 {
                return None;
            }
            let len = pb.len.max(0) as usize;
            if ffi::PyBuffer_IsContiguous(&*pb, b'A' as c_char) == 0 {
                let mut v = vec![0u8; len];
                let r = ffi::PyBuffer_ToContiguous(
                    v.as_mut_ptr() as *mut c_void,
                    &*pb,
                    pb.len,
                    b'C' as c_char,
                );
                ffi::PyBuffer_Release(&mut *pb);
                return if r == 0 {
                    Some(Arc::new(Region::owned(v)))
                } else {
                    None
                };
            }
            let copy = |mut pb: Box<ffi::Py_buffer>| {
                let v = if len == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(pb.buf as *const u8, len).to_vec()
                };
                ffi::PyBuffer_Release(&mut *pb);
                Some(Arc::new(Region::owned(v)))
            };
            if len < ZERO_COPY_MIN {
                return copy(pb);
            }
            if let Some(parent) = base_region(pb.obj, view_type) {
                let (start, p) = (parent.ptr as usize, pb.buf as usize);
                if p >= start && p + len <= start + parent.len {
                    let r = Region {
                        ptr: pb.buf as *const u8,
                        len,
                        keep: Keep::Slice(parent),
                    };
                    ffi::PyBuffer_Release(&mut *pb);
                    return Some(Arc::new(r));
                }
            }
            let Some(owner) = Owner::current() else {
                return copy(pb);
            };
            owner.collect_here();
            Some(Arc::new(Region {
                ptr: pb.buf as *const u8,
                len,
                keep: Keep::Foreign { view: pb, owner },
            }))
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Rust unit tests run without libpython and never make foreign regions.
        #[cfg(not(test))]
        self.drop_foreign();
    }
}

impl Region {
    #[cfg(not(test))]
    fn drop_foreign(&mut self) {
        let Keep::Foreign { view, owner } = &mut self.keep else {
            return;
        };
        // Safety: an all-zero `Py_buffer` is a valid value of the struct (null
        // pointers, zero sizes); it only fills the place of the view taken out and is
        // never passed to CPython.
        let placeholder = Box::new(unsafe { std::mem::zeroed() });
        let mut view = std::mem::replace(view, placeholder);
        // Safety: `PyThreadState_GetUnchecked` only reads this thread's current
        // thread state; a non-null one means this thread holds that interpreter's
        // GIL (a thread state is detached whenever its GIL is released).
        let here = unsafe {
            let ts = ffi::compat::PyThreadState_GetUnchecked();
            !ts.is_null() && ffi::PyThreadState_GetInterpreter(ts) as usize == owner.interp
        };
        // An ended owner's address may have been reused by a new interpreter: only
        // a live owner is "here" (its own teardown leaks what is left, see `defer`).
        let here = here && owner.state.lock().alive;
        if here {
            // Safety: we hold the owner's GIL (above); the view was acquired there.
            unsafe { release(&mut view) };
        } else {
            owner.defer(view);
        }
    }
}

/// Releases a `Py_buffer` (and so the reference it holds on its object).
///
/// # Safety
/// The GIL of the interpreter that acquired it is held.
unsafe fn release(view: &mut ffi::Py_buffer) {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        ffi::PyBuffer_Release(view);
    }
}

struct Garbage(Box<ffi::Py_buffer>);

/// Releases every `Py_buffer` handed back to an owner.
///
/// # Safety
/// That owner's GIL is held.
unsafe fn release_all(garbage: Vec<Garbage>) {
    for Garbage(mut v) in garbage {
        // Safety: the owner's GIL is held (this function's contract).
        unsafe { release(&mut v) };
    }
}
// Safety: moved between threads only to be released by the owner, under its GIL.
unsafe impl Send for Garbage {}

struct OwnerState {
    alive: bool,
    garbage: Vec<Garbage>,
    /// A pending call that will release `garbage` is queued in the interpreter.
    scheduled: bool,
}

/// An interpreter that lends memory to regions, and where their `Py_buffer`s go
/// back to be released.
pub(crate) struct Owner {
    /// `PyInterpreterState*`, for identity only (never dereferenced here).
    interp: usize,
    state: Mutex<OwnerState>,
    /// Makes the interpreter run Python code soon (its pending calls run then); for
    /// a worker, writing its wake fd. The main interpreter needs none: its pending
    /// calls run whenever any of its threads next runs Python code.
    wake: Option<Box<dyn Fn() + Send + Sync>>,
}

static OWNERS: Mutex<Vec<Arc<Owner>>> = Mutex::new(Vec::new());

impl Owner {
    /// Registers the current interpreter as a lender.
    ///
    /// # Safety
    /// The current thread holds the GIL of the interpreter to register; it calls
    /// [`Owner::unregister`] before the interpreter ends.
    pub(crate) unsafe fn register_current(wake: Option<Box<dyn Fn() + Send + Sync>>) -> Arc<Owner> {
        // Safety: GIL held and arguments live (this function's contract).
        unsafe {
            let o = Arc::new(Owner {
                interp: ffi::PyInterpreterState_Get() as usize,
                state: Mutex::new(OwnerState {
                    alive: true,
                    garbage: Vec::new(),
                    scheduled: false,
                }),
                wake,
            });
            OWNERS.lock().push(o.clone());
            o
        }
    }

    /// The interpreter is about to end: releases what was handed back, and from now
    /// on leaks (never touches) the objects of its regions still viewed elsewhere.
    ///
    /// # Safety
    /// Called on the registering thread, its GIL held, before the interpreter ends.
    pub(crate) unsafe fn unregister(self: &Arc<Self>) {
        // Safety: GIL held and arguments live (this function's contract).
        unsafe {
            OWNERS.lock().retain(|o| !Arc::ptr_eq(o, self));
            let garbage = {
                let mut g = self.state.lock();
                g.alive = false;
                std::mem::take(&mut g.garbage)
            };
            release_all(garbage);
        }
    }

    /// The owner record of the current interpreter (the main interpreter registers
    /// itself on first use); `None` for an interpreter interloop did not create.
    ///
    /// # Safety
    /// The current thread holds an interpreter's GIL.
    unsafe fn current() -> Option<Arc<Owner>> {
        // Safety: GIL held and arguments live (this function's contract).
        unsafe {
            let me = ffi::PyInterpreterState_Get() as usize;
            let mut owners = OWNERS.lock();
            if let Some(o) = owners.iter().find(|o| o.interp == me) {
                return Some(o.clone());
            }
            if me != ffi::PyInterpreterState_Main() as usize {
                return None;
            }
            let o = Arc::new(Owner {
                interp: me,
                state: Mutex::new(OwnerState {
                    alive: true,
                    garbage: Vec::new(),
                    scheduled: false,
                }),
                wake: None,
            });
            owners.push(o.clone());
            Some(o)
        }
    }

    /// Releases what other interpreters handed back.
    ///
    /// # Safety
    /// This owner's GIL is held.
    unsafe fn collect_here(&self) {
        // Safety: GIL held and arguments live (this function's contract).
        unsafe {
            let garbage = {
                let mut g = self.state.lock();
                g.scheduled = false;
                std::mem::take(&mut g.garbage)
            };
            release_all(garbage);
        }
    }

    /// Hands a `Py_buffer` back to its interpreter from elsewhere.
    fn defer(self: &Arc<Self>, view: Box<ffi::Py_buffer>) {
        let woke = {
            let mut g = self.state.lock();
            if !g.alive {
                // The interpreter is gone: its object is leaked with it (see the
                // module docs); the struct itself can go.
                drop(view);
                return;
            }
            g.garbage.push(Garbage(view));
            if g.scheduled {
                false
            } else {
                let arg = Arc::into_raw(self.clone()) as *mut c_void;
                // Safety: the interpreter is alive (`alive` is cleared under this
                // lock, on its own thread, before it ends); `_PyEval_AddPendingCall`
                // may be called from any thread and only takes the interpreter's
                // pending-calls lock, which is never held while waiting for ours.
                if unsafe {
                    _PyEval_AddPendingCall(
                        self.interp as *mut ffi::PyInterpreterState,
                        run_release,
                        arg,
                        0,
                    )
                } == 0
                {
                    g.scheduled = true;
                } else {
                    // Queue full: the next hand-back (or the owner's next
                    // `from_object`) tries again.
                    // Safety: `arg` came from `Arc::into_raw` just above, unused.
                    drop(unsafe { Arc::from_raw(arg as *const Owner) });
                }
                g.scheduled
            }
        };
        if woke {
            if let Some(w) = &self.wake {
                w();
            }
        }
    }
}

/// # Safety
/// A pending call: run by CPython with the owner interpreter's GIL held; `arg` came
/// from `Box::into_raw` in `defer` and is used once.
unsafe extern "C" fn run_release(arg: *mut c_void) -> c_int {
    // Safety: a pending call runs with its interpreter's GIL held; `arg` is what `schedule_release` passed.
    unsafe {
        crate::capi::entry(c"buffer release", || {
            // Safety: `arg` came from `Arc::into_raw` in `defer` and is used once.
            let owner = Arc::from_raw(arg as *const Owner);
            // Safety: pending calls run in the interpreter they were added to, on one of
            // its threads, with its GIL held.
            owner.collect_here();
            0
        })
    }
}

/// Regions parked under an id while the bytes that refer to them travel on their
/// own (a pool job's payload, a job's result): the receiver takes them with
/// [`unstash`]. Whoever gives up a payload or result unread takes them too, so
/// nothing is held longer than the job.
static STASH: Mutex<Option<std::collections::HashMap<u64, Vec<Arc<Region>>>>> = Mutex::new(None);
static NEXT_STASH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn stash(bufs: Vec<Arc<Region>>) -> u64 {
    let id = NEXT_STASH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    STASH
        .lock()
        .get_or_insert_with(Default::default)
        .insert(id, bufs);
    id
}

/// How many stash entries are waiting (for tests: every path must take its own).
pub(crate) fn stash_len() -> usize {
    STASH.lock().as_ref().map_or(0, |m| m.len())
}

/// The regions parked under `id`, once; `None` if already taken.
pub(crate) fn unstash(id: u64) -> Option<Vec<Arc<Region>>> {
    STASH.lock().as_mut().and_then(|m| m.remove(&id))
}

/// The object layout of the exporter type (`view`): a Python object holding one
/// `Arc<Region>`.
#[repr(C)]
pub(super) struct RegionObject {
    pub(super) ob_base: ffi::PyObject,
    /// From `Arc::into_raw`; never null for instances made by `new_view`.
    pub(super) region: *const Region,
}

/// The region behind `obj` if it is an exporter of type `tp`, or a memoryview (of
/// a memoryview...) of one; a new `Arc`. Clears any error from the lookups.
///
/// # Safety
/// The current interpreter's GIL is held; `obj` is a live object or null.
pub(crate) unsafe fn base_region(
    obj: *mut ffi::PyObject,
    tp: *mut ffi::PyTypeObject,
) -> Option<Arc<Region>> {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        if obj.is_null() || tp.is_null() {
            return None;
        }
        ffi::Py_IncRef(obj);
        let mut cur = obj;
        for _ in 0..8 {
            if ffi::Py_TYPE(cur) == tp {
                let r = (*(cur as *mut RegionObject)).region;
                let out = if r.is_null() {
                    None
                } else {
                    // Safety: `r` came from `Arc::into_raw` and the object (alive:
                    // we hold a reference) keeps that count.
                    Arc::increment_strong_count(r);
                    Some(Arc::from_raw(r))
                };
                ffi::Py_DecRef(cur);
                return out;
            }
            if ffi::PyMemoryView_Check(cur) == 0 {
                break;
            }
            let next = ffi::PyObject_GetAttrString(cur, c"obj".as_ptr());
            ffi::Py_DecRef(cur);
            if next.is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            cur = next;
        }
        ffi::Py_DecRef(cur);
        None
    }
}
