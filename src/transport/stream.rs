//! `SocketReader` and `SocketWriter`: see the module docs in `mod.rs`.
use super::{clear_cell, pair_get, fatal, is_bytes_like, os_error, read_bytes, rearm, traverse_pair, would_block, Pair, MAX_READ};
use crate::event_loop::GilCell;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;
use pyo3::{PyTraverseError, PyVisit};
use std::os::fd::RawFd;

#[pyclass(frozen, module = "interloop._interloop", name = "SocketReader")]
pub struct SocketReader {
    /// (transport, loop)
    transport: Pair,
    fd: RawFd,
}

#[pymethods]
impl SocketReader {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, loop_: Py<PyAny>) -> Self {
        SocketReader { transport: GilCell::new(Some((transport, loop_))), fd }
    }

    /// The reader callback: one `recv`, then `data_received`.
    ///
    /// The reactor does not re-arm this reader after an event (see `LoopCore`), so
    /// every path that may leave data unread re-arms it: a full-sized read, a
    /// buffered protocol's read, an exception.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
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

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        traverse_pair(&self.transport, &visit)
    }

    fn __clear__(&self) {
        clear_cell(&self.transport);
    }
}

impl SocketReader {
    /// One read. `Ok(true)`: the socket is known drained (a short read, would-block,
    /// EOF or a dead transport); `Ok(false)`: it may hold more (re-arm).
    fn read_once(&self, py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<bool> {
        // asyncio: `if self._conn_lost: return`.
        if t.getattr(intern!(py, "_conn_lost"))?.is_truthy()? {
            return Ok(true);
        }
        if !t.getattr(intern!(py, "_interloop_plain_protocol"))?.is_truthy()? {
            self.read_buffered(py, t)?;
            return Ok(false);
        }
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
        let protocol = t.getattr(intern!(py, "_protocol"))?;
        if let Err(e) = protocol.call_method1(intern!(py, "data_received"), (data,)) {
            fatal(t, e, "Fatal error: protocol.data_received() call failed.")?;
        }
        Ok(n < MAX_READ)
    }

    /// asyncio's `_read_ready__get_buffer`, natively: `get_buffer`, `recv_into`,
    /// `buffer_updated`, with the same errors.
    fn read_buffered(&self, py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<()> {
        let protocol = t.getattr(intern!(py, "_protocol"))?;
        let buf = match protocol.call_method1(intern!(py, "get_buffer"), (-1,)) {
            Ok(b) => match b.len() {
                Ok(0) => {
                    let e = pyo3::exceptions::PyRuntimeError::new_err("get_buffer() returned an empty buffer");
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

#[pyclass(frozen, module = "interloop._interloop", name = "SocketWriter")]
pub struct SocketWriter {
    /// (transport, asyncio's write function for everything but the fast path)
    state: Pair,
    fd: RawFd,
}

#[pymethods]
impl SocketWriter {
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd, fallback: Py<PyAny>) -> Self {
        SocketWriter { state: GilCell::new(Some((transport, fallback))), fd }
    }

    /// `transport.write(data)`.
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some((t, fallback)) = pair_get(&self.state, py) else {
            return Err(PyOSError::new_err("transport is closed"));
        };
        let t = t.bind(py);
        let slow = |data: &Bound<'_, PyAny>| fallback.bind(py).call1((t, data)).map(drop);
        // The fast path needs asyncio's preconditions for a direct send: a bytes-like
        // argument, no write_eof, no sendfile in progress, connection not lost, and
        // nothing buffered. Anything else takes asyncio's own path (and its errors).
        if !is_bytes_like(data)
            || t.getattr(intern!(py, "_eof"))?.is_truthy()?
            || !t.getattr(intern!(py, "_empty_waiter"))?.is_none()
            || t.getattr(intern!(py, "_conn_lost"))?.is_truthy()?
            || t.getattr(intern!(py, "_buffer"))?.is_truthy()?
        {
            return slow(data);
        }
        let Ok(buf) = PyBuffer::<u8>::get(data) else { return slow(data) };
        if !buf.is_c_contiguous() {
            return slow(data);
        }
        let len = buf.len_bytes();
        if len == 0 {
            return Ok(());
        }
        // Safety: the buffer is C-contiguous, `len` bytes long, and kept alive and
        // unmoved by `buf` (a held buffer export) for the duration of the call.
        let n = unsafe { libc::send(self.fd, buf.buf_ptr().cast(), len, 0) };
        drop(buf);
        if n < 0 {
            let e = super::errno();
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
        let rest = PyMemoryView::from(data)?.get_item(pyo3::types::PySlice::new(py, n as isize, len as isize, 1))?;
        slow(&rest)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        traverse_pair(&self.state, &visit)
    }

    fn __clear__(&self) {
        clear_cell(&self.state);
    }
}
