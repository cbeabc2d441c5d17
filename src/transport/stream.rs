//! `SocketReader` and `SocketWriter`: see the module docs in `mod.rs`.
use super::common::{
    attr, clear_cell, fatal, instance_dict, is_bytes_like, os_error, pair_get, read_bytes,
    read_with, rearm, traverse_pair, would_block, Pair, MAX_READ,
};
use crate::capi::cell::GilCell;
use crate::capi::{py_entry, MethodDef};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyOSError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};
use pyo3::{PyTraverseError, PyVisit};
use std::os::fd::RawFd;

#[pyclass(frozen, module = "interloop._interloop", name = "SocketReader")]
pub(crate) struct SocketReader {
    /// (transport, loop)
    transport: Pair,
    fd: RawFd,
    /// The transport's protocol and its kind, kept by the transport's
    /// `set_protocol` (asyncio assigns `_protocol` nowhere else while the connection
    /// is up), so a read needs no lookup for either.
    protocol: GilCell<Option<(Py<PyAny>, Kind)>>,
}

/// How a read hands its data to the protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `protocol.data_received(data)`.
    Plain,
    /// A `BufferedProtocol`: `get_buffer`, `recv_into`, `buffer_updated`.
    Buffered,
    /// asyncio's own `StreamReaderProtocol` over its own `StreamReader`, with their
    /// methods as asyncio defines them (the transport checks): what
    /// `data_received` → `feed_data` do, done here, appending the bytes read straight
    /// to the reader's `bytearray` (no `bytes` in between, no Python frame).
    Stream,
}

#[pymethods]
impl SocketReader {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, loop_: Py<PyAny>) -> Self {
        SocketReader {
            transport: GilCell::new(Some((transport, loop_))),
            fd,
            protocol: GilCell::new(None),
        }
    }

    /// Called by the transport's `set_protocol`; `kind`: 0 plain, 1 buffered, 2 an
    /// asyncio stream (see `Kind`).
    fn set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>, kind: u8) {
        let kind = match kind {
            1 => Kind::Buffered,
            2 => Kind::Stream,
            _ => Kind::Plain,
        };
        let old = self.protocol.with(py, |p| p.replace((protocol, kind)));
        drop(old); // outside the cell: dropping may run Python code
    }

    /// The reader callback: one `recv`, then `data_received`.
    ///
    /// The reactor does not re-arm this reader after an event (see `LoopCore`), so
    /// every path that may leave data unread re-arms it: a full-sized read, a
    /// buffered protocol's read, an exception.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        traverse_pair(&self.transport, &visit)?;
        self.protocol
            .traverse_with(|p| match p {
                Some((p, _)) => visit.call(p),
                None => Ok(()),
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        clear_cell(&self.transport);
        clear_cell(&self.protocol);
    }
}

impl SocketReader {
    /// [`Self::run`] as the loop's direct call (`event_loop::reader::DirectRead`);
    /// `callback` is a `SocketReader` (the classifier checked its exact type).
    pub(crate) fn run_direct(py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        // Safety: `classify_reader` gives this function only for an exact
        // `SocketReader`, and a handle's callback never changes.
        unsafe { callback.cast_unchecked::<SocketReader>() }
            .get()
            .run(py)
    }

