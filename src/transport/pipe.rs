//! `PipeReader` and `PipeWriter`: the hot path of asyncio's
//! `unix_events._UnixReadPipeTransport` and `_UnixWritePipeTransport` (see the module
//! docs in `mod.rs`). The descriptor may be a pipe, a socket or a character device.
use super::common::{
    clear_cell, errno, fatal, is_bytes_like, os_error, pair_get, read_bytes, rearm, traverse_pair,
    truthy, would_block, Pair, MAX_READ,
};
use crate::capi::cell::GilCell;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyMemoryView, PySlice};
use pyo3::{PyTraverseError, PyVisit};
use std::os::fd::RawFd;

#[pyclass(frozen, module = "interloop._interloop", name = "PipeReader")]
pub(crate) struct PipeReader {
    /// (transport, loop)
    transport: Pair,
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
        PipeReader {
            transport: GilCell::new(Some((transport, loop_))),
            fd,
            drains,
        }
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
        let Some((t, lp)) = pair_get(&self.transport, py) else {
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
        traverse_pair(&self.transport, &visit)
    }

    fn __clear__(&self) {
        clear_cell(&self.transport);
    }
}

#[pyclass(frozen, module = "interloop._interloop", name = "PipeWriter")]
pub(crate) struct PipeWriter {
    /// (transport, asyncio's write function for everything but the fast path)
    state: Pair,
    fd: RawFd,
}

#[pymethods]
impl PipeWriter {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, fallback: Py<PyAny>) -> Self {
        PipeWriter {
            state: GilCell::new(Some((transport, fallback))),
            fd,
        }
    }

    /// `transport.write(data)`: a direct `write` when nothing is buffered; the rest
    /// of a partial write, would-block and every error go to asyncio's `write`
    /// (which retries the write once, then buffers and registers the writer, or
    /// counts the lost connection and reports the error, as it decides).
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some((t, fallback)) = pair_get(&self.state, py) else {
            return Err(PyOSError::new_err("transport is closed"));
        };
        let t = t.bind(py);
        let slow = |data: &Bound<'_, PyAny>| fallback.bind(py).call1((t, data)).map(drop);
        if !is_bytes_like(data)
            || truthy(t, intern!(py, "_conn_lost"))?
            || truthy(t, intern!(py, "_closing"))?
        {
            return slow(data);
        }
        let Ok(buf) = PyBuffer::<u8>::get(data) else {
            return slow(data);
        };
        let len = buf.len_bytes();
        if !buf.is_c_contiguous() || len == 0 {
            return slow(data);
        }
        let pending = t.getattr(intern!(py, "_buffer"))?;
        if pending.is_truthy()? {
            // Already waiting for the pipe: asyncio appends and maybe pauses the
            // protocol (its writer callback is registered).
            drop(buf);
            return append(t, &pending, data);
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
        let rest =
            PyMemoryView::from(data)?.get_item(PySlice::new(py, n as isize, len as isize, 1))?;
        slow(&rest)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        traverse_pair(&self.state, &visit)
    }

    fn __clear__(&self) {
        clear_cell(&self.state);
    }
}

/// asyncio's `self._buffer += data; self._maybe_pause_protocol()`, with the pause
/// check (a Python method) called only when the buffer is over the high-water mark
/// and the protocol is not paused yet: otherwise it would do nothing.
fn append(
    t: &Bound<'_, PyAny>,
    pending: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = t.py();
    pending.call_method1(intern!(py, "extend"), (data,))?;
    let size = pending.len()?;
    let high: usize = t.getattr(intern!(py, "_high_water"))?.extract()?;
    if size > high && !truthy(t, intern!(py, "_protocol_paused"))? {
        t.call_method0(intern!(py, "_maybe_pause_protocol"))?;
    }
    Ok(())
}

/// The writer callback of a write pipe transport with data buffered: asyncio's
/// `_write_ready`, one `write` of the buffer, natively. A partial write deletes what
/// was written from the front of the buffer (a `bytearray`, which does that without
/// moving the rest); the end of the buffer and errors do what asyncio does.
#[pyclass(frozen, module = "interloop._interloop", name = "PipeFlusher")]
pub(crate) struct PipeFlusher {
    /// (transport, asyncio's `_write_ready` for anything unexpected)
    state: Pair,
    fd: RawFd,
}

#[pymethods]
impl PipeFlusher {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, fallback: Py<PyAny>) -> Self {
        PipeFlusher {
            state: GilCell::new(Some((transport, fallback))),
            fd,
        }
    }

    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some((t, fallback)) = pair_get(&self.state, py) else {
            return Ok(());
        };
        let t = t.bind(py);
        let pending = t.getattr(intern!(py, "_buffer"))?;
        let Ok(pending) = pending.cast_into_exact::<PyByteArray>() else {
            return fallback.bind(py).call1((t,)).map(drop);
        };
        let len = pending.len();
        if len == 0 {
            // asyncio asserts the buffer is not empty: its method says so.
            return fallback.bind(py).call1((t,)).map(drop);
        }
        // Safety: the bytearray's storage is `len` bytes at `data()`; no Python code
        // runs between reading the pointer and the end of `write` (nothing can
        // resize or free it), and the GIL is held throughout.
        let n = unsafe { libc::write(self.fd, pending.data().cast(), len) };
        if n < 0 {
            let e = errno();
            if would_block(e) {
                return Ok(());
            }
            return self.failed(t, &pending, os_error(e));
        }
        let n = n as usize;
        if n < len {
            if n > 0 {
                pending.del_item(PySlice::new(py, 0, n as isize, 1))?;
            }
            return Ok(());
        }
        // Everything written: stop watching, maybe resume the protocol (which may
        // write again), finish a pending close.
        pending.call_method0(intern!(py, "clear"))?;
        let lp = t.getattr(intern!(py, "_loop"))?;
        lp.call_method1(intern!(py, "_remove_writer"), (self.fd,))?;
        t.call_method0(intern!(py, "_maybe_resume_protocol"))?;
        if truthy(t, intern!(py, "_closing"))? {
            lp.call_method1(intern!(py, "_remove_reader"), (self.fd,))?;
            t.call_method1(intern!(py, "_call_connection_lost"), (py.None(),))?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        traverse_pair(&self.state, &visit)
    }

    fn __clear__(&self) {
        clear_cell(&self.state);
    }
}

impl PipeFlusher {
    /// asyncio: drop the buffer, count the lost connection, stop watching (its
    /// `_fatal_error` does not, the buffer being empty), report.
    fn failed(
        &self,
        t: &Bound<'_, PyAny>,
        pending: &Bound<'_, PyByteArray>,
        e: PyErr,
    ) -> PyResult<()> {
        let py = t.py();
        pending.call_method0(intern!(py, "clear"))?;
        let lost = t.getattr(intern!(py, "_conn_lost"))?.add(1)?;
        t.setattr(intern!(py, "_conn_lost"), lost)?;
        t.getattr(intern!(py, "_loop"))?
            .call_method1(intern!(py, "_remove_writer"), (self.fd,))?;
        fatal(t, e, "Fatal write error on pipe transport")
    }
}
