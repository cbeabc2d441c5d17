//! What every native transport object shares: its state cell, the shared read
//! buffer, errno handling, and asyncio's attributes read without a Python frame.
use crate::capi::cell::GilCell;
use crate::event_loop::LoopCore;
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PySystemExit};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyString};
use std::os::fd::RawFd;

/// The state most hot-path objects hold: their transport and a partner (the loop, or
/// asyncio's method for the slow path), until the transport lets them go.
pub(crate) type Pair = GilCell<Option<(Py<PyAny>, Py<PyAny>)>>;

/// New references to what a [`Pair`] holds, or `None` once it let go.
pub(crate) fn pair_get(cell: &Pair, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyAny>)> {
    cell.with(py, |p| {
        p.as_ref().map(|(a, b)| (a.clone_ref(py), b.clone_ref(py)))
    })
}

/// `__traverse__` of a [`Pair`] (nothing while it is borrowed: then it is in use).
pub(crate) fn traverse_pair(
    cell: &Pair,
    visit: &pyo3::PyVisit<'_>,
) -> Result<(), pyo3::PyTraverseError> {
    cell.traverse_with(|p| {
        if let Some((a, b)) = p {
            visit.call(a)?;
            visit.call(b)?;
        }
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// `__clear__` of a cell: drops what it holds (unless it is borrowed).
pub(crate) fn clear_cell<T>(cell: &GilCell<Option<T>>) {
    Python::attach(|py| drop(cell.try_with(py, |c| c.take())));
}

/// asyncio's `max_size` of socket and pipe transports: the most one read asks for.
pub(crate) const MAX_READ: usize = 256 * 1024;

/// One receive buffer for every transport of the process: a read copies out of it
/// into a new `bytes` before any Python code runs, so it is never shared by two reads.
static READ_BUF: std::sync::LazyLock<GilCell<Vec<u8>>> =
    std::sync::LazyLock::new(|| GilCell::new(Vec::new()));

/// Runs one read-like system call, `read(ptr, len) -> count or -1`, on the shared
/// buffer and copies what it read into a new `bytes`. `Err` holds the errno.
///
/// `read` must write at most `len` bytes at `ptr` and nothing after it returns.
pub(crate) fn read_bytes<'py>(
    py: Python<'py>,
    read: impl FnMut(*mut u8, usize) -> isize,
) -> Result<Bound<'py, PyBytes>, i32> {
    // Allocating a `bytes` runs no Python code (bytes are not GC-tracked).
    read_with(py, read, |data| PyBytes::new(py, data))
}

/// Like [`read_bytes`], but hands what was read to `consume` (which must run no
/// Python code: the shared buffer is borrowed meanwhile).
pub(crate) fn read_with<'py, R>(
    py: Python<'py>,
    mut read: impl FnMut(*mut u8, usize) -> isize,
    consume: impl FnOnce(&[u8]) -> R,
) -> Result<R, i32> {
    // `run` runs once (shared buffer, or a private one if that is busy).
    let mut consume = Some(consume);
    let mut run = |buf: &mut Vec<u8>| {
        if buf.len() < MAX_READ {
            buf.resize(MAX_READ, 0);
        }
        let n = read(buf.as_mut_ptr(), MAX_READ);
        if n < 0 {
            Err(errno())
        } else {
            Ok(consume.take().expect("read_with runs once")(
                &buf[..n as usize],
            ))
        }
    };
    match READ_BUF.try_with(py, &mut run) {
        Some(r) => r,
        // Re-entered (a reader ran from inside another's allocation): use a private
        // buffer rather than share.
        None => run(&mut Vec::new()),
    }
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) fn would_block(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK || errno == libc::EINTR
}

/// The exception CPython's `socket` and `os` functions raise for `errno`:
/// `OSError(errno, strerror)`, which CPython turns into the matching subclass
/// (`ConnectionRefusedError`, `BrokenPipeError`, ...).
pub(crate) fn os_error(errno: i32) -> PyErr {
    let message = std::io::Error::from_raw_os_error(errno).to_string();
    // Rust appends " (os error N)" to strerror's text; Python does not.
    let message = match message.rfind(" (os error ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    PyOSError::new_err((errno, message))
}

pub(crate) fn is_fatal(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyKeyboardInterrupt>(py) || e.is_instance_of::<PySystemExit>(py)
}

/// Reports `e` through the transport's `_fatal_error(exc, message)`, as asyncio's
/// transport code does (KeyboardInterrupt and SystemExit propagate).
pub(crate) fn fatal(transport: &Bound<'_, PyAny>, e: PyErr, message: &str) -> PyResult<()> {
    let py = transport.py();
    if is_fatal(py, &e) {
        return Err(e);
    }
    transport.call_method1(intern!(py, "_fatal_error"), (e.value(py), message))?;
    Ok(())
}

/// What asyncio's transports accept as data: `bytes`, `bytearray`, `memoryview`.
pub(crate) fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || data.is_instance_of::<PyMemoryView>()
}

/// The instance dictionary of a transport (a new reference), for [`attr`].
pub(crate) fn instance_dict<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    // Safety: GIL held (token in `obj`); `PyObject_GenericGetDict` returns a new
    // reference to the object's `__dict__` (creating it if needed) or NULL with an
    // exception set, which `from_owned_ptr_or_err` turns into `Err`.
    let d = unsafe {
        Bound::from_owned_ptr_or_err(
            obj.py(),
            ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut()),
        )?
    };
    Ok(d.cast_into::<PyDict>()?)
}

/// `getattr(obj, name)` for the attributes asyncio's transports set on the instance
/// in `__init__` (`_conn_lost`, `_protocol`, `_buffer`, ...): one lookup in the
/// instance dictionary `dict` (of `obj`, from [`instance_dict`]) instead of the
/// generic attribute protocol, which first searches the class's whole MRO for a data
/// descriptor (transport classes have none by these names). Falls back to `getattr`
/// when the instance does not have the attribute (a class attribute).
#[inline]
pub(crate) fn attr<'py>(
    obj: &Bound<'py, PyAny>,
    dict: &Bound<'py, PyDict>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    match dict.get_item(name)? {
        Some(v) => Ok(v),
        None => obj.getattr(name),
    }
}

pub(crate) fn truthy(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, pyo3::types::PyString>,
) -> PyResult<bool> {
    obj.getattr(name)?.is_truthy()
}

/// Re-arms `fd` on the loop (see 3. above).
pub(crate) fn rearm(lp: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<()> {
    let py = lp.py();
    match lp.cast::<LoopCore>() {
        Ok(core) => {
            core.get().rearm_fd(py, fd);
            Ok(())
        }
        Err(_) => lp.call_method1(intern!(py, "_rearm"), (fd,)).map(drop),
    }
}
