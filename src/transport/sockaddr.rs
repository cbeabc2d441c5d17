//! IPv4/IPv6 socket addresses between their C form and the Python tuples CPython's
//! `socket` module uses: `(host, port)` for `AF_INET`, `(host, port, flowinfo,
//! scope_id)` for `AF_INET6`, the host as numeric text (`inet_ntop`).
//!
//! Only what can be converted without a name lookup is handled here; anything else
//! (host names, `""`, `"<broadcast>"`, out-of-range numbers, other families) is left
//! to CPython's `socket` methods, so their results and errors stay CPython's.
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString, PyTuple};
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr};

// POSIX, in every libc; the `libc` crate does not declare it.
extern "C" {
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// A socket address in C form, big enough for `sockaddr_in6`.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    pub(crate) fn empty() -> Self {
        // Safety: `sockaddr_storage` is plain old data; all zeroes is a valid value.
        let storage = unsafe { std::mem::zeroed() };
        RawAddr {
            storage,
            len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// For `recvfrom`/`sendto`: the address buffer and its length.
    pub(crate) fn as_mut_ptr(&mut self) -> (*mut libc::sockaddr, *mut libc::socklen_t) {
        (
            (&mut self.storage as *mut libc::sockaddr_storage).cast(),
            &mut self.len,
        )
    }

    pub(crate) fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        (
            (&self.storage as *const libc::sockaddr_storage).cast(),
            self.len,
        )
    }

    fn bytes(&self) -> &[u8] {
        let len = (self.len as usize).min(size_of::<libc::sockaddr_storage>());
        // Safety: `storage` is `len` ≤ its size bytes of plain data, borrowed from self.
        unsafe {
            std::slice::from_raw_parts((&self.storage as *const libc::sockaddr_storage).cast(), len)
        }
    }

    /// Same family, port and address (and flow/scope for IPv6) as `other`.
    pub(crate) fn same(&self, other: &RawAddr) -> bool {
        self.bytes() == other.bytes()
    }

    /// The Python form, for IPv4 and IPv6 only.
    pub(crate) fn to_python<'py>(self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if self.len as usize >= size_of::<libc::sockaddr_in>() => {
                // Safety: the family says the storage holds a `sockaddr_in`, and it
                // is at least that long; `sockaddr_storage` is aligned for it.
                let a = unsafe {
                    &*(&self.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let host = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).to_string();
                Ok(Some((host, u16::from_be(a.sin_port)).into_pyobject(py)?))
            }
            libc::AF_INET6 if self.len as usize >= size_of::<libc::sockaddr_in6>() => {
                // Safety: as above, for `sockaddr_in6`.
                let a = unsafe {
                    &*(&self.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                // inet_ntop's text, which is CPython's (it differs from Rust's
                // `Display` for IPv4-compatible addresses such as `::1.2.3.4`).
                let mut text = [0 as libc::c_char; 64];
                // Safety: `sin6_addr` is a valid `in6_addr`; `text` has room for
                // INET6_ADDRSTRLEN (46) bytes and inet_ntop writes at most its size.
                let p = unsafe {
                    inet_ntop(
                        libc::AF_INET6,
                        (&a.sin6_addr as *const libc::in6_addr).cast(),
                        text.as_mut_ptr(),
                        text.len() as libc::socklen_t,
                    )
                };
                if p.is_null() {
                    return Ok(None);
                }
                // Safety: on success inet_ntop wrote a NUL-terminated string into `text`.
                let host = unsafe { std::ffi::CStr::from_ptr(text.as_ptr()) }.to_string_lossy();
                let t = (
                    host,
                    u16::from_be(a.sin6_port),
                    u32::from_be(a.sin6_flowinfo),
                    a.sin6_scope_id,
                );
                Ok(Some(t.into_pyobject(py)?))
            }
            _ => Ok(None),
        }
    }

    /// The C form of a Python address for a socket of `family`, if it is a literal
    /// address CPython would accept unchanged; `None` leaves it to CPython.
    pub(crate) fn from_python(family: i32, addr: &Bound<'_, PyAny>) -> Option<RawAddr> {
        let t = addr.cast_exact::<PyTuple>().ok()?;
        let host = t.get_item(0).ok()?;
        let host = host.cast_exact::<PyString>().ok()?;
        let host = host.to_str().ok()?;
        let port = t.get_item(1).ok()?;
        let port: u16 = port.cast_exact::<PyInt>().ok()?.extract().ok()?;
        let mut raw = RawAddr::empty();
        match (family, t.len()) {
            (libc::AF_INET, 2) => {
                let ip: Ipv4Addr = host.parse().ok()?;
                // Safety: `sockaddr_storage` is large and aligned enough for a
                // `sockaddr_in`, and all zeroes is a valid one to start from.
                let a = unsafe {
                    &mut *(&mut raw.storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in>()
                };
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = port.to_be();
                a.sin_addr.s_addr = u32::from(ip).to_be();
                raw.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            (libc::AF_INET6, 2..=4) => {
                let ip: Ipv6Addr = host.parse().ok()?;
                let number = |i: usize| -> Option<u32> {
                    match t.get_item(i) {
                        Ok(v) => v.cast_exact::<PyInt>().ok()?.extract().ok(),
                        Err(_) => Some(0),
                    }
                };
                let (flowinfo, scope_id) = (number(2)?, number(3)?);
                if flowinfo > 0xfffff {
                    return None; // CPython raises OverflowError: let it.
                }
                // Safety: as above, for `sockaddr_in6`.
                let a = unsafe {
                    &mut *(&mut raw.storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in6>()
                };
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = port.to_be();
                a.sin6_flowinfo = flowinfo.to_be();
                a.sin6_addr.s6_addr = ip.octets();
                a.sin6_scope_id = scope_id;
                raw.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
            _ => return None,
        }
        Some(raw)
    }
}