    /// The reader callback's work, also run by the loop directly (no `tp_call`, no
    /// argument parsing).
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        let Some((t, lp)) = pair_get(&self.transport, py) else {
            return Ok(());
        };
        let lp = lp.bind(py);
        let rearm = || rearm(lp, self.fd);
        let result = self.read_once(py, t.bind(py));
        match result {
            Ok(true) => Ok(()),
            Ok(false) => rearm(),
            Err(e) => {
                let _ = rearm();
                Err(e)
            }
        }
    }

    /// One read. `Ok(true)`: the socket is known drained (a short read, would-block,
    /// EOF or a dead transport); `Ok(false)`: it may hold more (re-arm).
    fn read_once(&self, py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<bool> {
        let d = instance_dict(t)?;
        // asyncio: `if self._conn_lost: return`.
        if attr(t, &d, intern!(py, "_conn_lost"))?.is_truthy()? {
            return Ok(true);
        }
        let Some((protocol, kind)) = self
            .protocol
            .with(py, |p| p.as_ref().map(|(p, b)| (p.clone_ref(py), *b)))
        else {
            return Ok(true); // no protocol yet: nothing can have been registered
        };
        let protocol = protocol.into_bound(py);
        match kind {
            Kind::Buffered => {
                self.read_buffered(py, t, &protocol)?;
                return Ok(false);
            }
            Kind::Stream => {
                if let Some((reader, buffer)) = stream_reader(&protocol)? {
                    return self.read_stream(py, t, &reader, &buffer);
                }
                // No reader (gone, or at EOF), or not asyncio's bytearray buffer:
                // asyncio's own `data_received`.
            }
            Kind::Plain => {}
        }
        self.read_plain(py, t, &protocol)
    }

    /// A read for a plain protocol: `recv`, then `protocol.data_received(data)`.
    fn read_plain(
        &self,
        py: Python<'_>,
        t: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let fd = self.fd;
        // Safety: `read_bytes` passes a live, writable buffer of `len` bytes that
        // nothing else uses during the call; `recv` writes at most `len` bytes.
        let result = read_bytes(py, |buf, len| unsafe { libc::recv(fd, buf.cast(), len, 0) });
        let data = match result {
            Ok(d) => d,
            Err(e) if would_block(e) => return Ok(true),
            Err(e) => {
                fatal(t, os_error(e), "Fatal read error on socket transport")?;
                return Ok(true);
            }
        };
        let n = data.as_bytes().len();
        if n == 0 {
            t.call_method0(intern!(py, "_read_ready__on_eof"))?;
            return Ok(true);
        }
        if let Err(e) = protocol.call_method1(intern!(py, "data_received"), (data,)) {
            fatal(t, e, "Fatal error: protocol.data_received() call failed.")?;
        }
        Ok(n < MAX_READ)
    }

    /// A read for a `Kind::Stream` protocol whose `StreamReader` is `reader`:
    /// `recv`, then `StreamReader.feed_data` (append, wake the waiter, pause reading
    /// past twice the reader's limit), as asyncio's code does it.
    fn read_stream(
        &self,
        py: Python<'_>,
        t: &Bound<'_, PyAny>,
        reader: &Bound<'_, PyAny>,
        buffer: &Bound<'_, PyByteArray>,
    ) -> PyResult<bool> {
        let fd = self.fd;
        // Safety: `read_with` passes a live, writable buffer of `len` bytes that
        // nothing else uses during the call; `recv` writes at most `len` bytes. The
        // `consume` closure only resizes a bytearray and copies into it: no Python
        // code runs (a bytearray's storage is raw memory, not GC-tracked).
        let result = read_with(
            py,
            |buf, len| unsafe { libc::recv(fd, buf.cast(), len, 0) },
            |data| unsafe { append(buffer, data).map(|()| data.len()) },
        );
        let n = match result {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                fatal(t, e, "Fatal error: protocol.data_received() call failed.")?;
                return Ok(true);
            }
            Err(e) if would_block(e) => return Ok(true),
            Err(e) => {
                fatal(t, os_error(e), "Fatal read error on socket transport")?;
                return Ok(true);
            }
        };
        if n == 0 {
            t.call_method0(intern!(py, "_read_ready__on_eof"))?;
            return Ok(true);
        }
        if let Err(e) = wake_and_throttle(reader, buffer) {
            fatal(t, e, "Fatal error: protocol.data_received() call failed.")?;
        }
        Ok(n < MAX_READ)
    }

    /// asyncio's `_read_ready__get_buffer`, natively: `get_buffer`, `recv_into`,
    /// `buffer_updated`, with the same errors.
    fn read_buffered(
        &self,
        py: Python<'_>,
        t: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let buf = match protocol.call_method1(intern!(py, "get_buffer"), (-1,)) {
            Ok(b) => match b.len() {
                Ok(0) => {
                    let e = pyo3::exceptions::PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    );
                    return fatal(t, e, "Fatal error: protocol.get_buffer() call failed.");
                }
                Ok(_) => b,
                Err(e) => return fatal(t, e, "Fatal error: protocol.get_buffer() call failed."),
            },
            Err(e) => return fatal(t, e, "Fatal error: protocol.get_buffer() call failed."),
        };
        let sock = t.getattr(intern!(py, "_sock"))?;
        let nbytes: usize = match sock.call_method1(intern!(py, "recv_into"), (buf,)) {
            Ok(n) => n.extract()?,
            Err(e)
                if e.is_instance_of::<pyo3::exceptions::PyBlockingIOError>(py)
                    || e.is_instance_of::<pyo3::exceptions::PyInterruptedError>(py) =>
            {
                return Ok(())
            }
            Err(e) => return fatal(t, e, "Fatal read error on socket transport"),
        };
        if nbytes == 0 {
            t.call_method0(intern!(py, "_read_ready__on_eof"))?;
            return Ok(());
        }
        if let Err(e) = protocol.call_method1(intern!(py, "buffer_updated"), (nbytes,)) {
            return fatal(t, e, "Fatal error: protocol.buffer_updated() call failed.");
        }
        Ok(())
    }
}

