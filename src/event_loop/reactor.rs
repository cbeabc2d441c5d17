use super::core::{closed_error, let_go, IoEntry, LoopCore, PollState, Ready, State, WAKER_TOKEN};
use super::handle::Handle;
use super::reader::{self, NativeReader};
use mio::unix::SourceFd;
use mio::Token;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Side {
    Read,
    Write,
}

/// asyncio's `selectors._fileobj_to_fd`: an int, or an object with `fileno()`.
pub(super) fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd: i64 = if let Ok(fd) = obj.extract::<i64>() {
        fd
    } else {
        match obj.call_method0("fileno") {
            Ok(f) => f.extract::<i64>()?,
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    obj.repr()?
                )))
            }
        }
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd as RawFd)
}

impl LoopCore {
    /// Re-arms `fd` so the reactor reports it again if it is still ready (used by
    /// native readers that stopped before draining their descriptor).
    pub(crate) fn rearm_fd(&self, py: Python<'_>, fd: RawFd) {
        self.state.with(py, |s| {
            if let (Some(i), Some(registry)) =
                (s.io.get(&fd).and_then(IoEntry::interest), &s.registry)
            {
                let _ = registry.reregister(&mut SourceFd(&fd), Token(fd as usize), i);
            }
        })
    }

    /// Installs (or with `None` removes) the reader or writer of `fd`, keeping the
    /// epoll registration in step. Returns the handle it replaced and a file object
    /// for the caller to drop (the cell must not drop one). On a registration error
    /// nothing changes and the error is returned.
    ///
    /// `fileobj` is what the caller named `fd` with (`None` for an int). As asyncio's
    /// selectors re-register under the caller's object when the interest changes and
    /// keep the old key otherwise, it replaces the entry's object only then.
    pub(super) fn set_io(
        &self,
        py: Python<'_>,
        fd: RawFd,
        side: Side,
        handle: Option<Py<Handle>>,
        fileobj: Option<Py<PyAny>>,
    ) -> (PyResult<()>, Option<Py<Handle>>, Option<Py<PyAny>>) {
        self.state.with(py, |s| {
            let Some(registry) = &s.registry else {
                return (Err(closed_error()), handle, fileobj);
            };
            let entry = s.io.entry(fd).or_default();
            let before = entry.interest();
            let slot = match side {
                Side::Read => &mut entry.reader,
                Side::Write => &mut entry.writer,
            };
            let old = std::mem::replace(slot, handle);
            let after = entry.interest();
            let token = Token(fd as usize);
            let res = match (before, after) {
                (None, Some(i)) => match registry.register(&mut SourceFd(&fd), token, i) {
                    // Still registered from a descriptor number that was closed and
                    // reused while registered: take it over.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        registry.reregister(&mut SourceFd(&fd), token, i)
                    }
                    r => r,
                },
                (Some(b), Some(i)) if b != i => registry.reregister(&mut SourceFd(&fd), token, i),
                (Some(_), None) => {
                    // The descriptor may already be closed (epoll forgot it): fine.
                    let _ = registry.deregister(&mut SourceFd(&fd));
                    Ok(())
                }
                _ => Ok(()),
            };
            let done = match res {
                Ok(()) => {
                    let dropped = if after.is_none() {
                        s.io.remove(&fd).and_then(|e| e.fileobj)
                    } else if before != after {
                        let entry = s.io.get_mut(&fd).expect("entry exists");
                        std::mem::replace(&mut entry.fileobj, fileobj)
                    } else {
                        fileobj
                    };
                    (Ok(()), old, dropped)
                }
                Err(e) => {
                    // Undo: put the old handle back, hand the new one to the caller
                    // to drop.
                    let entry = s.io.get_mut(&fd).expect("entry exists");
                    let slot = match side {
                        Side::Read => &mut entry.reader,
                        Side::Write => &mut entry.writer,
                    };
                    let new = std::mem::replace(slot, old);
                    if entry.interest().is_none() {
                        s.io.remove(&fd);
                    }
                    (Err(PyErr::from(e)), new, fileobj)
                }
            };
            self.count_external_io(s);
            done
        })
    }

    /// Recounts `external_io` after the I/O table or the internal descriptor changed.
    pub(super) fn count_external_io(&self, s: &State) {
        let internal = self.internal_fd.load(Ordering::Relaxed);
        let external = s.io.len() - usize::from(internal >= 0 && s.io.contains_key(&internal));
        self.external_io.store(external, Ordering::Relaxed);
    }

    /// The descriptor `obj` names, and `obj` itself unless it is an int. When its
    /// `fileno()` fails or is negative, asyncio's selectors look for the registration
    /// made with this very object (the descriptor it had then): so does this.
    pub(super) fn registered_fd(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
    ) -> PyResult<(RawFd, Option<Py<PyAny>>)> {
        let named = (!obj.is_instance_of::<PyInt>()).then(|| obj.clone().unbind());
        match fileobj_to_fd(obj) {
            Ok(fd) => Ok((fd, named)),
            Err(e) => self
                .state
                .with(py, |s| {
                    s.io.iter()
                        .find(|(_, e)| {
                            e.fileobj
                                .as_ref()
                                .is_some_and(|o| o.as_ptr() == obj.as_ptr())
                        })
                        .map(|(fd, _)| *fd)
                })
                .map(|fd| (fd, named))
                .ok_or(e),
        }
    }

    pub(super) fn add_io<'py>(
        &self,
        slf: &Bound<'py, Self>,
        side: Side,
        fd: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, Handle>> {
        let py = slf.py();
        self.check_closed()?;
        let (fd, fileobj) = self.registered_fd(py, fd)?;
        let native = match side {
            Side::Read => reader::classify(&callback),
            Side::Write => NativeReader::default(),
        };
        let h = Handle::create(
            py,
            callback,
            args,
            None,
            slf.as_any(),
            self.is_debug(),
            None,
        )?;
        h.get().mark_io(native);
        let (res, old, dropped) = self.set_io(py, fd, side, Some(h.clone().unbind()), fileobj);
        drop(dropped);
        res?;
        if let Some(old) = old {
            Handle::cancel_bound(old.bind(py));
            let_go(py, old);
        }
        Ok(h)
    }

    pub(super) fn remove_io(
        &self,
        py: Python<'_>,
        side: Side,
        fd: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let (fd, fileobj) = self.registered_fd(py, fd)?;
        let present = self.state.with(py, |s| {
            s.io.get(&fd).is_some_and(|e| match side {
                Side::Read => e.reader.is_some(),
                Side::Write => e.writer.is_some(),
            })
        });
        if !present {
            return Ok(false);
        }
        let (res, old, dropped) = self.set_io(py, fd, side, None, fileobj);
        drop(dropped);
        res?;
        match old {
            Some(old) => {
                Handle::cancel_bound(old.bind(py));
                let_go(py, old);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Steps 3 and 4a: polls the reactor with the GIL released (for `timeout`,
    /// `None` = until an event), then queues the handles of ready descriptors.
    #[inline(always)]
    pub(super) fn poll_reactor(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<()> {
        if timeout != Some(Duration::ZERO) {
            // A signal that arrived while callbacks ran (and whose Python handler
            // has not run yet, e.g. sent from C code) must not wait for the next
            // wake-up: run the handlers before blocking. Cheap when none is pending.
            py.check_signals()?;
        }
        let res = py.detach(|| {
            let mut guard = self.poll.lock();
            match &mut *guard {
                Some(PollState { poll, events }) => poll.poll(events, timeout),
                None => Ok(()),
            }
        });
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                // A signal: let Python run its handlers now (Ctrl-C raises here).
                py.check_signals()?;
            }
            Err(e) => return Err(e.into()),
        }
        let guard = self.poll.lock();
        let Some(PollState { events, .. }) = &*guard else {
            return Err(closed_error());
        };
        self.state.with(py, |s| {
            let Some(registry) = &s.registry else { return };
            for ev in events.iter() {
                if ev.token() == WAKER_TOKEN {
                    continue;
                }
                let fd = ev.token().0 as RawFd;
                let Some(entry) = s.io.get(&fd) else { continue };
                // Hang-up and error wake both sides, as asyncio's selectors do.
                let err = ev.is_error();
                let readable = ev.is_readable() || ev.is_read_closed() || err;
                let writable = ev.is_writable() || ev.is_write_closed() || err;
                for (hit, h) in [(readable, &entry.reader), (writable, &entry.writer)] {
                    if let (true, Some(h)) = (hit, h) {
                        if !h.get().is_cancelled() {
                            s.ready.push_back(Ready::Native(h.clone_ref(py)));
                        }
                    }
                }
                // mio registers edge-triggered; re-arming reports the descriptor
                // again while it stays ready, which gives asyncio's level-triggered
                // add_reader semantics (a reader that does not drain is called again).
                // A native reader that drains its descriptor (`NativeReader::
                // drains_itself`), alone on it, reads until it is drained or asks for
                // the re-arm itself, saving a system call per event; a hang-up or
                // error is always re-armed so EOF is never missed.
                let self_draining = entry.writer.is_none()
                    && !ev.is_read_closed()
                    && !err
                    && entry.reader.as_ref().is_some_and(|r| r.get().drains());
                if let (false, Some(i)) = (self_draining, entry.interest()) {
                    let _ = registry.reregister(&mut SourceFd(&fd), ev.token(), i);
                }
            }
        });
        drop(guard);
        Ok(())
    }
}
