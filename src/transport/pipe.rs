//! `PipeReader` and `PipeWriter`: the hot path of asyncio's
//! `unix_events._UnixReadPipeTransport` and `_UnixWritePipeTransport` (see the module
//! docs in `mod.rs`). The descriptor may be a pipe, a socket or a character device.
use super::{fatal, is_bytes_like, os_error, read_bytes, rearm, truthy, would_block, MAX_READ};
use crate::event_loop::GilCell;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PySlice};
use pyo3::{PyTraverseError, PyVisit};
use std::os::fd::RawFd;

#[pyclass(frozen, module = "interloop._interloop", name = "PipeReader")]
pub struct PipeReader {
    /// (transport, loop)
    transport: GilCell<Option<(Py<PyAny>, Py<PyAny>)>>,
    fd: RawFd,
    /// A short read means the descriptor is drained (pipes, stream sockets). Not so
    /// for a terminal in canonical mode (one line per read) or a datagram socket (one
    /// message per read): the reactor re-arms such a reader after every event.
    pub(super) drains: bool,
}

#[pymethods]
impl PipeReader {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, loop_: Py<PyAny>, drains: bool) -> Self {
        PipeReader { transport: GilCell::new(Some((transport, loop_))), fd, drains }
    }

    /// The reader callback, asyncio's `_read_ready`: one `read`, then
    /// `data_received`; EOF goes to the transport's `_interloop_on_eof`, a read error
    /// to `_fatal_error`. An exception from `data_received` propagates to the loop,
    /// as in asyncio.
    ///
    /// When `drains`, the reactor does not re-arm this reader after an event: a short
    /// read drained the descriptor, so a full-sized read re-arms it (and so does an
    /// exception).
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some((t, lp)) = self
            .transport
            .with(py, |t| t.as_ref().map(|(t, l)| (t.clone_ref(py), l.clone_ref(py))))
        else {
            return Ok(());
        };
        let (t, lp) = (t.bind(py), lp.bind(py));
        let fd = self.fd;
        // Safety: `read_bytes` passes a live, writable buffer of `len` bytes that
        // nothing else uses during the call; `read` writes at most `len` bytes.
        let data = match read_bytes(py, |buf, len| unsafe { libc::read(fd, buf.cast(), len) }) {
            Ok(d) => d,
            Err(e) if would_block(e) => return Ok(()),
            Err(e) => return fatal(t, os_error(e), "Fatal read error on pipe transport"),
        };
        let n = data.as_bytes().len();
        if n == 0 {
            t.call_method0(intern!(py, "_interloop_on_eof"))?;
            return Ok(());
        }
        let protocol = t.getattr(intern!(py, "_protocol"))?;
        let result = protocol.call_method1(intern!(py, "data_received"), (data,));
        if self.drains && (n == MAX_READ || result.is_err()) {
            rearm(lp, fd)?;
        }
        result.map(drop)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.transport
            .traverse_with(|t| {
                if let Some((t, l)) = t {
                    visit.call(t)?;
                    visit.call(l)?;
                }
                Ok(())
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        Python::attach(|py| drop(self.transport.try_with(py, |t| t.take())));
    }
}

#[pyclass(frozen, module = "interloop._interloop", name = "PipeWriter")]
pub struct PipeWriter {
    /// (transport, asyncio's write function for everything but the fast path)
    state: GilCell<Option<(Py<PyAny>, Py<PyAny>)>>,
    fd: RawFd,
}

#[pymethods]
impl PipeWriter {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, fallback: Py<PyAny>) -> Self {
        PipeWriter { state: GilCell::new(Some((transport, fallback))), fd }
    }

    /// `transport.write(data)`: a direct `write` when nothing is buffered; the rest
    /// of a partial write, would-block and every error go to asyncio's `write`
    /// (which retries the write once, then buffers and registers the writer, or
    /// counts the lost connection and reports the error, as it decides).
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some((t, fallback)) =
            self.state.with(py, |s| s.as_ref().map(|(t, f)| (t.clone_ref(py), f.clone_ref(py))))
        else {
            return Err(PyOSError::new_err("transport is closed"));
        };
        let t = t.bind(py);
        let slow = |data: &Bound<'_, PyAny>| fallback.bind(py).call1((t, data)).map(drop);
        if !is_bytes_like(data)
            || truthy(t, intern!(py, "_conn_lost"))?
            || truthy(t, intern!(py, "_closing"))?
            || truthy(t, intern!(py, "_buffer"))?
        {
            return slow(data);
        }
        let Ok(buf) = PyBuffer::<u8>::get(data) else { return slow(data) };
        let len = buf.len_bytes();
        if !buf.is_c_contiguous() || len == 0 {
            return slow(data);
        }
        // Safety: the buffer is C-contiguous, `len` bytes long, and kept alive and
        // unmoved by `buf` (a held buffer export) for the duration of the call.
        let n = unsafe { libc::write(self.fd, buf.buf_ptr().cast(), len) };
        drop(buf);
        if n < 0 {
            // Would-block or an error: asyncio's write decides (its retry sees the
            // same condition: a full pipe, or EPIPE once the reader has gone).
            return slow(data);
        }
        let n = n as usize;
        if n == len {
            return Ok(());
        }
        let rest = PyMemoryView::from(data)?.get_item(PySlice::new(py, n as isize, len as isize, 1))?;
        slow(&rest)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.state
            .traverse_with(|s| {
                if let Some((t, f)) = s {
                    visit.call(t)?;
                    visit.call(f)?;
                }
                Ok(())
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        Python::attach(|py| drop(self.state.try_with(py, |s| s.take())));
    }
}