/// `protocol._stream_reader` of a `StreamReaderProtocol` and its `bytearray` buffer,
/// unless the reader is gone or at EOF, or its buffer is not a `bytearray` (then
/// asyncio's own `data_received` runs: it drops the data, raises `feed_data`'s
/// assertion, or deals with the unusual buffer).
fn stream_reader<'py>(
    protocol: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyByteArray>)>> {
    let py = protocol.py();
    let wr = protocol.getattr(intern!(py, "_stream_reader_wr"))?;
    if wr.is_none() {
        return Ok(None);
    }
    let reader = wr.call0()?;
    if reader.is_none() || reader.getattr(intern!(py, "_eof"))?.is_truthy()? {
        return Ok(None);
    }
    match reader
        .getattr(intern!(py, "_buffer"))?
        .cast_into_exact::<PyByteArray>()
    {
        Ok(buffer) => Ok(Some((reader, buffer))),
        Err(_) => Ok(None),
    }
}

/// `buffer.extend(data)` for a bytearray, without a `bytes` in between.
///
/// # Safety
/// GIL held (token in `buffer`); `data` must not point into `buffer`.
unsafe fn append(buffer: &Bound<'_, PyByteArray>, data: &[u8]) -> PyResult<()> {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe {
        if data.is_empty() {
            return Ok(());
        }
        let py = buffer.py();
        let p = buffer.as_ptr();
        let old = ffi::PyByteArray_Size(p);
        // Fails (BufferError) while the bytearray's buffer is exported, as `extend` does;
        // over-allocates like `extend`.
        if ffi::PyByteArray_Resize(p, old + data.len() as ffi::Py_ssize_t) < 0 {
            return Err(PyErr::fetch(py));
        }
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            ffi::PyByteArray_AsString(p).cast::<u8>().add(old as usize),
            data.len(),
        );
        Ok(())
    }
}

/// The rest of `StreamReader.feed_data` after the append: `_wakeup_waiter()`, then
/// `pause_reading()` once the buffer holds more than twice the limit.
fn wake_and_throttle(reader: &Bound<'_, PyAny>, buffer: &Bound<'_, PyByteArray>) -> PyResult<()> {
    let py = reader.py();
    let waiter = reader.getattr(intern!(py, "_waiter"))?;
    if !waiter.is_none() {
        reader.setattr(intern!(py, "_waiter"), py.None())?;
        if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
    }
    let transport = reader.getattr(intern!(py, "_transport"))?;
    if transport.is_none() || reader.getattr(intern!(py, "_paused"))?.is_truthy()? {
        return Ok(());
    }
    let limit = reader.getattr(intern!(py, "_limit"))?;
    let twice = limit.mul(2)?;
    if !(buffer.len()).into_pyobject(py)?.gt(twice)? {
        return Ok(());
    }
    match transport.call_method0(intern!(py, "pause_reading")) {
        Ok(_) => reader.setattr(intern!(py, "_paused"), true),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyNotImplementedError>(py) => {
            reader.setattr(intern!(py, "_transport"), py.None())
        }
        Err(e) => Err(e),
    }
}

#[pyclass(frozen, module = "interloop._interloop", name = "SocketWriter")]
pub(crate) struct SocketWriter {
    /// (transport, asyncio's write function for everything but the fast path)
    state: Pair,
    fd: RawFd,
}

