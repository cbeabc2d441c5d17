//! The numbers the native side and the Python side (`python/interloop/_wire.py`,
//! `_channel.py`) agree on, defined here once and exported as int
//! attributes of `interloop._interloop` and of the worker-side module that stands
//! in for it inside workers (`interp/module.rs`). The channel's own numbers are
//! exported on the channel module (`channel/ffi.rs`).
use crate::sched::{kind, JOB_FLAG_INTERRUPT};
use pyo3::ffi;
use std::ffi::CStr;

/// First byte of an `OK` completion's data that is not a plain pickle: the
/// pickle's buffers wait in the stash (`buffer::stash`) under the 8-byte id that
/// follows. No pickle (0x80) or marshal stream starts with it.
pub(crate) const PAYLOAD_STASHED: u8 = 0;
/// First byte of an `OK` completion whose result is a large `bytes`/`bytearray`:
/// its buffer waits in the stash, for the caller to copy off its loop thread
/// (`bridge::fill`).
pub(crate) const PAYLOAD_FILL: u8 = 1;

/// Every constant exported to Python, by name.
const CONSTANTS: &[(&CStr, i64)] = &[
    (c"COMPLETION_OK", kind::OK as i64),
    (c"COMPLETION_ERR", kind::ERR as i64),
    (c"COMPLETION_REMOTE_ERR", kind::REMOTE_ERR as i64),
    (c"COMPLETION_CANCELLED", kind::CANCELLED as i64),
    (c"COMPLETION_LOST", kind::LOST as i64),
    (c"COMPLETION_FILLED", kind::FILLED as i64),
    (c"WORKER_READY", kind::WORKER_READY as i64),
    (c"WORKER_FAILED", kind::WORKER_FAILED as i64),
    (c"WORKER_EXITED", kind::WORKER_EXITED as i64),
    (c"JOB_FLAG_INTERRUPT", JOB_FLAG_INTERRUPT as i64),
    (c"PAYLOAD_STASHED", PAYLOAD_STASHED as i64),
    (c"PAYLOAD_FILL", PAYLOAD_FILL as i64),
    (c"ZERO_COPY_MIN", crate::buffer::ZERO_COPY_MIN as i64),
];

/// Adds the protocol constants to module `m`; false with a Python exception set
/// on failure.
///
/// # Safety
/// The GIL of `m`'s interpreter is held and `m` is a live module object.
pub(crate) unsafe fn add_constants(m: *mut ffi::PyObject) -> bool {
    // Safety: GIL held and arguments live (this function's contract).
    unsafe { crate::capi::add_int_constants(m, CONSTANTS) }
}
