//! `DatagramReader` and `DatagramSender`: the hot path of asyncio's
//! `_SelectorDatagramTransport` (see the module docs in `mod.rs`).
//!
//! The reader takes one datagram per event, as asyncio does, and is re-armed by the
//! reactor like any reader: `datagram_received` is called once per loop iteration
//! per socket, in the same interleaving with other callbacks as on asyncio's loop.
use super::common::{
    clear_cell, errno, fatal, is_bytes_like, os_error, read_bytes, truthy, would_block,
};
use super::sockaddr::RawAddr;
use crate::capi::cell::GilCell;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};
use std::os::fd::RawFd;

/// The last sender seen by a reader: a peer that sends again (the common case) gets
/// the same address tuple without converting it again. Tuples are immutable.
struct LastPeer {
    raw: RawAddr,
    addr: Py<PyTuple>,
}

#[pyclass(frozen, module = "interloop._interloop", name = "DatagramReader")]
pub(crate) struct DatagramReader {
    transport: GilCell<Option<Py<PyAny>>>,
    last_peer: GilCell<Option<LastPeer>>,
    fd: RawFd,
}

#[pymethods]
impl DatagramReader {
    /// For `AF_INET` and `AF_INET6` sockets (other families keep asyncio's reader).
    #[new]
    fn new(transport: Py<PyAny>, fd: RawFd) -> Self {
        DatagramReader {
            transport: GilCell::new(Some(transport)),
            last_peer: GilCell::new(None),
            fd,
        }
    }

    /// The reader callback: asyncio's `_read_ready`, one `recvfrom` and
    /// `datagram_received(data, addr)`; an `OSError` goes to `error_received`.
    /// Exceptions from the protocol propagate to the loop, as in asyncio.
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some(t) = self
            .transport
            .with(py, |t| t.as_ref().map(|t| t.clone_ref(py)))
        else {
            return Ok(());
        };
        let t = t.bind(py);
        if truthy(t, intern!(py, "_conn_lost"))? {
            return Ok(());
        }
        let fd = self.fd;
        let mut peer = RawAddr::empty();
        let (addr_ptr, len_ptr) = peer.as_mut_ptr();
        // Safety: `read_bytes` passes a live, writable buffer of `len` bytes that
        // nothing else uses during the call; `addr_ptr`/`len_ptr` point into `peer`,
        // a `sockaddr_storage` whose size `len_ptr` holds, alive for the call.
        let result = read_bytes(py, |buf, len| unsafe {
            libc::recvfrom(fd, buf.cast(), len, 0, addr_ptr, len_ptr)
        });
        let protocol = t.getattr(intern!(py, "_protocol"))?;
        let data = match result {
            Ok(d) => d,
            Err(e) if would_block(e) => return Ok(()),
            Err(e) => {
                protocol.call_method1(intern!(py, "error_received"), (os_error(e).value(py),))?;
                return Ok(());
            }
        };
        let addr = self.peer_address(py, &peer)?;
        protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.transport
            .traverse_with(|t| match t {
                Some(t) => visit.call(t),
                None => Ok(()),
            })
            .unwrap_or(Ok(()))?;
        self.last_peer
            .traverse_with(|p| match p {
                Some(p) => visit.call(&p.addr),
                None => Ok(()),
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            drop(self.transport.try_with(py, |t| t.take()));
            drop(self.last_peer.try_with(py, |p| p.take()));
        });
    }
}

impl DatagramReader {
    fn peer_address<'py>(&self, py: Python<'py>, peer: &RawAddr) -> PyResult<Bound<'py, PyAny>> {
        let cached = self.last_peer.with(py, |last| {
            last.as_ref()
                .filter(|l| l.raw.same(peer))
                .map(|l| l.addr.clone_ref(py))
        });
        if let Some(addr) = cached {
            return Ok(addr.into_bound(py).into_any());
        }
        let Some(addr) = peer.to_python(py)? else {
            // Not IPv4/IPv6 after all: no conversion of our own.
            return Err(PyOSError::new_err(
                "interloop: unexpected address family from recvfrom",
            ));
        };
        let old = self.last_peer.with(py, |last| {
            last.replace(LastPeer {
                raw: *peer,
                addr: addr.clone().unbind(),
            })
        });
        drop(old); // outside the borrow: dropping a tuple may free it
        Ok(addr.into_any())
    }
}

/// What a [`DatagramSender`] holds until its transport lets it go.
type SenderState = (Py<PyAny>, Py<PyAny>, Option<Py<PyAny>>);

#[pyclass(frozen, module = "interloop._interloop", name = "DatagramSender")]
pub(crate) struct DatagramSender {
    /// (transport, asyncio's `sendto` for everything but the fast path, the
    /// endpoint's remote address or None)
    state: GilCell<Option<SenderState>>,
    fd: RawFd,
    family: i32,
    /// The socket had a peer when the transport was made (asyncio's
    /// `_extra['peername']`): asyncio then uses `send` and ignores `addr`.
    connected: bool,
}