#[pymethods]
impl SocketWriter {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, fallback: Py<PyAny>) -> Self {
        SocketWriter {
            state: GilCell::new(Some((transport, fallback))),
            fd,
        }
    }

    /// `transport.write(data)`.
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.write(py, data)
    }

    /// This writer as a builtin function of one argument (`METH_O`), which is what
    /// the transport installs as its `write`: calling it from Python costs no
    /// argument tuple nor keyword parsing (`transport.write(data)` runs once per
    /// message).
    fn function(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        static WRITE: MethodDef = MethodDef(ffi::PyMethodDef {
            ml_name: c"write".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: write_o,
            },
            ml_flags: ffi::METH_O,
            ml_doc: c"write(data)\n--\n\nWrites bytes-like data to the transport.".as_ptr(),
        });
        // Safety: GIL held; `WRITE` is 'static and never written; the function keeps a
        // strong reference to `slf` (its `__self__`), which `write_o` receives.
        unsafe {
            let f = ffi::PyCFunction_NewEx(
                &WRITE.0 as *const _ as *mut _,
                slf.as_ptr(),
                std::ptr::null_mut(),
            );
            Ok(Bound::from_owned_ptr_or_err(slf.py(), f)?.unbind())
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        traverse_pair(&self.state, &visit)
    }

    fn __clear__(&self) {
        clear_cell(&self.state);
    }
}

impl SocketWriter {
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some((t, fallback)) = pair_get(&self.state, py) else {
            return Err(PyOSError::new_err("transport is closed"));
        };
        let t = t.bind(py);
        let slow = |data: &Bound<'_, PyAny>| fallback.bind(py).call1((t, data)).map(drop);
        // The fast path needs asyncio's preconditions for a direct send: a bytes-like
        // argument, no write_eof, no sendfile in progress, connection not lost, and
        // nothing buffered. Anything else takes asyncio's own path (and its errors).
        if !is_bytes_like(data) {
            return slow(data);
        }
        let d = instance_dict(t)?;
        if attr(t, &d, intern!(py, "_eof"))?.is_truthy()?
            || !attr(t, &d, intern!(py, "_empty_waiter"))?.is_none()
            || attr(t, &d, intern!(py, "_conn_lost"))?.is_truthy()?
            || attr(t, &d, intern!(py, "_buffer"))?.is_truthy()?
        {
            return slow(data);
        }
        let n = if let Ok(b) = data.cast_exact::<PyBytes>() {
            // `bytes` is immutable and `data` holds it: its storage stays put during
            // the call. Cheaper than a buffer export, which allocates.
            let bytes = b.as_bytes();
            if bytes.is_empty() {
                return Ok(());
            }
            // Safety: `bytes` is a live slice of `bytes.len()` bytes (see above).
            (
                unsafe { libc::send(self.fd, bytes.as_ptr().cast(), bytes.len(), 0) },
                bytes.len(),
            )
        } else {
            let Ok(buf) = PyBuffer::<u8>::get(data) else {
                return slow(data);
            };
            if !buf.is_c_contiguous() {
                return slow(data);
            }
            let len = buf.len_bytes();
            if len == 0 {
                return Ok(());
            }
            // Safety: the buffer is C-contiguous, `len` bytes long, and kept alive and
            // unmoved by `buf` (a held buffer export) for the duration of the call.
            (
                unsafe { libc::send(self.fd, buf.buf_ptr().cast(), len, 0) },
                len,
            )
        };
        let (n, len) = n;
        if n < 0 {
            let e = super::common::errno();
            if would_block(e) {
                return slow(data);
            }
            return fatal(t, os_error(e), "Fatal write error on socket transport");
        }
        let n = n as usize;
        if n == len {
            return Ok(());
        }
        // Partial: asyncio's write buffers the rest and registers the writer.
        let rest = PyMemoryView::from(data)?.get_item(pyo3::types::PySlice::new(
            py,
            n as isize,
            len as isize,
            1,
        ))?;
        slow(&rest)
    }
}

/// The `METH_O` entry of [`SocketWriter::function`].
///
/// # Safety
/// A `METH_O` builtin: called by CPython with the main GIL held, `slf` the
/// `SocketWriter` given to `PyCFunction_NewEx` and `data` a borrowed argument.
unsafe extern "C" fn write_o(
    slf: *mut ffi::PyObject,
    data: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // Safety: CPython calls a builtin function with the main GIL held, `slf` its
    // `__self__` (the `SocketWriter` given to `PyCFunction_NewEx`, kept alive by the
    // function) and `data` a borrowed argument.
    unsafe {
        py_entry(c"socket write", |py| {
            let w = Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<SocketWriter>();
            let data = Bound::from_borrowed_ptr(py, data);
            w.get().write(py, &data)?;
            Ok(ffi::Py_None()) // immortal: no reference to give
        })
    }
}
