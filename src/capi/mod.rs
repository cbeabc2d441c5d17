//! CPython C-API plumbing shared by every other module, on both sides (the main
//! interpreter and the workers' sub-interpreters). A leaf: it uses nothing of ours.
//!
//! - [`cell::GilCell`]: state guarded by the main GIL (the loop, the transports).
//! - [`entry()`] (in [`mod@entry`]): the trampoline every `extern "C"` entry point runs in, and the
//!   method-table macro that applies it.
//! - Raw-FFI helpers for building return values and reading arguments, and static
//!   method and module definitions. Every `unsafe fn` here requires the current
//!   thread to hold the GIL of the interpreter its objects belong to; pointers
//!   given to them are live objects unless said otherwise.
pub(crate) mod cell;
pub(crate) mod entry;
mod raw;

pub(crate) use entry::{entry, method, py_entry};
pub(crate) use raw::*;