enum Target {
    /// `send` (connected socket).
    Send,
    /// `sendto` with an address converted here.
    To(RawAddr),
    /// `sock.sendto(data, addr)` through CPython (host names and the like).
    Socket,
}

#[pymethods]
impl DatagramSender {
    #[new]
    fn new(
        transport: Py<PyAny>,
        fd: RawFd,
        family: i32,
        connected: bool,
        address: Option<Py<PyAny>>,
        fallback: Py<PyAny>,
    ) -> Self {
        DatagramSender {
            state: GilCell::new(Some((transport, fallback, address))),
            fd,
            family,
            connected,
        }
    }

    /// `transport.sendto(data, addr=None)`.
    #[pyo3(signature = (data, addr=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let Some((t, fallback, address)) = self.state.with(py, |s| {
            s.as_ref().map(|(t, f, a)| {
                (
                    t.clone_ref(py),
                    f.clone_ref(py),
                    a.as_ref().map(|a| a.clone_ref(py)),
                )
            })
        }) else {
            return Err(PyOSError::new_err("transport is closed"));
        };
        let t = t.bind(py);
        let addr_obj = addr.cloned().unwrap_or_else(|| py.None().into_bound(py));
        let slow = || fallback.bind(py).call1((t, data, &addr_obj)).map(drop);
        // asyncio's preconditions for a direct send; anything else (including its
        // TypeError and ValueError) is asyncio's own `sendto`. Empty datagrams too:
        // 3.12 drops them, 3.13 sends them.
        if !is_bytes_like(data)
            || truthy(t, intern!(py, "_buffer"))?
            || truthy(t, intern!(py, "_conn_lost"))?
        {
            return slow();
        }
        let target = match (&address, addr) {
            // A remote address was given at creation: `addr` must be None or equal.
            (Some(remote), Some(a)) if !(a.is(remote) || a.eq(remote)?) => return slow(),
            (Some(_), _) if self.connected => Target::Send,
            (Some(_), _) => return slow(),
            (None, _) if self.connected => Target::Send,
            (None, None) => return slow(),
            (None, Some(a)) => match RawAddr::from_python(self.family, a) {
                Some(raw) => Target::To(raw),
                None => Target::Socket,
            },
        };
        let Ok(buf) = PyBuffer::<u8>::get(data) else {
            return slow();
        };
        let len = buf.len_bytes();
        if !buf.is_c_contiguous() || len == 0 {
            return slow();
        }
        let n = match target {
            // Safety: the buffer is C-contiguous, `len` bytes long, and kept alive and
            // unmoved by `buf` (a held buffer export) for the duration of the call.
            Target::Send => unsafe { libc::send(self.fd, buf.buf_ptr().cast(), len, 0) },
            Target::To(raw) => {
                let (sa, sa_len) = raw.as_ptr();
                // Safety: as above; `sa` points to `raw`, a valid socket address of
                // `sa_len` bytes on this stack frame.
                unsafe { libc::sendto(self.fd, buf.buf_ptr().cast(), len, 0, sa, sa_len) }
            }
            Target::Socket => {
                drop(buf);
                return self.send_through_socket(t, data, &addr_obj, slow);
            }
        };
        drop(buf);
        if n < 0 {
            let e = errno();
            if would_block(e) {
                return slow();
            }
            let protocol = t.getattr(intern!(py, "_protocol"))?;
            protocol.call_method1(intern!(py, "error_received"), (os_error(e).value(py),))?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.state
            .traverse_with(|s| {
                if let Some((t, f, a)) = s {
                    visit.call(t)?;
                    visit.call(f)?;
                    if let Some(a) = a {
                        visit.call(a)?;
                    }
                }
                Ok(())
            })
            .unwrap_or(Ok(()))
    }

    fn __clear__(&self) {
        clear_cell(&self.state);
    }
}

impl DatagramSender {
    /// asyncio's direct-send branch with `sock.sendto` doing the address conversion.
    fn send_through_socket(
        &self,
        t: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
        slow: impl Fn() -> PyResult<()>,
    ) -> PyResult<()> {
        let py = t.py();
        let sock = t.getattr(intern!(py, "_sock"))?;
        let Err(e) = sock.call_method1(intern!(py, "sendto"), (data, addr)) else {
            return Ok(());
        };
        if e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py) {
            return slow();
        }
        if e.is_instance_of::<PyOSError>(py) {
            let protocol = t.getattr(intern!(py, "_protocol"))?;
            protocol.call_method1(intern!(py, "error_received"), (e.value(py),))?;
            return Ok(());
        }
        fatal(t, e, "Fatal write error on datagram transport")
    }
}
