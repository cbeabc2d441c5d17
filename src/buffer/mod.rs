//! Zero-copy buffers between interpreters.
//!
//! A [`Region`] is a span of bytes that every interpreter of the process may read
//! through a read-only `memoryview` (an instance of the per-interpreter exporter
//! type in [`view`]). Its memory is one of:
//!
//! - **Foreign**: the memory of a Python object of some interpreter (a `bytes`, a
//!   `bytearray`, the array behind a `PickleBuffer`...), held through a `Py_buffer`
//!   acquired in that *owner* interpreter. No byte is copied. The `Py_buffer` holds
//!   a reference to the object of the owner, so it must be released there, with the
//!   owner's GIL: directly when the last `Arc` goes on a thread of the owner, else
//!   through a pending call scheduled in the owner (see [`Owner`]).
//! - **Owned**: a `Box<[u8]>` (a copy): buffers below [`ZERO_COPY_MIN`], data that
//!   is not contiguous, or buffers of interpreters interloop cannot call back into.
//! - **Slice**: part of another region (a received view sent on again).
//!
//! Only interpreters registered as owners can lend memory: the main interpreter
//! (registered on first use) and pool workers (registered while their interpreter
//! lives). When a worker ends, it releases what it can and marks itself gone; a
//! region of it that is still viewed elsewhere then keeps its object alive forever
//! (the object is leaked with its interpreter, never freed under the viewers: the
//! data of buffers this large lives in the process-wide allocator, not in the
//! interpreter's small-object arenas).
mod region;
pub(crate) mod view;

pub(crate) use region::*;
