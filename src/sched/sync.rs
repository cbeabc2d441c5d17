//! The atomics the scheduler's lock-free protocols are written with: std's, or
//! loom's under `cfg(loom)`, so the model tests run the real code (the approach of
//! tokio's `loom` module).
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
