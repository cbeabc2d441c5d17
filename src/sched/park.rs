//! Waking a parked worker (or the caller's loop): a non-blocking Linux eventfd.
//!
//! A worker parks by blocking in its asyncio loop's `epoll_wait` on this fd, so a
//! worker that waits for work and one that waits for I/O of its running tasks are
//! woken by the same cheap write. No polling, no timers.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    pub(crate) fn new() -> io::Result<Self> {
        // Safety: plain syscall; the returned fd is owned by us from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Safety: `fd` is a fresh, valid descriptor nobody else owns.
        Ok(WakeFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the fd readable. Never blocks (the counter would have to reach 2^64-1).
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // Safety: writes 8 bytes from a live u64 to a valid fd.
        unsafe { libc::write(self.raw(), &one as *const u64 as *const libc::c_void, 8) };
    }

    /// Resets the counter; returns whether it was set.
    pub(crate) fn clear(&self) -> bool {
        let mut v: u64 = 0;
        // Safety: reads 8 bytes into a live u64 from a valid non-blocking fd.
        let n = unsafe { libc::read(self.raw(), &mut v as *mut u64 as *mut libc::c_void, 8) };
        n == 8
    }

    /// Blocks up to `timeout_ms` (-1 = forever) until the fd is readable.
    pub(crate) fn wait(&self, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Safety: one valid pollfd on the stack.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        n > 0
    }
}
